"""Forwarding on Matrix: a !mail replying to another member's message in an encrypted room."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.synapse import Synapse, create_dm, join_room, send_text, wait_for_message
from tests.test_forward import body_of, mail_in
from tests.test_matrix import from_bot, matrix_bot
from tests.test_telegram import emls

pytestmark = pytest.mark.matrix


async def test_a_reply_in_an_encrypted_room_forwards_the_decrypted_text(
    synapse: Synapse, tmp_path: Path
) -> None:
    from tests.running import running

    mail = {"confirm": "never", "undo_seconds": 0}
    bot, config = await matrix_bot(synapse, tmp_path, mail=mail)
    alice, carol = await synapse.register(), await synapse.register()
    async with (
        running(config),
        synapse.client(alice, encrypted=True) as a,
        synapse.client(carol, encrypted=True) as c,
    ):
        room = await create_dm(a, bot.user_id, encrypted=True)  # a room, then invite more
        await wait_for_message(a, room, from_bot(bot, "Hello"), timeout=30)
        await a.room_invite(room, carol.user_id)
        await join_room(c, room)
        note = await send_text(c, room, "The venue moved to Hall 4.\nDoors open at 9.")
        await wait_for_message(a, room, lambda m: m.body.startswith("The venue"), timeout=30)
        # As older clients write a reply: the quoted target first, then an empty line.
        typed = f"> <{carol.user_id}> The venue moved to Hall 4.\n\n!mail bob@example.com"
        await send_text(a, room, typed, note)
        said = await wait_for_message(c, room, from_bot(bot, "Mail #1"), timeout=30)
        assert "bob@example.com" in said.body  # full confirmations: the room hears it all
        assert said.encrypted
    [path] = emls(tmp_path)
    mail_ = mail_in(path)
    assert mail_["Subject"] == "The venue moved to Hall 4."
    assert re.fullmatch(
        rf"{re.escape(carol.user_id.split(':')[0].lstrip('@'))}.* wrote on "
        r"\d{4}-\d\d-\d\d \d\d:\d\d UTC:\n> The venue moved to Hall 4\.\n> Doors open at 9\.",
        body_of(mail_).strip(),
    ), body_of(mail_)
