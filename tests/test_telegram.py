"""The bot on Telegram, against the Bot API fake over HTTP: chats, groups, limits, restarts."""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.config import Config
from tests.gmail_rig import follow, gmail_config
from tests.google_fake import GoogleFake
from tests.running import bot_config, running
from tests.telegram_fake import SentMessage, TelegramFake

pytestmark = pytest.mark.telegram


def telegram_config(tmp_path: Path, fake: TelegramFake, **sections: dict[str, Any]) -> Config:
    telegram = {"token": fake.token, "base_url": f"{fake.url}/bot", **sections.pop("telegram", {})}
    return bot_config(tmp_path, telegram=telegram, **sections)


def emls(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "outbox").glob("*.eml"))


async def test_private_chat_start_help_and_mail(
    telegram_fake: TelegramFake, tmp_path: Path
) -> None:
    alice = telegram_fake.add_user(1001, "Alice", "alice")
    async with running(telegram_config(tmp_path, telegram_fake)):
        telegram_fake.user_starts(alice)
        hello = await telegram_fake.wait_for_message(alice.id, timeout=15)
        assert hello.text.startswith("Hello Alice (@alice)! mailbridge sends email")
        assert [c["command"] for c in telegram_fake.commands["default"]][:2] == ["mail", "connect"]
        sent = telegram_fake.user_sends(alice, text="/mail bob@example.com Hello | Hi Bob")
        said = await telegram_fake.wait_for_message(alice.id, lambda m: "Mail #1" in m.text)
        assert said.reply_to == sent["message"]["message_id"]
        assert "bob@example.com" in said.text
    assert len(emls(tmp_path)) == 1


async def test_group_commands_addressed_to_us_or_nobody(
    telegram_fake: TelegramFake, tmp_path: Path
) -> None:
    alice = telegram_fake.add_user(1001, "Alice")
    group = telegram_fake.group("Team", [alice])
    async with running(telegram_config(tmp_path, telegram_fake)):
        telegram_fake.user_sends(alice, group, "/mail@OtherBot bob@example.com Not us | x")
        telegram_fake.user_sends(alice, group, "/mail@MailBridgeTestBot bob@example.com Us | x")
        said = await telegram_fake.wait_for_message(group.id, lambda m: "Mail #" in m.text)
        assert "“Us”" in said.text
        telegram_fake.user_sends(alice, group, "/help")
        await telegram_fake.wait_for_message(group.id, lambda m: "/help - this list" in m.text)
    assert len(emls(tmp_path)) == 1
    assert not any("Not us" in m.text for m in telegram_fake.sent)


async def test_markup_characters_come_back_exactly_as_typed(
    telegram_fake: TelegramFake, tmp_path: Path
) -> None:
    alice = telegram_fake.add_user(1001, "Alice")
    async with running(telegram_config(tmp_path, telegram_fake)):
        telegram_fake.user_sends(
            alice, text="/mail first_last@example.com a_b *bold* <b>x</b> & co | body"
        )
        said = await telegram_fake.wait_for_message(alice.id, lambda m: "Mail #1" in m.text)
        assert "first_last@example.com" in said.text
        assert "“a_b *bold* <b>x</b> & co”" in said.text
        assert said.parse_mode == "HTML"
        assert "&lt;b&gt;" in said.html


async def test_429_burst_every_reply_arrives_and_no_chat_gets_more_than_one_a_second(
    telegram_fake: TelegramFake, tmp_path: Path
) -> None:
    users = [telegram_fake.add_user(2000 + n, f"User{n}") for n in range(10)]
    async with running(telegram_config(tmp_path, telegram_fake)):
        telegram_fake.inject_429(count=3, retry_after=2, methods=["sendMessage"])
        for user in users:
            for n in range(5):
                telegram_fake.user_sends(user, text=f"/status {n}")
        for user in users:
            for _ in range(5):
                await telegram_fake.wait_for_message(user.id, timeout=60)
    times: dict[int, list[float]] = defaultdict(list)
    for m in telegram_fake.sent:
        times[m.chat_id].append(m.sent_at)
    assert sum(len(t) for t in times.values()) == 50
    for chat_times in times.values():
        gaps = [b - a for a, b in itertools.pairwise(chat_times)]
        assert min(gaps) >= 0.95, gaps
    refused = [
        c for c in telegram_fake.calls if c.method.lower() == "sendmessage" and c.status == 429
    ]
    assert len(refused) == 3


