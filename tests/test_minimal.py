"""group_confirmation = "minimal" on Telegram: every reply a mail command can post in a group,
collected from the Bot API fake, names no recipient, subject or word of a body."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.gmail_rig import follow, gmail_config
from tests.google_fake import GoogleFake
from tests.telegram_fake import SentMessage, TelegramFake
from tests.test_telegram import url_in

pytestmark = pytest.mark.telegram

TO, CC, BCC = "carol.secret@hidden-domain.example", "dave@hidden-domain.example", "eve@x.example"
SUBJECT, BODY = "Zanzibar plans", "confidential pineapple"
# Nothing of this may ever reach the group.
SECRETS = ["carol", "secret", "hidden-domain", "dave", "eve@", "x.example", "zanzibar", "zanzi",
           "plans", "confidential", "pineapple", "ourfriend"]  # fmt: skip


def shown(message: SentMessage) -> str:
    return (message.text + json.dumps(message.reply_markup)).lower()


async def test_a_group_under_minimal_hears_no_recipient_subject_or_body(
    telegram_fake: TelegramFake, google_fake: GoogleFake, tmp_path: Path
) -> None:
    from tests.running import running

    alice = telegram_fake.add_user(1001, "Alice")
    bob = telegram_fake.add_user(1002, "Bob")
    group = telegram_fake.group("Team", [alice, bob])
    telegram = {"token": telegram_fake.token, "base_url": f"{telegram_fake.url}/bot"}
    mail = {"confirm": "new_recipients", "undo_seconds": 2, "group_confirmation": "minimal"}
    config = gmail_config(tmp_path, google_fake, telegram=telegram, mail=mail)

    async def in_group(user: object, text: str) -> SentMessage:
        telegram_fake.user_sends(user, group, text)  # type: ignore[arg-type]
        return await telegram_fake.wait_for_message(group.id)

    async def to_alice(needle: str, timeout: float = 10) -> SentMessage:
        return await telegram_fake.wait_for_message(alice.id, lambda m: needle in m.text, timeout)

    async with running(config):
        telegram_fake.user_sends(alice, text="/connect")
        link = await to_alice("10 minutes")
        google_fake.auto_consent = "allow"
        await follow(url_in(link))
        await to_alice("Gmail connected")

        # Bob has no direct chat with the bot: the group hears only how to open one.
        hint = await in_group(bob, f"/mail {TO} {SUBJECT} | {BODY}")
        assert hint.text.startswith("Bob, mail details stay out of this group")
        assert hint.buttons()[0]["url"] == "https://t.me/MailBridgeTestBot?start=start"

        # A new recipient: the preview and its buttons go to Alice's direct chat.
        note = await in_group(alice, f"/mail {TO},cc:{CC},bcc:{BCC} {SUBJECT} | {BODY}")
        assert note.text == "📝 Alice's mail #1 waits for their Send in our direct chat."
        assert note.buttons() == []
        preview = await to_alice("Preview of mail #1")
        assert f"To: {TO}" in preview.text
        assert BODY in preview.text
        telegram_fake.user_presses(alice, preview, "/send 1")
        undo = await to_alice("goes out in 2 s")
        assert [b["callback_data"] for b in undo.buttons()] == ["/undo 1"]
        sent = await telegram_fake.wait_for_message(group.id, timeout=15)
        assert sent.text == "✅ Alice sent a mail (#1)."
        assert "sent from alice@gmail.com" in (await to_alice("✅ Mail #1")).text

        # A known recipient: the undo notice goes to the direct chat; /undo in the group.
        note = await in_group(alice, f"/mail {TO} {SUBJECT} | {BODY}")
        assert note.text == "⏳ Alice's mail #2 goes out in 2 s (/undo stops it)."
        await to_alice("Mail #2 to carol")
        assert (await in_group(alice, "/undo")).text == "↩️ Undone: mail #2 was not sent."

        # Refusals that quote what was typed are told in the direct chat.
        # (Telegram lets a bot post 20 messages a minute in a group: this test keeps under.)
        for bad in [
            f"/mail {TO.replace('.example', '..example')} {SUBJECT} | {BODY}",
            f"/mail {TO},cc:dave@ {SUBJECT} | {BODY}",
        ]:
            note = await in_group(alice, bad)
            assert note.text == "Alice: I could not do that; I told you why in our direct chat."
            assert (await telegram_fake.wait_for_message(alice.id)).text

        # Gmail fails mid-send: "maybe sent" in the direct chat; /retry from the group.
        google_fake.gmail_faults.append(500)
        await in_group(alice, f"/mail {TO} {SUBJECT} | {BODY}")
        maybe = await telegram_fake.wait_for_message(group.id, timeout=15)
        assert maybe.text.startswith("⚠️ Alice's mail #3 may or may not have been sent")
        await to_alice("/retry 3", timeout=15)
        first = await in_group(alice, "/retry 3")  # the outcome may overtake the note
        then = await telegram_fake.wait_for_message(group.id, timeout=15)
        assert {first.text, then.text} == {
            "Alice's mail #3 is being sent again.",
            "✅ Alice sent a mail (#3).",
        }
        await to_alice(f"Sending mail #3 to {TO}")

        # The address book, history and a mail through an alias.
        note = await in_group(alice, f"/alias add zanzi {TO}")
        assert note.text == "Alice: your alias is saved; see our direct chat."
        await to_alice(f"Alias zanzi = {TO}")
        assert (await in_group(alice, "/alias list")).text == "Alice: see our direct chat."
        await to_alice("zanzi =")
        history = await in_group(alice, "/history")
        assert history.text.startswith("Your mail history is private")
        await in_group(alice, f"/mail zanzi {SUBJECT} | {BODY}")
        await telegram_fake.wait_for_message(group.id, lambda m: "sent a mail (#4)" in m.text, 15)
        for text in ("/send 99", "/retry 99"):
            await in_group(alice, text)
        # The last answer in the group: whatever else was going to be said there came before.
        await in_group(alice, "/help")

    group_said = [m for m in telegram_fake.sent if m.chat_id == group.id]
    assert len(group_said) == 19
    leaks = [(m.text, s) for m in group_said for s in SECRETS if s in shown(m)]
    assert leaks == []
    assert len(google_fake.sent) == 3  # #1, #3 after its retry, #4
