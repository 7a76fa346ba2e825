"""The guided draft on Matrix, in an encrypted direct chat, across a restart of the bot."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.synapse import Synapse, create_dm, send_text, wait_for_message
from tests.test_draft import MAIL
from tests.test_forward import body_of, mail_in
from tests.test_matrix import _react, from_bot, matrix_bot
from tests.test_telegram import emls

pytestmark = pytest.mark.matrix


async def test_a_guided_draft_in_an_encrypted_chat_survives_a_restart(
    synapse: Synapse, tmp_path: Path
) -> None:
    from tests.running import running

    bot, config = await matrix_bot(synapse, tmp_path, mail=MAIL)
    alice = await synapse.register()
    async with synapse.client(alice, encrypted=True) as a:
        async with running(config):
            room = await create_dm(a, bot.user_id, encrypted=True)
            await wait_for_message(a, room, from_bot(bot, "Hello"), timeout=30)
            mail_cmd = await send_text(a, room, "!mail")
            question = await wait_for_message(a, room, from_bot(bot, "Who gets it?"), 30)
            assert question.in_reply_to == mail_cmd  # the question answers the command
            assert question.encrypted
            # Answered as a reply to the question, with an older client's fallback.
            typed = f"> <{bot.user_id}> Who gets it?\n\nbob@example"
            await send_text(a, room, typed, question.event_id)
            again = await wait_for_message(a, room, from_bot(bot, "Who gets it?"), 30)
            assert "bob@example" in again.body.split("Who gets it?")[0]  # with the reason
            await send_text(a, room, "bob@example.com,bcc:dan@example.com")
            await wait_for_message(a, room, from_bot(bot, "Subject?"), 30)
        async with running(config):  # the draft is stored; the device and its keys too
            await send_text(a, room, "Minutes")
            await wait_for_message(a, room, from_bot(bot, "Now the text"), 30)
            await send_text(a, room, "We agreed on Tuesday.\nDan takes notes.")
            await wait_for_message(a, room, from_bot(bot, "Got it"), 30)
            await send_text(a, room, "!send")
            preview = await wait_for_message(a, room, from_bot(bot, "Preview of mail #1"), 30)
            assert "Bcc: dan@example.com" in preview.body
            assert not emls(tmp_path)
            await _react(a, room, preview.event_id, "✅")
            await wait_for_message(a, room, from_bot(bot, "Mail #1 to"), 30)
    [path] = emls(tmp_path)
    mail = mail_in(path)
    assert (mail["To"], mail["Bcc"], mail["Subject"]) == (
        "bob@example.com",
        "dan@example.com",
        "Minutes",
    )
    assert body_of(mail).strip() == "We agreed on Tuesday.\nDan takes notes."
