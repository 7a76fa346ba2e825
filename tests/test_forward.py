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


def test_telegram_translates_the_replied_to_text_and_a_question() -> None:
    from adapters.matrix.translate import strip_fallback
    from adapters.telegram import translate as tg
    from bot.chat import Quoted, Reply
    from tests.test_adapters import GROUP, message, update

    bob = {"id": 1002, "is_bot": False, "first_name": "Bob"}
    original = message("Lunch moved to 1pm", GROUP, **{"from": bob, "message_id": 7})
    got = tg.from_json(
        update(message=message("/mail carol@example.com", GROUP, reply_to_message=original))
    )
    assert got is not None
    assert got.quoted == Quoted("Bob", 1764633600.0, "Lunch moved to 1pm")
    assert got.attachment is None
    # A reply to a file attaches it; its caption is not forwarded.
    file = message(None, GROUP, caption="a note", document={"file_id": "x", "file_unique_id": "y"})
    got = tg.from_json(
        update(message=message("/mail c@example.com", GROUP, reply_to_message=file))
    )
    assert got is not None
    assert got.quoted is None
    assert got.attachment is not None
    assert tg.keyboard(Reply("Subject?", ask=True)).to_dict() == {  # type: ignore[union-attr]
        "force_reply": True,
        "selective": True,
    }
    assert strip_fallback("> <@a:x> hi\n> there\n\n!mail b@example.com") == "!mail b@example.com"
    assert strip_fallback("> a quote I typed") == "> a quote I typed"
