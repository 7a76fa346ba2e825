"""Readiness: the database answers and every configured chat network has connected."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from bot.chat import ChatAdapter
from bot.store.db import ping
from bot.store.engine import Database

log = logging.getLogger(__name__)
DB_TIMEOUT = 2.0  # seconds the database may take to answer a probe


async def not_ready(db: Database, adapters: Sequence[ChatAdapter]) -> dict[str, str]:
    """Return what is not ready, each with a sentence saying why; empty when all is ready."""
    waiting: dict[str, str] = {}
    try:
        async with asyncio.timeout(DB_TIMEOUT):
            await ping(db)
    except Exception as exc:  # closed, locked, lost: whatever it is, it is not ready
        log.warning("readiness: the database did not answer (%s)", type(exc).__name__)
        waiting["database"] = "the database did not answer"
    for adapter in adapters:
        if not await adapter.connected():
            waiting[adapter.platform] = f"not connected to {adapter.platform}"
    return waiting
