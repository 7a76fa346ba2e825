"""The command list is written once: dispatch, /help, Telegram's menu and the Matrix spelling
all come from bot/commands/table.py, so a command added there cannot be missing from any."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.commands.table import MENU, TABLE, localise
from tests.conftest import Bench, make_config, start_bench
from tests.gmail_rig import GmailRig, gmail_config, start_gmail_rig
from tests.google_fake import GoogleFake
from tests.running import bot_config, running
from tests.telegram_fake import TelegramFake

pytestmark = pytest.mark.integration
NAMES = [entry.name for entry in TABLE]


@pytest.fixture
async def rig(tmp_path: Path, google_fake: GoogleFake) -> AsyncIterator[GmailRig]:
    async for r in start_gmail_rig(gmail_config(tmp_path, google_fake), google_fake):
        yield r


@pytest.fixture
async def matrix_bench(tmp_path: Path) -> AsyncIterator[Bench]:
    async for b in start_bench(make_config(tmp_path), platform="matrix"):
        yield b


async def test_every_command_is_dispatched(rig: GmailRig) -> None:
    for name in NAMES:
        start = len(rig.chat.replies)
        await rig.say(f"/{name}")
        said = [s.text for s in rig.chat.replies[start:]]
        assert said, f"/{name} got no answer"
        assert not any(text.startswith("I don't know") for text in said), name


async def test_help_names_every_command_but_start(rig: GmailRig) -> None:
    await rig.say("/help")
    text = rig.chat.replies[-1].text
    missing = [n for n in NAMES if n != "start" and f"/{n}" not in text]
    assert missing == []


async def test_matrix_users_read_every_command_as_they_type_it(matrix_bench: Bench) -> None:
    assert all(localise(f"see /{n}.", "matrix") == f"see !{n}." for n in NAMES)
    await matrix_bench.core.handle(matrix_bench.chat.message("!help"))
    text = matrix_bench.chat.replies[-1].text
    assert "!mail" in text
    assert "/mail" not in text


@pytest.mark.telegram
async def test_telegram_menu_is_the_tables(telegram_fake: TelegramFake, tmp_path: Path) -> None:
    assert {name for name, _ in MENU} <= set(NAMES)
    alice = telegram_fake.add_user(1001, "Alice")
    telegram = {"token": telegram_fake.token, "base_url": f"{telegram_fake.url}/bot"}
    async with running(bot_config(tmp_path, telegram=telegram)):
        telegram_fake.user_starts(alice)  # answered once polling runs: the menu is registered
        await telegram_fake.wait_for_message(alice.id, timeout=15)
        menu = [(c["command"], c["description"]) for c in telegram_fake.commands["default"]]
    assert menu == list(MENU)