async def test_webhook_mode_handles_updates_and_refuses_requests_without_the_secret(
    telegram_fake: TelegramFake, tmp_path: Path
) -> None:
    alice = telegram_fake.add_user(1001, "Alice")
    config = telegram_config(
        tmp_path, telegram_fake, telegram={"mode": "webhook", "webhook_secret": "s3cret-Token_1"}
    )
    async with running(config) as base:
        update = telegram_fake.user_sends(alice, text="/mail bob@example.com Hooked | x")
        said = await telegram_fake.wait_for_message(alice.id, lambda m: "Mail #1" in m.text)
        assert "“Hooked”" in said.text
        forged = {**update, "update_id": update["update_id"] + 100}
        forged["message"] = {
            **update["message"],
            "message_id": 999,
            "text": "/mail e@example.com Forged | x",
        }
        async with aiohttp.ClientSession() as http:
            for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": "wrong"}):
                async with http.post(
                    f"{base}/telegram/webhook", json=forged, headers=headers
                ) as r:
                    assert r.status == 403
        # A later update, through Telegram: once it is answered, the forged ones (refused
        # before any handling) have had every chance to be answered too.
        telegram_fake.user_sends(alice, text="/help")
        await telegram_fake.wait_for_message(alice.id, lambda m: "this list" in m.text)
        await telegram_fake.wait_confirmed()
    assert len(emls(tmp_path)) == 1
    texts = [m.text for m in telegram_fake.sent]
    assert len(texts) == 2, texts  # the mail's confirmation and the help: nothing for the forgery
    assert not any("Forged" in t for t in texts)


async def test_a_reply_held_up_by_telegram_holds_up_nobody_else(
    telegram_fake: TelegramFake, tmp_path: Path
) -> None:
    alice = telegram_fake.add_user(1001, "Alice")
    bob = telegram_fake.add_user(1002, "Bob")
    async with running(telegram_config(tmp_path, telegram_fake)):
        telegram_fake.user_sends(bob, text="/status")  # the bot is up and polling
        await telegram_fake.wait_for_message(bob.id)
        telegram_fake.inject_429(count=1, retry_after=6, methods=["sendMessage"])
        telegram_fake.user_sends(alice, text="/help")  # its answer must wait 6 s
        await telegram_fake.wait_for_calls(lambda c: c.status == 429)  # Telegram said "wait"
        telegram_fake.user_sends(bob, text="/help")
        to_bob = await telegram_fake.wait_for_message(bob.id, lambda m: "this list" in m.text)
        to_alice = await telegram_fake.wait_for_message(alice.id, timeout=15)
        assert to_bob.sent_at < to_alice.sent_at  # Bob did not wait for Alice's reply
        assert to_alice.sent_at - to_bob.sent_at > 3
        telegram_fake.user_sends(alice, text="/status")  # a second answer would come before
        await telegram_fake.wait_for_message(alice.id, lambda m: "without Google" in m.text)
    texts = [m.text for m in telegram_fake.sent if m.chat_id == alice.id]
    assert len(texts) == 2, texts  # Alice's answer came once, after the wait


async def test_an_update_delivered_again_after_a_restart_is_handled_once(
    telegram_fake: TelegramFake, tmp_path: Path
) -> None:
    alice = telegram_fake.add_user(1001, "Alice")
    config = telegram_config(tmp_path, telegram_fake)
    async with running(config):
        help_update = telegram_fake.user_sends(alice, text="/help")
        mail_update = telegram_fake.user_sends(alice, text="/mail bob@example.com Once | x")
        await telegram_fake.wait_for_message(alice.id, lambda m: "Mail #1" in m.text)
        await telegram_fake.wait_for_message(alice.id, lambda m: "this list" in m.text)
    # The bot stopped before Telegram heard the confirmation: both come again.
    telegram_fake.redeliver(help_update)
    telegram_fake.redeliver(mail_update)
    async with running(config):
        telegram_fake.user_sends(alice, text="/status")
        await telegram_fake.wait_for_message(alice.id, lambda m: "without Google" in m.text)
        # Confirmed: the bot finished with every update, the redelivered ones included.
        await telegram_fake.wait_confirmed()
    assert len(emls(tmp_path)) == 1
    texts = [m.text for m in telegram_fake.sent if m.chat_id == alice.id]
    assert sum("Mail #1" in t for t in texts) == 1
    assert sum("this list" in t for t in texts) == 1


