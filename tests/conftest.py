"""Shared fixtures: a core with a real SQLite file and the local outbox backend."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot import config as config_mod
from bot.app import App
from bot.core import Core
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
    chat = ChatKit(platform)
    async with App.open(cfg, [chat], serve_web=False, env={}) as app:
        yield Bench(app.core, chat, cfg.mail.outbox_dir)
