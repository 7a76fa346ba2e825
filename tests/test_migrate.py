"""``mailbridge migrate --to postgresql://…``: a SQLite deployment made through the real bot
moves onto PostgreSQL, and the bot started there keeps every link, alias, pending login and
pending mail; a second migrate into the now filled database is refused.

Every process is the real one: the Google and Bot API fakes, ``mailbridge run`` on the SQLite
file, ``mailbridge migrate`` and ``mailbridge run`` on the PostgreSQL URL, from the runtime venv.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.store.pg import PostgresDatabase
from tests import runtime
from tests.chatkit import LOGIN_LINK
from tests.stack import (
    Daemon,
    RemoteGoogle,
    RemoteTelegram,
    Stack,
    remote_google,
    remote_telegram,
    until,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.telegram]
ANN, BO = 4001, 4002  # Ann links Gmail and mails; Bo asks for a login link and waits
PASSWORD = "s3cret-pw"  # in the URL; never in any output
UNDO = 20  # seconds: Ann's mail waits out its undo window while the deployment moves


async def mailbridge(*args: str) -> tuple[int, str]:
    """Run the installed ``mailbridge`` with ``args``; return its status and output."""
    env = {k: v for k, v in runtime.env().items() if k != "MAILBRIDGE_DATA_KEY"}
    proc = await asyncio.create_subprocess_exec(
        runtime.mailbridge(),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return int(proc.returncode or 0), out.decode()


def sqlite_tables(database: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the SQLite file, in one order."""
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        names = [
            r[0]
            for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {n: sorted(db.execute(f"SELECT * FROM {n}").fetchall(), key=repr) for n in names}
    finally:
        db.close()


async def pg_tables(url: str, names: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables ``names`` in PostgreSQL, in the same order."""
    db = PostgresDatabase.connect(url)
    try:
        found = {}
        for name in names:
            rows = [tuple(r) for r in await db.fetchall(f"SELECT * FROM {name}")]
            found[name] = sorted(rows, key=repr)
        return found
    finally:
        await db.close()


async def test_a_sqlite_deployment_moves_to_postgresql_with_its_links_aliases_and_mail(
    tmp_path: Path, pg_url: str
) -> None:
    url = pg_url.replace("postgresql+asyncpg://postgres@", f"postgresql://postgres:{PASSWORD}@")
    async with (
        remote_google() as google,
        remote_telegram() as tg,
        aiohttp.ClientSession() as http,
    ):
        config, public = write_config(tmp_path, google, tg)
        config.write_text(config.read_text().replace("undo_seconds = 0", f"undo_seconds = {UNDO}"))
        await google.set(redirect_uris=[f"{public}/oauth/callback"])
        old = Daemon(config, public, log_name="sqlite.log")
        await old.start()
        try:
            link = await _populate(Stack(google, tg, old), http)
            code, out = await mailbridge("migrate", "--to", url, "--config", str(config))
            assert old.proc is not None
            assert code == 2, out
            assert f"is in use by another mailbridge (pid {old.proc.pid})" in out
            await _crash_with_mail_midway_and_waiting(google, tg)
        finally:
            await old.kill()
        before = sqlite_tables(tmp_path / "bot.db")
        states = {r[6]: r[8] for r in before["outbox"]}  # subject: state
        assert states == {"Tomorrow": "queued", "Midway": "sending", "Soon": "queued"}
        await google.set(gmail_latency=0)

        code, out = await mailbridge("migrate", "--to", url, "--config", str(config))
        assert code == 0, out
        print(f"\n{out}")
        assert PASSWORD not in out
        assert 'database = "postgresql://postgres:***@/' in out
        for table in ("accounts", "aliases", "outbox", "pending_logins", "user_settings"):
            assert f"  {table}: {len(before[table])}\n" in out, table
        assert f"data key {tmp_path / 'bot.db.key'}" in out
        assert await pg_tables(pg_url, list(before)) == before

        # The bot on PostgreSQL, with the same data key.
        config.write_text(
            config.read_text().replace(
                'database = "bot.db"', f'database = "{url}"\ndata_key_file = "bot.db.key"'
            )
        )
        tokens_before = (await google.state())["token_requests"]
        new = Daemon(config, public, log_name="postgres.log")
        await new.start()
        try:
            await _all_there(google, tg, http, link, tokens_before)
        finally:
            assert await new.stop() == 0
        assert PASSWORD not in new.logs()

        code, out = await mailbridge("migrate", "--to", url, "--config", str(config))
        assert code == 2, out
        assert "[bot] database is already PostgreSQL" in out
        config.write_text(config.read_text().replace(f'database = "{url}"', 'database = "bot.db"'))
        code, out = await mailbridge("migrate", "--to", url, "--config", str(config))
        assert code == 2, out
        assert "is not empty (accounts: 2 rows" in out
        assert PASSWORD not in out


async def _populate(s: Stack, http: aiohttp.ClientSession) -> str:
    """Ann: a link, an alias, a time zone, a mail in its undo window and one for tomorrow.
    Bo: a login link he has not opened yet. Return Bo's link."""
    tg = s.telegram
    await s.connect([ANN], http)
    await tg.user_sends(ANN, "/alias add bob bob@example.com")
    await tg.wait_for(ANN, "Alias bob = ")
    await tg.user_sends(ANN, "/timezone Europe/Berlin")
    await tg.wait_for(ANN, "Your time zone is now Europe/Berlin")
    await tg.user_sends(ANN, "/mail at:tomorrow-9:00 bob Tomorrow | Later")
    await tg.wait_for(ANN, r"🕒 Mail #1 to bob@example.com")
    await tg.user_sends(ANN, "/mail bob Midway | Body")
    await tg.wait_for(ANN, rf"⏳ Mail #2 to bob@example.com, .Midway. goes out in {UNDO} s")
    await s.google.set(gmail_latency=600)  # Gmail takes it, then answers only after the crash
    await tg.user_sends(BO, "/connect")
    said = await tg.wait_for(BO, "/connect/")
    found = LOGIN_LINK.search(said["text"])
    assert found, said["text"]
    return found.group(0)


async def _crash_with_mail_midway_and_waiting(google: RemoteGoogle, tg: RemoteTelegram) -> None:
    """Wait until Gmail took Midway (the bot awaits its answer); then Ann mails Soon, which
    waits out its undo window. The caller kills the bot then (SIGTERM would finish both)."""

    async def gmail_took_midway() -> bool:
        return any(m["subject"] == "Midway" for m in await google.sent())

    await until(gmail_took_midway, timeout=UNDO + 30)
    await tg.user_sends(ANN, "/mail bob Soon | Body")
    await tg.wait_for(ANN, rf"⏳ Mail #3 to bob@example.com, .Soon. goes out in {UNDO} s")


async def _all_there(
    google: RemoteGoogle,
    tg: RemoteTelegram,
    http: aiohttp.ClientSession,
    link: str,
    tokens_before: list[str],
) -> None:
    # Ann's mail goes out once, through the copied refresh token (the fake knows only the
    # tokens it issued: a refresh with any other is invalid_grant).
    await tg.wait_for(ANN, r"✅ Mail #3 to bob@example.com, .Soon.: ", timeout=UNDO + 30)
    sent = [m for m in await google.sent() if m["subject"] == "Soon"]
    assert [(m["account"], m["to"]) for m in sent] == [
        (f"user{ANN}@gmail.com", ["bob@example.com"])
    ]
    # The mail Gmail took as the old bot died is "maybe sent", told once, never sent again.
    maybe = r"⚠️ Maybe sent: mail #2 to bob@example.com, .Midway.. The bot restarted"
    await tg.wait_for(ANN, maybe)
    new_tokens = (await google.state())["token_requests"][len(tokens_before) :]
    assert new_tokens
    assert set(new_tokens) == {"refresh_token"}  # no new consent: the copied link works
    n = len(await tg.sent(ANN))
    await tg.user_sends(ANN, "/status")
    await tg.wait_for(ANN, f"Connected as user{ANN}@gmail.com since", n)
    await tg.user_sends(ANN, "/alias list")
    await tg.wait_for(ANN, "bob = bob@example.com", n)
    await tg.user_sends(ANN, "/history")
    await tg.wait_for(ANN, r"🕒 #1 scheduled for .* 09:00 CE.?T", n)
    # A new mail is numbered after the copied ones.
    await tg.user_sends(ANN, "/mail bob Next | Body")
    await tg.wait_for(ANN, r"⏳ Mail #4 to bob@example.com", n)
    await tg.user_sends(ANN, "/undo 4")  # else stopping waits out its window to send it
    await tg.wait_for(ANN, r"↩️ Undone: mail #4 was not sent", n)
    # Bo's login link, made by the SQLite bot, works on the PostgreSQL one.
    email = f"user{BO}@gmail.com"
    await google.set(add_account=email, next_account=email, auto_consent="allow")
    async with http.post(link) as r:
        assert r.status == 200, await r.text()
    await tg.wait_for(BO, f"Gmail connected as {email}")
    said = [m["text"] for m in await tg.sent(ANN)]
    assert len([t for t in said if re.search(maybe, t)]) == 1
    assert [m["subject"] for m in await google.sent()].count("Midway") == 1
