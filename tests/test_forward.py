"""Forwarding a chat message by mail: a /mail that replies to someone's text message."""

from __future__ import annotations

import json
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.telegram_fake import TelegramFake
from tests.test_telegram import emls, telegram_config

pytestmark = pytest.mark.telegram

NOTE = "Bring the blue folder to Friday's review, please.\nIt has the signed copies."


def mail_in(path: Path) -> EmailMessage:
    message = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def body_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


async def test_a_reply_with_mail_in_a_group_forwards_the_text_and_the_group_hears_no_detail(
    telegram_fake: TelegramFake, tmp_path: Path
) -> None:
    from tests.running import running

    alice = telegram_fake.add_user(1001, "Alice", "alice")
    bob = telegram_fake.add_user(1002, "Bob", "bob")
    group = telegram_fake.group("Team", [alice, bob])
    mail = {"confirm": "never", "undo_seconds": 0, "group_confirmation": "minimal"}
    async with running(telegram_config(tmp_path, telegram_fake, mail=mail)):
        telegram_fake.user_starts(alice)
        await telegram_fake.wait_for_message(alice.id)
        # Bob's message is not for the bot (privacy mode): it arrives only inside Alice's reply.
        note = telegram_fake.user_sends(bob, group, NOTE)
        assert "update_id" not in note
        sent_at = note["message"]["date"]
        telegram_fake.user_sends(
            alice, group, "/mail carol@example.com", reply_to=note["message"]["message_id"]
        )
        told = await telegram_fake.wait_for_message(alice.id, lambda m: "Mail #1" in m.text)
        assert "carol@example.com" in told.text
        heard = await telegram_fake.wait_for_message(group.id, timeout=15)
        # Alice writes her own words first, the forwarded text follows.
        telegram_fake.user_sends(
            alice,
            group,
            "/mail carol@example.com Folder | See below.",
            reply_to=note["message"]["message_id"],
        )
        await telegram_fake.wait_for_message(alice.id, lambda m: "Mail #2" in m.text)
    group_said = " ".join(
        m.text + json.dumps(m.reply_markup) for m in telegram_fake.sent if m.chat_id == group.id
    ).lower()
    assert heard.text.startswith("✅ Alice")
    for secret in ("carol", "folder", "blue", "review", "signed"):
        assert secret not in group_said
    first, second = (mail_in(p) for p in emls(tmp_path))
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(sent_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    quoted = f"Bob (@bob) wrote on {when}:\n> {NOTE.splitlines()[0]}\n> {NOTE.splitlines()[1]}"
    assert first["Subject"] == "Bring the blue folder to Friday's review, please."
    assert first["To"] == "carol@example.com"
    assert body_of(first).strip() == quoted
    assert second["Subject"] == "Folder"
    assert body_of(second).strip() == f"See below.\n\n{quoted}"


def test_a_long_first_line_is_cut_at_a_word_for_the_subject() -> None:
    from bot.chat import Quoted
    from bot.forward import default_subject, with_forward
    from bot.grammar import parse_mail

    line = "Minutes of the planning meeting about the spring conference budget and venues"
    quoted = Quoted("Bob", 0.0, f"\n{line}\nsecond line")
    request = default_subject(parse_mail(with_forward("a@example.com", quoted)), quoted)
    assert request.subject == "Minutes of the planning meeting about the spring conference…"
    assert len(request.subject) <= 61
    assert request.body.startswith("Bob wrote on 1970-01-01 00:00 UTC:\n>\n> Minutes")
