"""The chat adapters on their own, with no server: what they declare and how they translate."""

from __future__ import annotations

from pathlib import Path

from adapters.console import ConsoleAdapter
from adapters.matrix import MatrixAdapter
from adapters.telegram import TelegramAdapter
from bot.chat import Addressed, Attachments, ChatAdapter, DeepLinks, DirectChats
from bot.config import MatrixConfig, TelegramConfig


def test_each_adapter_declares_the_capabilities_the_core_uses(tmp_path: Path) -> None:
    telegram = TelegramAdapter(TelegramConfig(token="1:x"))
    matrix = MatrixAdapter(
        MatrixConfig(homeserver="http://127.0.0.1:1", user_id="@bot:x", store_path=tmp_path),
        admit=lambda _: True,
    )
    console = ConsoleAdapter()
    capabilities = (Addressed, DeepLinks, DirectChats, Attachments)
    has = {
        a.platform: {c.__name__ for c in capabilities if isinstance(a, c)}
        for a in (telegram, matrix, console)
    }
    assert all(isinstance(a, ChatAdapter) for a in (telegram, matrix, console))
    assert has == {
        "telegram": {"Addressed", "DeepLinks", "Attachments"},
        "matrix": {"DirectChats", "Attachments"},
        "console": set(),
    }
