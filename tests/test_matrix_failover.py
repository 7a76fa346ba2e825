"""Matrix across instances: three ``mailbridge run`` processes on one PostgreSQL database, one
Matrix device and one store folder; the leader runs the sync, and when it is killed another
takes the sync over, answers what was said meanwhile once, and keeps the encrypted room."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import aiohttp
import pytest

from bot.store.db import open_database
from tests.botproc import free_port
from tests.gmail_rig import follow
from tests.google_fake import GoogleFake
from tests.stack import Daemon, Section, config_toml, google_section, web
from tests.synapse import (
    ReceivedMessage,
    RegisteredUser,
    Synapse,
    create_dm,
    send_text,
    wait_for_message,
)

pytestmark = pytest.mark.matrix

TAKEOVER = 10.0  # seconds from the leader's death to the next leader's answer (issue 15)
LEADS = "leading intake:matrix"  # what an instance logs when it takes the sync (bot.leader)


def instance(
    tmp_path: Path,
    name: str,
    pg_url: str,
    synapse: Synapse,
    bot: RegisteredUser,
    *,
    port: int | None = None,
    public: str = "",
    google: GoogleFake | None = None,
) -> Daemon:
    """One instance: its own web port and log; database, data key, outbox and Matrix store
    shared (on one host here; see README "Several instances" for the store's volume).
    ``public``: the public URL (a balancer's in front of all), by default its own."""
    port = port or free_port()
    public = public or f"http://127.0.0.1:{port}"
    home = tmp_path / name
    home.mkdir()
    shared = tmp_path / "shared"
    shared.mkdir(exist_ok=True)
    config = home / "config.toml"
    sections: dict[str, Section] = {
        "bot": {"database": pg_url, "data_key_file": str(shared / "data.key")},
        "web": web(port, public),
        "mail": {"outbox_dir": str(shared / "outbox")},
        "matrix": {
            "homeserver": synapse.url,
            "user_id": bot.user_id,
            "access_token": bot.access_token,
            "store_path": str(shared / "matrix-store"),
        },
    }
    if google is not None:
        secrets = shared / "client_secret.json"
        secrets.write_text(json.dumps(google.client_secrets_json([f"{public}/oauth/callback"])))
        sections["google"] = google_section(google, secrets, ("revoke_uri", "api_endpoint"))
    text = config_toml(sections)
    config.write_text(text)
    return Daemon(config, f"http://127.0.0.1:{port}")


def answers(bot: RegisteredUser, command: str) -> object:
    """Match the bot's reply to the event ``command``."""

    def match(m: ReceivedMessage) -> bool:
        return m.sender == bot.user_id and m.in_reply_to == command

    return match


def from_bot(bot: RegisteredUser, text: str) -> object:
    def match(m: ReceivedMessage) -> bool:
        return m.sender == bot.user_id and text in m.body

    return match


@pytest.mark.postgres
@pytest.mark.reliability
async def test_killed_leader_is_replaced_and_what_was_said_meanwhile_is_answered_once(
    synapse: Synapse, tmp_path: Path, pg_url: str
) -> None:
    bot, alice = await synapse.register(), await synapse.register()
    first = instance(tmp_path, "a", pg_url, synapse, bot)
    standbys = [instance(tmp_path, n, pg_url, synapse, bot) for n in ("b", "c")]
    everyone = [first, *standbys]
    try:
        async with synapse.client(alice, encrypted=True) as client:
            # The first instance alone: it becomes the leader and owns the device's store.
            await first.start()
            room = await create_dm(client, bot.user_id, encrypted=True)
            hello = await wait_for_message(client, room, from_bot(bot, "Hello"), timeout=60)
            assert hello.encrypted
            before = await send_text(client, room, "!mail bob@example.com Before | x")
            said = await wait_for_message(client, room, answers(bot, before), timeout=30)
            assert "Mail #1" in said.body
            assert said.encrypted
            await asyncio.gather(*(s.start() for s in standbys))
            # A standby is ready for the balancer: it does not sync, but serves the web routes
            # (its Matrix readiness is the homeserver's answer).
            assert [await readiness(d) for d in everyone] == [200, 200, 200]
            # Standbys are up; none of them answers (one sync consumer): proved below, when
            # every command has exactly one answer.

            # Kill the leader, then the next one: the third takes over from the second.
            commands, mail = [before], 1
            for round_ in (1, 2):
                leader = first if round_ == 1 else leading(standbys)
                # Kill it when it has nothing in hand: a kill between a reply and its "told"
                # mark makes the outbox say it again, marked as a repeat (at least once).
                await all_told(pg_url, mail)
                await leader.kill()
                killed = time.monotonic()
                gap = [
                    await send_text(client, room, f"!mail bob@example.com During {round_} | x"),
                    await send_text(client, room, "!help"),
                    await send_text(client, room, f"!mail bob@example.com During {round_}b | y"),
                ]
                replies = [
                    await wait_for_message(client, room, answers(bot, c), timeout=60) for c in gap
                ]
                took = time.monotonic() - killed
                print(f"matrix failover {round_}: {len(gap)} answered {took:.1f} s after the kill")
                assert took < TAKEOVER, f"answered {took:.1f} s after the leader's death"
                assert all(r.encrypted for r in replies)  # and decrypted by Alice's device
                assert "!help - this list" in replies[1].body
                # Handled side by side: the two mails take the next two numbers, either way.
                numbers = sorted(re.findall(r"Mail #(\d+)", replies[0].body + replies[2].body))
                assert numbers == [str(mail + 1), str(mail + 2)], [r.body for r in replies]
                commands, mail = commands + gap, mail + 2

            # The encrypted room keeps working with the third leader; a marker proves that
            # every reply the bot would ever give to the commands above has arrived before it.
            marker = await send_text(client, room, "!mail bob@example.com After | z")
            said = await wait_for_message(client, room, answers(bot, marker), timeout=30)
            assert f"Mail #{mail + 1}" in said.body
            assert said.encrypted
            extra = [
                m
                for m in await drain(client, room)
                if m.sender == bot.user_id and m.in_reply_to in commands
            ]
            assert not extra, f"answered twice: {[m.body for m in extra]}"
            assert await readiness(leading(standbys)) == 200
        mails = sorted((tmp_path / "shared" / "outbox").glob("*.eml"))
        assert len(mails) == mail + 1, [p.name for p in mails]
    finally:
        for daemon in everyone:
            await daemon.stop()


async def all_told(pg_url: str, mails: int, timeout: float = 30.0) -> None:
    """Wait until the outbox holds ``mails`` rows, each decided and its owner told."""
    db = await open_database(pg_url)
    try:
        async with asyncio.timeout(timeout):
            while True:
                rows = await db.fetchall("SELECT count(*) FILTER (WHERE told = 1) FROM outbox")
                if rows[0][0] == mails:
                    return
                await asyncio.sleep(0.05)
    finally:
        await db.close()


async def readiness(daemon: Daemon) -> int:
    """Return the status of the instance's /readyz, as a load balancer sees it."""
    async with aiohttp.ClientSession() as http, http.get(f"{daemon.base_url}/readyz") as r:
        return r.status


def leading(daemons: list[Daemon]) -> Daemon:
    """Return the live instance that leads the Matrix sync (it says so in its log)."""
    [leader] = [
        d
        for d in daemons
        if d.proc is not None and d.proc.returncode is None and LEADS in d.logs()
    ]
    return leader


async def drain(client: object, room: str) -> list[ReceivedMessage]:
    """Return every message still in the client's inbox for ``room`` after one more sync."""
    from tests.synapse import _inbox, _sync_once

    await _sync_once(client, 1.0)  # type: ignore[arg-type]
    inbox = _inbox(client)  # type: ignore[arg-type]
    return [m for m in inbox.messages if m.room_id == room]


@pytest.mark.postgres
@pytest.mark.reliability
async def test_what_a_standby_says_on_matrix_goes_out_through_the_leader(
    synapse: Synapse, tmp_path: Path, pg_url: str, google_fake: GoogleFake
) -> None:
    from tests.test_matrix import link_in

    bot, alice = await synapse.register(), await synapse.register()
    standby_port = free_port()
    public = f"http://127.0.0.1:{standby_port}"  # a balancer that sends this user to B
    leader = instance(tmp_path, "a", pg_url, synapse, bot, public=public, google=google_fake)
    standby = instance(
        tmp_path, "b", pg_url, synapse, bot, port=standby_port, public=public, google=google_fake
    )
    try:
        async with synapse.client(alice, encrypted=True) as client:
            await leader.start()
            room = await create_dm(client, bot.user_id, encrypted=True)
            await wait_for_message(client, room, from_bot(bot, "Hello"), timeout=60)
            await standby.start()
            command = await send_text(client, room, "!connect")
            said = await wait_for_message(client, room, answers(bot, command), timeout=30)
            link = link_in(said)
            assert link.startswith(public)
            google_fake.auto_consent = "allow"
            status, _, page = await follow(link)  # the page and Google's callback: on B
            assert status == 200
            assert "Connected as alice@gmail.com" in page
            consented = time.monotonic()
            # B does not sync and holds no keys: the notice reaches Alice through A, encrypted.
            note = await wait_for_message(client, room, from_bot(bot, "connected"), timeout=30)
            print(f"relayed notice: {time.monotonic() - consented:.1f} s after the consent")
            assert note.encrypted
            assert "alice@gmail.com" in note.body
            assert not [m for m in await drain(client, room) if m.sender == bot.user_id]
        assert LEADS not in standby.logs()
    finally:
        for daemon in (standby, leader):
            await daemon.stop()
