"""One identity on both networks: a Telegram user (Bot API fake) and a Matrix user (real
Synapse) join with /link and share one Gmail link, address book, history and send limits."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from bot.config import Config
from tests.gmail_rig import follow, gmail_config
from tests.google_fake import GoogleFake
from tests.running import running
from tests.synapse import ReceivedMessage, RegisteredUser, Synapse, create_dm, send_text
from tests.synapse import wait_for_message as matrix_wait
from tests.telegram_fake import FakeUser, TelegramFake

pytestmark = [pytest.mark.matrix, pytest.mark.telegram]
CODE = re.compile(r"\b[A-HJ-NP-Z2-9]{4}-[A-HJ-NP-Z2-9]{4}\b")


def both_networks(
    tmp_path: Path,
    synapse: Synapse,
    bot: RegisteredUser,
    tg: TelegramFake,
    fake: GoogleFake,
    **bot_keys: Any,
) -> Config:
    return gmail_config(
        tmp_path,
        fake,
        bot={"database": "bot.db", **bot_keys},
        telegram={"token": tg.token, "base_url": f"{tg.url}/bot"},
        matrix={
            "homeserver": synapse.url,
            "user_id": bot.user_id,
            "password": bot.password,
            "store_path": "matrix-store",
        },
    )


def from_bot(bot: RegisteredUser, text: str) -> Any:
    def match(m: ReceivedMessage) -> bool:
        return m.sender == bot.user_id and text in m.body

    return match


async def telegram_code(tg: TelegramFake, user: FakeUser) -> str:
    tg.user_sends(user, text="/link")
    said = await tg.wait_for_message(user.id, lambda m: "linking code" in m.text, timeout=30)
    match = CODE.search(said.text)
    assert match, said.text
    return match.group(0)


async def connect_on_telegram(tg: TelegramFake, fake: GoogleFake, user: FakeUser) -> None:
    tg.user_sends(user, text="/connect")
    said = await tg.wait_for_message(user.id, lambda m: "10 minutes" in m.text, timeout=30)
    link = re.search(r"http://\S+/connect/[\w-]+", said.text)
    assert link, said.text
    fake.auto_consent = "allow"
    status, _, _ = await follow(link.group(0))
    assert status == 200
    await tg.wait_for_message(user.id, lambda m: "Gmail connected" in m.text, timeout=30)


async def test_telegram_and_matrix_join_and_share_one_identity(
    synapse: Synapse, telegram_fake: TelegramFake, google_fake: GoogleFake, tmp_path: Path
) -> None:
    bot, mx_user, eve = [await synapse.register() for _ in range(3)]
    tg = telegram_fake
    alice = tg.add_user(1001, "Alice", "alice")
    group = tg.group("Team", [alice])
    config = both_networks(tmp_path, synapse, bot, tg, google_fake, sends_per_day=3)
    async with (
        synapse.client(mx_user, encrypted=True) as mx,
        synapse.client(eve) as ev,
    ):
        async with running(config):
            tg.user_starts(alice)
            await tg.wait_for_message(alice.id, lambda m: "Hello" in m.text, timeout=30)
            await connect_on_telegram(tg, google_fake, alice)
            room = await create_dm(mx, bot.user_id, encrypted=True)
            await matrix_wait(mx, room, from_bot(bot, "Hello"), timeout=60)
            eve_room = await create_dm(ev, bot.user_id, encrypted=False)
            await matrix_wait(ev, eve_room, from_bot(bot, "Hello"), timeout=60)

            # In a group /link shows no code; a code typed in a group is void.
            tg.user_sends(alice, group, "/link")
            said = await tg.wait_for_message(group.id, lambda m: "direct chat" in m.text)
            assert not CODE.search(said.text)
            seen = await telegram_code(tg, alice)
            tg.user_sends(alice, group, f"/link {seen}")
            await tg.wait_for_message(group.id, lambda m: "no longer works" in m.text)
            await send_text(mx, room, f"!link {seen}")
            await matrix_wait(mx, room, from_bot(bot, "does not work"), timeout=30)

            # The confirmation names both accounts; Join joins them.
            code = await telegram_code(tg, alice)
            await send_text(mx, room, f"!link {code}")
            ask = await matrix_wait(mx, room, from_bot(bot, "Join "), timeout=30)
            assert "Telegram user Alice (@alice) (1001)" in ask.body
            assert f"({mx_user.user_id})" in ask.body
            await send_text(mx, room, "!link join")
            await matrix_wait(mx, room, from_bot(bot, "Joined"), timeout=30)
            told = await tg.wait_for_message(alice.id, lambda m: "Joined" in m.text)
            assert "alice@gmail.com" in told.text
            # Used twice: refused, and Eve joins nothing.
            await send_text(ev, eve_room, f"!link {code}")
            await matrix_wait(ev, eve_room, from_bot(bot, "does not work"), timeout=30)

        async with running(config):  # joined survives a restart
            await send_text(mx, room, "!alias add bob bob@example.com")
            await matrix_wait(mx, room, from_bot(bot, "Alias bob"), timeout=30)
            tg.user_sends(alice, text="/mail bob From Telegram | hi")
            said = await tg.wait_for_message(alice.id, lambda m: "Mail #1" in m.text, timeout=30)
            assert "sent from alice@gmail.com" in said.text
            await send_text(mx, room, "!mail carol@example.com From Matrix | hello")
            said_mx = await matrix_wait(mx, room, from_bot(bot, "Mail #2"), timeout=30)
            assert "sent from alice@gmail.com" in said_mx.body  # told where it was sent from

            tg.user_sends(alice, text="/history")
            history = await tg.wait_for_message(alice.id, lambda m: "Your last" in m.text)
            assert "“From Matrix” (from Matrix)" in history.text
            assert "#1" in history.text
            await send_text(mx, room, "!history")
            history_mx = await matrix_wait(mx, room, from_bot(bot, "Your last"), timeout=30)
            assert "#2" in history_mx.body
            assert "“From Telegram” (from Telegram)" in history_mx.body
            await send_text(ev, eve_room, "!history")
            await matrix_wait(ev, eve_room, from_bot(bot, "not sent any"), timeout=30)

            # Three a day for both together: the third goes, the fourth is refused.
            tg.user_sends(alice, text="/mail bob Third | 3")
            await tg.wait_for_message(alice.id, lambda m: "Mail #3" in m.text, timeout=30)
            await send_text(mx, room, "!mail bob Fourth | 4")
            await matrix_wait(mx, room, from_bot(bot, "3 mails in the last 24 hours"), timeout=30)

            await send_text(mx, room, "!unlink")
            apart = await matrix_wait(mx, room, from_bot(bot, "Separated"), timeout=30)
            assert "stays with Telegram user 1001" in apart.body
            await send_text(mx, room, "!status")
            await matrix_wait(mx, room, from_bot(bot, "No Gmail is connected"), timeout=30)
    assert [(m.sender, m.subject) for m in google_fake.sent] == [
        ("alice@gmail.com", "From Telegram"),
        ("alice@gmail.com", "From Matrix"),
        ("alice@gmail.com", "Third"),
    ]
    assert google_fake.sent[0].to == ["bob@example.com"]


async def test_an_expired_code_joins_nothing(
    synapse: Synapse, telegram_fake: TelegramFake, google_fake: GoogleFake, tmp_path: Path
) -> None:
    bot, mx_user = await synapse.register(), await synapse.register()
    alice = telegram_fake.add_user(1001, "Alice", "alice")
    config = both_networks(tmp_path, synapse, bot, telegram_fake, google_fake, link_code_seconds=1)
    async with running(config), synapse.client(mx_user) as mx:
        room = await create_dm(mx, bot.user_id, encrypted=False)
        await matrix_wait(mx, room, from_bot(bot, "Hello"), timeout=60)
        code = await telegram_code(telegram_fake, alice)
        await asyncio.sleep(1.5)  # the code's whole life (1 s) has passed
        await send_text(mx, room, f"!link {code}")
        await matrix_wait(mx, room, from_bot(bot, "does not work"), timeout=30)
        await send_text(mx, room, "!unlink")
        await matrix_wait(mx, room, from_bot(bot, "not joined"), timeout=30)
