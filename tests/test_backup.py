"""Backups: ``mailbridge backup`` while the bot sends, ``mailbridge restore`` into a new place,
and a bot that starts on the restored database with everything as of the backup."""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import sqlite3
import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests import runtime
from tests.stack import Daemon, Stack, remote_google, remote_telegram, until, write_config

pytestmark = [pytest.mark.reliability, pytest.mark.integration]
USERS = [3001, 3002, 3003, 3004, 3005]


async def mailbridge(*args: str) -> tuple[int, str]:
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


def tables(database: Path) -> dict[str, list[tuple[Any, ...]]]:
    """What a user would notice of a database: links, aliases and every mail's state."""
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return {
            "accounts": db.execute("SELECT user_key, address FROM accounts ORDER BY 1").fetchall(),
            "aliases": db.execute("SELECT * FROM aliases ORDER BY 1, 2").fetchall(),
            "outbox": db.execute(
                "SELECT id, event_key, user_key, subject, state FROM outbox ORDER BY id"
            ).fetchall(),
        }
    finally:
        db.close()


async def test_a_backup_taken_while_100_mails_go_out_restores_into_a_bot_that_starts(
    tmp_path: Path,
) -> None:
    live, folder, moved = tmp_path / "live", tmp_path / "backup", tmp_path / "restored"
    live.mkdir()
    async with (
        remote_google() as google,
        remote_telegram() as tg,
        aiohttp.ClientSession() as http,
    ):
        config, public = write_config(live, google, tg)
        await google.set(redirect_uris=[f"{public}/oauth/callback"])
        bot = Daemon(config, public)
        await bot.start()
        try:
            await _send_100_and_back_up(Stack(google, tg, bot), http, folder)
        finally:
            await bot.stop()  # the restored bot runs on its own; this one stops first
        saved = _check_backup(live, folder)
        await _refusals(live, folder)

        # Restore into an empty place; start a bot on it against the same Google and Telegram.
        moved.mkdir()
        (moved / "config.toml").write_text(config.read_text())
        shutil.copy(live / "client_secret.json", moved / "client_secret.json")
        code, out = await mailbridge(
            "restore", str(folder), "--config", str(moved / "config.toml")
        )
        assert code == 0, out
        assert tables(moved / "bot.db") == saved
        assert stat.S_IMODE((moved / "bot.db").stat().st_mode) == 0o600
        assert stat.S_IMODE((moved / "bot.db.key").stat().st_mode) == 0o600
        sent_before = len(await google.sent())
        restored = Daemon(moved / "config.toml", public)
        await restored.start()
        try:
            await _as_of_the_backup(Stack(google, tg, restored), saved, sent_before)
        finally:
            await restored.stop()


async def _send_100_and_back_up(s: Stack, http: aiohttp.ClientSession, folder: Path) -> None:
    tg, live = s.telegram, s.bot.config.parent
    await s.connect(USERS, http)
    for user in USERS:
        await tg.user_sends(user, f"/alias add friend{user} friend{user}@example.com")
        await tg.wait_for(user, f"Alias friend{user} = ")
    # Ten mails out before, one of them refused by Gmail; then ninety while Gmail is slow.
    await s.google.set(gmail_faults=[{"status": 403, "reason": "dailyLimitExceeded"}])
    for user in USERS:
        for n in range(2):
            await tg.user_sends(user, f"/mail friend{user} Early {user}-{n} | Body")

    async def all_ten_told() -> bool:
        rows = tables(live / "bot.db")["outbox"]
        return len(rows) == 10 and all(r[4] in ("sent", "failed") for r in rows)

    await until(all_ten_told)
    await s.google.set(gmail_latency=4)
    await asyncio.gather(
        *(
            tg.user_sends(user, f"/mail friend{user} Late {user}-{n} | Body")
            for n in range(18)
            for user in USERS
        )
    )

    async def gmail_is_busy() -> bool:
        return len(await s.google.sent()) >= 40

    await until(gmail_is_busy)
    code, out = await mailbridge("backup", str(folder), "--config", str(s.bot.config))
    assert code == 0, out
    assert len(await s.google.sent()) < 100, "the backup ran while mail was still going out"
    # The bot holds its database (bot/lock.py): the backup did not need that lock, a restore does.
    code, out = await mailbridge("restore", str(folder), "--config", str(s.bot.config))
    assert code == 2
    assert f"{live / 'bot.db'} is in use by another mailbridge (pid {s.bot.proc.pid})" in out
    await s.google.set(gmail_latency=0)