async def test_the_bot_token_never_reaches_the_logs(
    telegram_fake: TelegramFake, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from bot import logs

    alice = telegram_fake.add_user(1001, "Alice")
    logs.setup("debug")  # as MAILBRIDGE_LOG_LEVEL=debug would
    logging.getLogger().addHandler(caplog.handler)
    try:
        async with running(telegram_config(tmp_path, telegram_fake)):
            telegram_fake.user_starts(alice)
            telegram_fake.user_sends(alice, text="/mail bob@example.com Secret body test | xyzzy")
            await telegram_fake.wait_for_message(alice.id, lambda m: "Mail #1" in m.text)
            telegram_fake.inject_429(count=1, retry_after=1)
            telegram_fake.user_sends(alice, text="/help")
            await telegram_fake.wait_for_message(alice.id, lambda m: "this list" in m.text)
    finally:
        logs.setup("warning")
    text = caplog.text
    assert "DEBUG" in text
    assert "command /mail" in text
    assert telegram_fake.token not in text
    assert telegram_fake.token.split(":")[1] not in text
    assert "xyzzy" not in text  # nor a mail body


def first_button(message: SentMessage) -> dict[str, Any]:
    return message.buttons()[0]


async def test_preview_buttons_work_only_for_their_author(
    telegram_fake: TelegramFake, tmp_path: Path
) -> None:
    alice = telegram_fake.add_user(1001, "Alice")
    mallory = telegram_fake.add_user(1002, "Mallory")
    group = telegram_fake.group("Team", [alice, mallory])
    config = telegram_config(
        tmp_path, telegram_fake, mail={"confirm": "new_recipients", "undo_seconds": 0}
    )
    async with running(config):
        telegram_fake.user_sends(alice, group, "/mail bob@example.com Plan | x")
        preview = await telegram_fake.wait_for_message(group.id, lambda m: "Preview" in m.text)
        assert [b["text"] for b in preview.buttons()] == ["Send", "Cancel"]
        telegram_fake.user_presses(mallory, preview, "/send 1")
        await telegram_fake.wait_for_message(group.id, lambda m: "is not yours" in m.text)
        assert emls(tmp_path) == []
        telegram_fake.user_presses(alice, preview, "/send 1")
        await telegram_fake.wait_for_message(group.id, lambda m: "Mail #1" in m.text)
        assert len(emls(tmp_path)) == 1
        # A second mail to the same address needs no preview.
        telegram_fake.user_sends(alice, group, "/mail bob@example.com Again | y")
        said = await telegram_fake.wait_for_message(group.id, lambda m: "Mail #2" in m.text)
        assert "“Again”" in said.text
        assert len(emls(tmp_path)) == 2


def url_in(message: SentMessage) -> str:
    import re

    for button in message.buttons():
        if button.get("url"):
            return str(button["url"])
    match = re.search(r"http://\S+/connect/[\w-]+", message.text)
    assert match, message.text
    return match.group(0)


async def test_private_chat_connect_consent_and_mail_from_the_connected_address(
    telegram_fake: TelegramFake, google_fake: GoogleFake, tmp_path: Path
) -> None:
    alice = telegram_fake.add_user(1001, "Alice", "alice")
    telegram = {"token": telegram_fake.token, "base_url": f"{telegram_fake.url}/bot"}
    config = gmail_config(tmp_path, google_fake, telegram=telegram)
    async with running(config):
        telegram_fake.user_starts(alice)
        await telegram_fake.wait_for_message(alice.id, lambda m: "/connect" in m.text)
        telegram_fake.user_sends(alice, text="/connect")
        link_message = await telegram_fake.wait_for_message(
            alice.id, lambda m: "10 minutes" in m.text
        )
        assert link_message.no_preview
        google_fake.auto_consent = "allow"
        status, _, page = await follow(url_in(link_message))
        assert status == 200
        assert "Connected as alice@gmail.com" in page
        await telegram_fake.wait_for_message(alice.id, lambda m: "Gmail connected" in m.text)
        telegram_fake.user_sends(alice, text="/mail bob@example.com Hello | Hi Bob")
        said = await telegram_fake.wait_for_message(alice.id, lambda m: "Mail #1" in m.text)
        assert "sent from alice@gmail.com" in said.text
    [mail] = google_fake.sent
    assert (mail.sender, mail.to, mail.subject, mail.text()) == (
        "alice@gmail.com",
        ["bob@example.com"],
        "Hello",
        "Hi Bob",
    )


async def test_group_connect_never_shows_the_consent_link_in_the_group(
    telegram_fake: TelegramFake, google_fake: GoogleFake, tmp_path: Path
) -> None:
    alice = telegram_fake.add_user(1001, "Alice")
    bob = telegram_fake.add_user(1002, "Bob")
    group = telegram_fake.group("Team", [alice, bob])
    telegram = {"token": telegram_fake.token, "base_url": f"{telegram_fake.url}/bot"}
    config = gmail_config(tmp_path, google_fake, telegram=telegram)
    async with running(config) as base:
        # Bob never started the bot: the group gets a deep-link button, not a login link.
        telegram_fake.user_sends(bob, group, "/connect@MailBridgeTestBot")
        hint = await telegram_fake.wait_for_message(group.id)
        assert hint.buttons()[0]["url"] == "https://t.me/MailBridgeTestBot?start=connect"
        # The deep link starts the login in the private chat.
        telegram_fake.user_starts(bob, "connect")
        private = await telegram_fake.wait_for_message(bob.id, lambda m: "10 minutes" in m.text)
        assert url_in(private).startswith(f"{base}/connect/")
        # Alice has a private chat with the bot: her link goes there.
        telegram_fake.user_starts(alice)
        await telegram_fake.wait_for_message(alice.id)
        telegram_fake.user_sends(alice, group, "/connect")
        note = await telegram_fake.wait_for_message(group.id)
        assert note.text == "I sent you a direct message with your login link."
        link = await telegram_fake.wait_for_message(alice.id, lambda m: "10 minutes" in m.text)
        google_fake.auto_consent = "allow"
        await follow(url_in(link))
        await telegram_fake.wait_for_message(alice.id, lambda m: "Gmail connected" in m.text)
        telegram_fake.user_sends(alice, group, "/mail@MailBridgeTestBot bob@example.com Team | hi")
        said = await telegram_fake.wait_for_message(group.id, lambda m: "Mail #1" in m.text)
        assert "sent from alice@gmail.com" in said.text
    group_texts = " ".join(
        m.text + json.dumps(m.reply_markup) for m in telegram_fake.sent if m.chat_id == group.id
    )
    assert "/connect/" not in group_texts
    assert google_fake.base_url not in group_texts
    assert len(google_fake.sent) == 1


async def test_a_7_mb_file_is_attached_and_a_40_mb_one_refused(
    telegram_fake: TelegramFake, google_fake: GoogleFake, tmp_path: Path
) -> None:
    alice = telegram_fake.add_user(1001, "Alice")
    telegram = {"token": telegram_fake.token, "base_url": f"{telegram_fake.url}/bot"}
    config = gmail_config(tmp_path, google_fake, telegram=telegram)
    report = os.urandom(7 * 2**20)
    big = telegram_fake.add_file(os.urandom(40 * 2**20), "film.mp4", "video/mp4")
    small = telegram_fake.add_file(report, "Quarterly report.pdf", "application/pdf")
    async with running(config):
        telegram_fake.user_sends(alice, text="/connect")
        link = await telegram_fake.wait_for_message(alice.id, lambda m: "10 minutes" in m.text)
        google_fake.auto_consent = "allow"
        await follow(url_in(link))
        await telegram_fake.wait_for_message(alice.id, lambda m: "Gmail connected" in m.text)
        upload = telegram_fake.user_sends(alice, text="", document=small)
        telegram_fake.user_sends(
            alice,
            text="/mail bob@example.com Report | attached",
            reply_to=upload["message"]["message_id"],
        )
        said = await telegram_fake.wait_for_message(alice.id, lambda m: "Mail #1" in m.text, 60)
        assert "sent from alice@gmail.com" in said.text
        film = telegram_fake.user_sends(alice, text="", document=big)
        telegram_fake.user_sends(
            alice, text="/mail bob@example.com Film | x", reply_to=film["message"]["message_id"]
        )
        refusal = await telegram_fake.wait_for_message(alice.id, lambda m: "20 MB" in m.text)
        assert refusal.text == (
            "Telegram lets bots download files up to 20 MB; this one is 40.0 MB, "
            "so it cannot be attached. Nothing was sent."
        )
    [mail] = google_fake.sent
    [part] = list(mail.message.iter_attachments())
    assert part.get_filename() == "Quarterly report.pdf"
    assert part.get_content_type() == "application/pdf"
    assert part.get_content() == report
