"""The Synapse fixture end to end: people chat in direct rooms, and a restart loses nothing."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
from aiohttp import ClientConnectionError

from tests.synapse import (
    RegisteredUser,
    Synapse,
    SynapseError,
    create_dm,
    join_room,
    send_text,
    sync_until,
    wait_for_invite,
    wait_for_message,
)

pytestmark = pytest.mark.matrix


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain"])
async def test_two_people_talk_in_a_direct_room(synapse: Synapse, encrypted: bool) -> None:
    alice, bob = await asyncio.gather(synapse.register(), synapse.register())
    async with (
        synapse.client(alice, encrypted=encrypted) as a,
        synapse.client(bob, encrypted=encrypted) as b,
    ):
        room_id = await create_dm(a, bob.user_id, encrypted=encrypted)
        assert await wait_for_invite(b, inviter=alice.user_id) == room_id
        await join_room(b, room_id)
        await sync_until(a, lambda c: bob.user_id in c.rooms[room_id].users)

        sent = await send_text(a, room_id, "Lunch on Friday?")
        got = await wait_for_message(b, room_id, lambda m: m.body == "Lunch on Friday?")
        assert (got.event_id, got.sender, got.msgtype) == (sent, alice.user_id, "m.text")
        assert got.encrypted is encrypted

        await send_text(b, room_id, "Yes!", reply_to=sent)
        answer = await wait_for_message(a, room_id)
        assert (answer.body, answer.in_reply_to, answer.encrypted) == ("Yes!", sent, encrypted)

        direct = await a.list_direct_rooms()
        assert direct.rooms == {bob.user_id: [room_id]}


async def test_restart_keeps_users_rooms_and_tokens(synapse: Synapse) -> None:
    alice, bob = await asyncio.gather(synapse.register(), synapse.register())
    async with synapse.client(alice, encrypted=True) as a, synapse.client(bob) as b:
        room_id = await create_dm(a, bob.user_id, encrypted=False)
        await join_room(b, room_id)
        url = synapse.url

        await synapse.restart()

        assert synapse.url == url
        # Old devices keep their tokens, new logins work, and the room is still there.
        await send_text(a, room_id, "still here")
        assert (await wait_for_message(b, room_id)).body == "still here"
        async with synapse.client(bob) as b2:
            assert room_id in b2.rooms
            await send_text(b2, room_id, "me too")
            assert (await wait_for_message(a, room_id)).body == "me too"


async def test_clients_fail_fast_when_the_server_is_down(tmp_path: Path) -> None:
    down = Synapse(tmp_path)  # never started: nothing listens on its port
    nobody = RegisteredUser(down.user_id("nobody"), "pw", "", "")
    began = time.monotonic()
    with pytest.raises(ClientConnectionError):
        async with down.client(nobody):
            pass
    assert time.monotonic() - began < 5


def test_a_failed_start_shows_synapse_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        server = Synapse(tmp_path, port=taken.getsockname()[1])
        with pytest.raises(SynapseError, match="Failed to listen on TCP port"):
            server.start()