def _check_backup(live: Path, folder: Path) -> dict[str, list[tuple[Any, ...]]]:
    assert stat.S_IMODE((folder / "mailbridge.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / "mailbridge.db.key").stat().st_mode) == 0o600
    assert (folder / "mailbridge.db.key").read_bytes() == (live / "bot.db.key").read_bytes()
    saved = tables(folder / "mailbridge.db")
    states = [r[4] for r in saved["outbox"]]
    assert len(saved["accounts"]) == 5
    assert len(saved["aliases"]) == 5
    assert states.count("failed") == 1
    assert states.count("sent") >= 9
    assert "sending" in states  # caught mid-send: Gmail had those, but had not answered
    print(f"\nbackup outbox: { {s: states.count(s) for s in sorted(set(states))} }")
    return saved


async def _refusals(live: Path, folder: Path) -> None:
    # A second backup into the same folder, or a restore over a database, never overwrites.
    code, out = await mailbridge("backup", str(folder), "--config", str(live / "config.toml"))
    assert code == 1
    assert "a backup never overwrites" in out
    code, out = await mailbridge("restore", str(folder), "--config", str(live / "config.toml"))
    assert code == 1
    assert "a restore never overwrites" in out


async def _as_of_the_backup(
    s: Stack, saved: dict[str, list[tuple[Any, ...]]], sent_before: int
) -> None:
    tg, moved = s.telegram, s.bot.config.parent
    for user in USERS:
        await tg.user_sends(user, "/status")
        await tg.wait_for(user, f"Connected as user{user}@gmail.com since")
        await tg.user_sends(user, "/alias list")
        await tg.wait_for(user, f"friend{user} = friend{user}@example.com")
    # As of the backup: sent and failed stay; mid-send becomes unknown (told as such); queued
    # mail is sent now (the backup did not know it went out later).
    expected = {"sent": "sent", "failed": "failed", "sending": "unknown", "queued": "sent"}

    async def settled() -> bool:
        rows = tables(moved / "bot.db")["outbox"]
        return len(rows) == len(saved["outbox"]) and all(
            r[4] in ("sent", "failed", "unknown") for r in rows
        )

    await until(settled, timeout=60)
    now = {r[0]: r for r in tables(moved / "bot.db")["outbox"]}
    for row in saved["outbox"]:
        assert now[row[0]][:4] == row[:4]
        assert now[row[0]][4] == expected[row[4]], row
    queued = sum(r[4] == "queued" for r in saved["outbox"])
    assert len(await s.google.sent()) == sent_before + queued


def test_restore_refuses_while_a_bot_holds_the_database(tmp_path: Path) -> None:
    from bot import backup
    from bot.errors import InUseError
    from tests.conftest import make_config

    config = make_config(tmp_path / "bot")
    (tmp_path / "bot").mkdir()
    folder = tmp_path / "backup"
    folder.mkdir()
    sqlite3.connect(folder / "mailbridge.db").close()
    lock = tmp_path / "bot" / "bot.db.lock"  # the lock `mailbridge run` holds
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(InUseError, match=r"the database .*bot\.db is in use by another"):
            backup.restore(config, folder, None)
    finally:
        os.close(fd)
    assert not (tmp_path / "bot" / "bot.db").exists()
    backup.restore(config, folder, None)  # once it stopped
    assert (tmp_path / "bot" / "bot.db").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root restores files for another user")
def test_restore_as_root_hands_the_files_to_the_owner_of_the_folder(tmp_path: Path) -> None:
    from bot import backup
    from tests.conftest import make_config

    state = tmp_path / "state"  # like /var/lib/mailbridge, owned by the service's user
    state.mkdir()
    os.chown(state, 65534, 65534)
    folder = tmp_path / "backup"
    folder.mkdir()
    sqlite3.connect(folder / "mailbridge.db").close()
    (folder / "mailbridge.db.key").write_bytes(b"key")
    config = make_config(state)
    backup.restore(config, folder, state / "bot.db.key")
    for name in ("bot.db", "bot.db.key"):
        info = (state / name).stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (65534, 65534, 0o600)
