"""Shared fixtures: a core with a real SQLite file and the local outbox backend."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot import config as config_mod
from bot.app import key_file
from bot.core import Core
from bot.local_outbox import LocalOutbox
from bot.store.db import open_database
from bot.store.vault import SecretBox, load_key
from tests.browser import browser  # noqa: F401
from tests.chatkit import ChatKit
from tests.google_fake import google_fake  # noqa: F401
from tests.postgres import pg_url, postgres  # noqa: F401
from tests.synapse import synapse_fixture  # noqa: F401  (the `synapse` fixture)
from tests.telegram_fake import telegram_fake  # noqa: F401


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the PostgreSQL server, so ``-m postgres`` runs that tier."""
    for item in items:
        if "postgres" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


def make_config(tmp_path: Path, **sections: dict[str, Any]) -> config_mod.Config:
    """Build a configuration rooted in ``tmp_path`` from TOML-like dicts."""
    # No preview and no undo window unless a test asks for them: most tests are about sending.
    data: dict[str, Any] = {
        "bot": {"database": "bot.db"},
        "mail": {"confirm": "never", "undo_seconds": 0},
        **sections,
    }
    return config_mod.from_dict(data, base=tmp_path, env={})


@dataclasses.dataclass
class Bench:
    """A running core, its chat and where its mail goes."""

    core: Core
    chat: ChatKit
    outbox_dir: Path

    def eml_files(self) -> list[Path]:
        return sorted(self.outbox_dir.glob("*.eml")) if self.outbox_dir.exists() else []


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[Bench]:
    """A core on the local outbox, chatting through a ChatKit adapter."""
    cfg = make_config(tmp_path)
    async for b in start_bench(cfg):
        yield b


async def start_bench(cfg: config_mod.Config, platform: str = "telegram") -> AsyncIterator[Bench]:
    db = await open_database(cfg.bot.database)
    backend = LocalOutbox(cfg.mail.outbox_dir)
    core = Core(cfg, db, SecretBox(load_key(key_file(cfg), env={})), backend)
    chat = ChatKit(platform)
    core.attach(chat)
    await core.outbox.recover()
    try:
        yield Bench(core, chat, cfg.mail.outbox_dir)
    finally:
        await core.outbox.close()
        await db.close()
