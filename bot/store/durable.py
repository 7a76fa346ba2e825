"""Commits that must survive a power cut, in a database that otherwise runs ``synchronous=NORMAL``.

In WAL mode, NORMAL syncs the log only at checkpoints: a commit survives a crash of the process,
but the last ones may be lost when the machine loses power. That is fine for most writes, not for
the two that decide what a user was told: the accept ("accepted") and the claim ("may be at
Gmail"; losing it would bring the row back as queued and send it again). Those run with FULL, which
syncs the log at their commit.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterable
from typing import Any

import aiosqlite

log = logging.getLogger(__name__)

FULL = "PRAGMA synchronous = FULL"
NORMAL = "PRAGMA synchronous = NORMAL"  # the database's setting (bot.store.db)


class Durable:
    """Run single statements as commits that are durable against power loss."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._lock = asyncio.Lock()  # one switch to FULL and back at a time

    async def fetch(self, sql: str, parameters: Iterable[Any]) -> list[sqlite3.Row]:
        """Run ``sql`` (one statement, committed at once) with FULL; return its rows."""
        async with self._lock:
            # Queued together: the connection's one worker runs them in this order, so the
            # statement runs between the two switches (other statements may run there too,
            # with FULL: more syncs, never fewer), and the trip costs one wait, not three.
            full, rows, normal = await asyncio.gather(
                self._db.execute_fetchall(FULL),
                self._db.execute_fetchall(sql, parameters),
                self._db.execute_fetchall(NORMAL),
                return_exceptions=True,
            )
        if isinstance(rows, BaseException):
            raise rows
        # The statement ran: its caller must hear its rows (retrying it would find it done).
        for switch in (full, normal):
            if isinstance(switch, BaseException):
                log.error("could not switch synchronous for a durable commit: %s", switch)
        return list(rows)
