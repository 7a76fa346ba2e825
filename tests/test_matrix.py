"""The bot on a real Synapse: invites, direct chats (encrypted or not), rooms, restarts."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from nio import AsyncClient

from bot.config import Config
from tests.gmail_rig import follow, gmail_config
from tests.google_fake import GoogleFake
from tests.running import bot_config, running
from tests.synapse import (
    ReceivedMessage,
    RegisteredUser,
    Synapse,
    create_dm,
    join_room,
    send_text,
    wait_for_invite,
    wait_for_message,
)

pytestmark = pytest.mark.matrix


async def matrix_bot(
    synapse: Synapse, tmp_path: Path, **sections: dict[str, Any]
) -> tuple[RegisteredUser, Config]:
    """A fresh bot account and a configuration for it (outbox backend unless told)."""
    bot = await synapse.register()
    config = bot_config(
        tmp_path,
        matrix={
            "homeserver": synapse.url,
            "user_id": bot.user_id,
            "password": bot.password,
            "store_path": "matrix-store",
        },
        **sections,
    )
    return bot, config


def from_bot(bot: RegisteredUser, text: str = "") -> Any:
    def match(m: ReceivedMessage) -> bool:
        return m.sender == bot.user_id and text in m.body

    return match


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain"])
async def test_direct_chat_invite_greeting_and_mail(
    synapse: Synapse, tmp_path: Path, encrypted: bool
) -> None:
    bot, config = await matrix_bot(synapse, tmp_path)
    alice = await synapse.register()
    async with running(config), synapse.client(alice, encrypted=True) as client:
        room = await create_dm(client, bot.user_id, encrypted=encrypted)
        greeting = await wait_for_message(client, room, from_bot(bot, "Hello"), timeout=30)
        assert greeting.msgtype == "m.notice"
        assert greeting.encrypted is encrypted
        assert "!mail <to> <subject> | <body>" in greeting.body  # Element users type !
        command = await send_text(client, room, "!mail bob@example.com Hello | Hi Bob")
        said = await wait_for_message(client, room, from_bot(bot, "Mail #1"), timeout=30)
        assert "bob@example.com" in said.body
        assert said.encrypted is encrypted
        assert said.msgtype == "m.notice"
        assert said.in_reply_to == command
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1


async def test_invite_from_outside_the_allow_list_is_declined(
    synapse: Synapse, tmp_path: Path
) -> None:
    bot, config = await matrix_bot(
        synapse, tmp_path, bot={"database": "bot.db", "allowed_users": ["matrix:@nobody:*"]}
    )
    stranger = await synapse.register()
    async with running(config), synapse.client(stranger) as client:
        room = await create_dm(client, bot.user_id, encrypted=False)
        await _until_left(client, room, bot.user_id)


async def _until_left(client: AsyncClient, room_id: str, user_id: str) -> None:
    from tests.synapse import sync_until

    def gone(c: AsyncClient) -> bool:
        room = c.rooms.get(room_id)
        return room is not None and user_id not in room.users

    await sync_until(client, gone, timeout=30)


async def test_group_room_mail_confirms_in_the_room(synapse: Synapse, tmp_path: Path) -> None:
    bot, config = await matrix_bot(synapse, tmp_path)
    alice, carol = await synapse.register(), await synapse.register()
    async with running(config), synapse.client(alice) as a, synapse.client(carol) as c:
        room = await create_dm(a, bot.user_id, encrypted=False)  # a room, then invite more
        await wait_for_message(a, room, from_bot(bot, "Hello"), timeout=30)
        await a.room_invite(room, carol.user_id)
        await join_room(c, room)
        await send_text(a, room, "!mail bob@example.com Team lunch | 12:30?")
        said = await wait_for_message(c, room, from_bot(bot, "Mail #1"), timeout=30)
        assert "“Team lunch”" in said.body


async def test_restart_answers_missed_commands_once_and_old_ones_never(
    synapse: Synapse, tmp_path: Path
) -> None:
    bot, config = await matrix_bot(synapse, tmp_path)
    alice = await synapse.register()
    async with synapse.client(alice) as client:
        async with running(config):
            room = await create_dm(client, bot.user_id, encrypted=False)
            await wait_for_message(client, room, from_bot(bot, "Hello"), timeout=30)
            await send_text(client, room, "!mail bob@example.com Before | x")
            await wait_for_message(client, room, from_bot(bot, "“Before”"), timeout=30)
        await send_text(client, room, "!mail bob@example.com While down | x")
        async with running(config):
            said = await wait_for_message(client, room, from_bot(bot, "Mail #"), timeout=30)
            assert "“While down”" in said.body
            await send_text(client, room, "!help")
            await wait_for_message(client, room, from_bot(bot, "!help - this list"), timeout=30)
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 2


async def test_preview_is_answered_by_reaction_and_only_by_its_author(
    synapse: Synapse, tmp_path: Path
) -> None:
    bot, config = await matrix_bot(
        synapse, tmp_path, mail={"confirm": "new_recipients", "undo_seconds": 0}
    )
    alice, carol = await synapse.register(), await synapse.register()
    async with running(config), synapse.client(alice) as a, synapse.client(carol) as c:
        room = await create_dm(a, bot.user_id, encrypted=False)
        await wait_for_message(a, room, from_bot(bot, "Hello"), timeout=30)
        await a.room_invite(room, carol.user_id)
        await join_room(c, room)
        await send_text(a, room, "!mail bob@example.com Plan | x")
        preview = await wait_for_message(a, room, from_bot(bot, "Preview of mail #1"), timeout=30)
        assert "react with ✅ Send or ❌ Cancel" in preview.body
        assert "!send" in preview.body  # Element users are told the ! spelling
        await _react(c, room, preview.event_id, "✅")  # not Carol's mail
        refusal = await wait_for_message(a, room, from_bot(bot, "is not yours"), timeout=30)
        assert "Mail #1 is not yours" in refusal.body
        assert not list((tmp_path / "outbox").glob("*.eml"))
        await _react(a, room, preview.event_id, "✅")
        await wait_for_message(a, room, from_bot(bot, "Mail #1 to"), timeout=30)
        assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1
        await send_text(a, room, "!mail bob@example.com Again | y")  # Bob is known now
        said = await wait_for_message(a, room, from_bot(bot, "Mail #2"), timeout=30)
        assert "“Again”" in said.body


async def _react(client: AsyncClient, room: str, event_id: str, key: str) -> None:
    content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}
    response = await client.room_send(room, "m.reaction", content, ignore_unverified_devices=True)
    assert hasattr(response, "event_id"), response


def link_in(message: ReceivedMessage) -> str:
    match = re.search(r"http://\S+/connect/[\w-]+", message.body)
    assert match, message.body
    return match.group(0)


async def gmail_bot(
    synapse: Synapse, tmp_path: Path, fake: GoogleFake
) -> tuple[RegisteredUser, Config]:
    bot = await synapse.register()
    matrix = {
        "homeserver": synapse.url,
        "user_id": bot.user_id,
        "password": bot.password,
        "store_path": "matrix-store",
    }
    return bot, gmail_config(tmp_path, fake, matrix=matrix)


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain"])
async def test_connect_and_mail_in_a_direct_chat(
    synapse: Synapse, tmp_path: Path, google_fake: GoogleFake, encrypted: bool
) -> None:
    bot, config = await gmail_bot(synapse, tmp_path, google_fake)
    alice = await synapse.register()
    async with running(config), synapse.client(alice, encrypted=True) as client:
        room = await create_dm(client, bot.user_id, encrypted=encrypted)
        said = [await wait_for_message(client, room, from_bot(bot, "Hello"), timeout=30)]
        await send_text(client, room, "!connect")
        said.append(await wait_for_message(client, room, from_bot(bot, "10 minutes"), timeout=30))
        google_fake.auto_consent = "allow"
        status, _, page = await follow(link_in(said[-1]))
        assert status == 200
        assert "Connected as alice@gmail.com" in page
        said.append(await wait_for_message(client, room, from_bot(bot, "connected"), timeout=30))
        assert "!mail" in said[-1].body
        await send_text(client, room, "!mail bob@example.com Hello | Hi Bob")
        said.append(await wait_for_message(client, room, from_bot(bot, "Mail #1"), timeout=30))
        assert "sent from alice@gmail.com" in said[-1].body
    assert all(m.encrypted is encrypted for m in said)
    assert all(m.msgtype == "m.notice" for m in said)
    [mail] = google_fake.sent
    assert (mail.sender, mail.to, mail.subject, mail.text()) == (
        "alice@gmail.com",
        ["bob@example.com"],
        "Hello",
        "Hi Bob",
    )


async def test_connect_in_a_shared_room_sends_the_link_only_in_a_direct_chat(
    synapse: Synapse, tmp_path: Path, google_fake: GoogleFake
) -> None:
    bot, config = await gmail_bot(synapse, tmp_path, google_fake)
    alice, carol = await synapse.register(), await synapse.register()
    async with (
        running(config),
        synapse.client(alice, encrypted=True) as a,
        synapse.client(carol) as c,
    ):
        response = await a.room_create(name="Team", invite=[bot.user_id, carol.user_id])
        room = response.room_id
        await join_room(c, room)
        await wait_for_message(a, room, from_bot(bot, "Hello"), timeout=30)
        await send_text(a, room, "!connect")
        note = await wait_for_message(c, room, from_bot(bot, "direct message"), timeout=30)
        assert note.body == "I sent you a direct message with your login link."
        direct = await wait_for_invite(a, bot.user_id, timeout=30)
        assert direct != room
        await join_room(a, direct)
        link = await wait_for_message(a, direct, from_bot(bot, "10 minutes"), timeout=30)
        assert link.encrypted  # the new direct chat is encrypted
        google_fake.auto_consent = "allow"
        await follow(link_in(link))
        await wait_for_message(a, direct, from_bot(bot, "connected"), timeout=30)
        await send_text(a, room, "!mail bob@example.com Team lunch | 12:30?")
        said = await wait_for_message(c, room, from_bot(bot, "Mail #1"), timeout=30)
        assert "sent from alice@gmail.com" in said.body
        # Nothing in the shared room ever carried the login link.
        await send_text(c, room, "!help")
        await wait_for_message(c, room, from_bot(bot, "this list"), timeout=30)
        history = await c.room_messages(room, start=c.next_batch, limit=200)
        everything = [json.dumps(e.source) for e in history.chunk]
    assert len(everything) > 5
    assert not any("/connect/" in event for event in everything)
    assert len(google_fake.sent) == 1


async def test_a_file_in_an_encrypted_room_is_decrypted_and_attached(
    synapse: Synapse, tmp_path: Path, google_fake: GoogleFake
) -> None:
    bot, config = await gmail_bot(synapse, tmp_path, google_fake)
    alice = await synapse.register()
    data = os.urandom(300_000)
    async with running(config), synapse.client(alice, encrypted=True) as client:
        room = await create_dm(client, bot.user_id, encrypted=True)
        await wait_for_message(client, room, from_bot(bot, "Hello"), timeout=30)
        await send_text(client, room, "!connect")
        link = await wait_for_message(client, room, from_bot(bot, "10 minutes"), timeout=30)
        google_fake.auto_consent = "allow"
        await follow(link_in(link))
        await wait_for_message(client, room, from_bot(bot, "connected"), timeout=30)
        uploaded, keys = await client.upload(
            io.BytesIO(data),
            content_type="text/csv",
            filename="figures.csv",
            encrypt=True,
            filesize=len(data),
        )
        assert keys is not None
        file_info = {**keys, "url": uploaded.content_uri}
        content = {
            "msgtype": "m.file",
            "body": "figures.csv",
            "filename": "figures.csv",
            "info": {"mimetype": "text/csv", "size": len(data)},
            "file": file_info,
        }
        sent = await client.room_send(
            room, "m.room.message", content, ignore_unverified_devices=True
        )
        await send_text(client, room, "!mail bob@example.com Figures | attached", sent.event_id)
        said = await wait_for_message(client, room, from_bot(bot, "Mail #1"), timeout=30)
        assert "sent from alice@gmail.com" in said.body
    [mail] = google_fake.sent
    [part] = list(mail.message.iter_attachments())
    assert part.get_filename() == "figures.csv"
    assert part.get_content_type() == "text/csv"
    assert part.get_payload(decode=True) == data


async def test_minimal_group_confirmations_keep_mail_details_in_the_direct_chat(
    synapse: Synapse, tmp_path: Path
) -> None:
    from tests.synapse import _inbox

    mail = {"confirm": "new_recipients", "undo_seconds": 0, "group_confirmation": "minimal"}
    bot, config = await matrix_bot(synapse, tmp_path, mail=mail)
    alice, carol = await synapse.register(), await synapse.register()
    async with running(config), synapse.client(alice) as a, synapse.client(carol) as c:
        direct = await create_dm(a, bot.user_id, encrypted=False)
        await wait_for_message(a, direct, from_bot(bot, "Hello"), timeout=30)
        group = await create_dm(a, bot.user_id, encrypted=False)  # a room, then invite more
        await wait_for_message(a, group, from_bot(bot, "Hello"), timeout=30)
        await a.room_invite(group, carol.user_id)
        await join_room(c, group)
        heard = []
        await send_text(a, group, "!mail zed@hidden.example Zanzibar | pineapple")
        heard.append(await wait_for_message(c, group, from_bot(bot, "mail #1"), timeout=30))
        assert heard[-1].body.endswith("'s mail #1 waits for their Send in our direct chat.")
        preview = await wait_for_message(a, direct, from_bot(bot, "Preview of mail #1"), 30)
        assert "pineapple" in preview.body
        await _react(a, direct, preview.event_id, "✅")  # the Send button, in the direct chat
        said = await wait_for_message(a, direct, from_bot(bot, "Mail #1 to zed"), timeout=30)
        assert "“Zanzibar”" in said.body
        heard.append(await wait_for_message(c, group, from_bot(bot, "sent a mail"), timeout=30))
        await send_text(a, group, "!mail zed@hidden_example Zanzibar | pineapple")
        heard.append(await wait_for_message(c, group, from_bot(bot, "could not"), timeout=30))
        await wait_for_message(a, direct, from_bot(bot, "zed@hidden_example"), timeout=30)
        await send_text(a, group, "!help")  # the last answer: anything else came before
        answer = await wait_for_message(
            c, group, lambda m: m.sender == bot.user_id and m.body.startswith("mailbridge sends")
        )
        heard += [m for m in _inbox(c).messages if m.room_id == group]
    greeting = "Hello"  # said before Carol joined, when the room was a direct chat
    bodies = [m.body.lower() for m in heard if m.sender == bot.user_id and greeting not in m.body]
    assert len(bodies) == 3
    assert [
        (b, s) for b in bodies for s in ("zed", "hidden", "zanzibar", "pineapple") if s in b
    ] == []
    assert answer.body.endswith("!help - this list")
