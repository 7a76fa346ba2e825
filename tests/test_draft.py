"""The guided draft on Telegram: /mail alone asks for each part; answers are checked as given."""

from __future__ import annotations

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


async def test_an_abandoned_draft_expires_and_sends_nothing(tmp_path: Path) -> None:
    from tests.test_send_later import Clock, bench

    clock = Clock(1_800_000_000.0)
    async for b in bench(tmp_path, clock):
        say = b.chat.replies
        await b.core.handle(b.chat.message("/mail", direct=False, room="group"))
        assert "Usage: /mail <to> <subject> | <body>" in say[-1].text  # a group: as before
        await b.core.handle(b.chat.message("/mail"))
        assert say[-1].reply.ask
        await b.core.handle(b.chat.message("bob@example.com"))
        assert say[-1].text.startswith("Subject?")
        clock.now += 3599  # an answer within the hour keeps it open
        await b.core.handle(b.chat.message("Plans"))
        assert say[-1].text.startswith("Now the text")
    async for b in bench(tmp_path, clock):  # across a restart, too
        say = b.chat.replies
        clock.now += 3601
        # (a new ChatKit counts its event keys from 1 again: these are new events)
        await b.core.handle(b.chat.message("We meet at noon.", event_key="later1"))
        assert say[-1].text == (
            "Your draft expired after an hour without an answer, so nothing was sent. "
            "/mail starts a new one."
        )
        await b.core.handle(b.chat.message("/send", event_key="later2"))
        assert say[-1].text == "You have no mail to send."
        await b.core.handle(
            b.chat.message("Hello?", event_key="later3")
        )  # no draft: plain text gets the hint
        assert say[-1].text.startswith("I only understand commands.")
        assert b.eml_files() == []
        assert await b.core.outbox.rows.history(b.chat.message("x").user_key, 10) == []
