"""The guided draft on Telegram: /mail alone asks for each part; answers are checked as given."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.telegram_fake import SentMessage, TelegramFake
from tests.test_forward import body_of, mail_in
from tests.test_telegram import emls, telegram_config

pytestmark = pytest.mark.telegram

MAIL = {"confirm": "never", "undo_seconds": 0}


def asks(message: SentMessage) -> bool:
    """Whether the message opens the user's reply box (ForceReply)."""
    return (message.reply_markup or {}).get("force_reply") is True


async def test_a_guided_draft_survives_a_restart_and_sends_one_mail_after_its_preview(
    telegram_fake: TelegramFake, tmp_path: Path
) -> None:
    from tests.running import running

    alice = telegram_fake.add_user(1001, "Alice", "alice")
    config = telegram_config(tmp_path, telegram_fake, mail=MAIL)

    async def to_alice(needle: str) -> SentMessage:
        return await telegram_fake.wait_for_message(alice.id, lambda m: needle in m.text, 15)

    async with running(config):
        telegram_fake.user_starts(alice)
        await to_alice("Hello")
        telegram_fake.user_sends(alice, text="/mail")
        question = await to_alice("Who gets it?")
        assert asks(question)
        telegram_fake.user_sends(alice, text="bob@example..com", reply_to=question)
        again = await to_alice("Who gets it?")
        assert asks(again)
        assert "bob@example..com" in again.text  # the reason names what was wrong
        telegram_fake.user_sends(alice, text="bob@example.com, cc:carol@example.com")
        assert asks(await to_alice("Subject?"))
    async with running(config):  # the draft is stored: a restart loses nothing
        telegram_fake.user_sends(alice, text="Trip notes")
        assert asks(await to_alice("Now the text"))
        telegram_fake.user_sends(alice, text="Day one: rain.")
        await to_alice("Got it")
        telegram_fake.user_sends(alice, text="Day two: sun.")
        await telegram_fake.wait_confirmed()  # handled: a later part has no answer of its own
        telegram_fake.user_sends(alice, text="/send")
        preview = await to_alice("Preview of mail #1")
        assert "To: bob@example.com" in preview.text
        assert "Cc: carol@example.com" in preview.text
        assert "Day one: rain.\nDay two: sun." in preview.text
        assert not emls(tmp_path)  # nothing goes before the Send
        telegram_fake.user_presses(alice, preview, "/send 1")
        await to_alice("✅ Mail #1")
        telegram_fake.user_sends(alice, text="/send")  # the draft is gone: nothing to send
        await to_alice("You have no mail to send")
    [path] = emls(tmp_path)
    mail = mail_in(path)
    assert (mail["To"], mail["Cc"], mail["Subject"]) == (
        "bob@example.com",
        "carol@example.com",
        "Trip notes",
    )
    assert body_of(mail).strip() == "Day one: rain.\nDay two: sun."


async def test_an_abandoned_draft_expires_and_sends_nothing(
    telegram_fake: TelegramFake, tmp_path: Path
) -> None:
    from tests.running import running

    alice = telegram_fake.add_user(1001, "Alice", "alice")
    group = telegram_fake.group("Team", [alice])
    mail = {**MAIL, "draft_seconds": 1}
    async with running(telegram_config(tmp_path, telegram_fake, mail=mail)):
        telegram_fake.user_starts(alice)
        await telegram_fake.wait_for_message(alice.id)
        telegram_fake.user_sends(alice, group, "/mail")  # a group gets the usage line
        usage = await telegram_fake.wait_for_message(group.id)
        assert "Usage: /mail <to> <subject> | <body>" in usage.text
        telegram_fake.user_sends(alice, text="/mail")
        await telegram_fake.wait_for_message(alice.id, lambda m: "Who gets it?" in m.text)
        telegram_fake.user_sends(alice, text="bob@example.com")
        await telegram_fake.wait_for_message(alice.id, lambda m: "Subject?" in m.text)
        await asyncio.sleep(1.5)  # past the draft's 1 s
        telegram_fake.user_sends(alice, text="Hello")
        told = await telegram_fake.wait_for_message(alice.id)
        assert told.text.startswith("Your draft expired after")
        assert "nothing was sent" in told.text
        telegram_fake.user_sends(alice, text="/send")
        await telegram_fake.wait_for_message(alice.id, lambda m: "no mail to send" in m.text)
        telegram_fake.user_sends(alice, text="Hello again")  # no draft: plain text gets the hint
        await telegram_fake.wait_for_message(alice.id, lambda m: "only understand" in m.text)
    assert not emls(tmp_path)
