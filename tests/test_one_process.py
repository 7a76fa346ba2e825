"""One process per database: two ``mailbridge run`` on one configuration started at the same
instant, ten times, on a new database each time (so they would race in its migrations). One
runs; the other says so in one line and exits 2. A third started with the first one's mail at
Gmail (on another web port, so only the database is shared) leaves that mail alone: it is
sent once and told once."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest

from tests.botproc import free_port
from tests.stack import Daemon, Stack, remote_google, remote_telegram, until, write_config

pytestmark = [pytest.mark.reliability, pytest.mark.integration]
RUNS = 10
OUTCOME = re.compile(r"sent from|Not sent|Maybe sent")
ENV = {"OAUTHLIB_INSECURE_TRANSPORT": "1"}  # the fakes speak plain HTTP (tests only)


def refused(loser: Daemon, winner: Daemon, database: Path) -> None:
    """``loser`` exited 2 with one line naming the database and ``winner``'s pid."""
    assert loser.proc is not None
    assert winner.proc is not None
    assert loser.proc.returncode == 2, loser.logs()
    assert loser.logs().splitlines() == [
        f"mailbridge: the database {database} is in use by another mailbridge "
        f"(pid {winner.proc.pid}); stop that one first, or give this one a database of its "
        "own ([bot] database)"
    ]


def new_database(folder: Path) -> None:
    """Remove the database, its key and lock: the next start creates and migrates it."""
    for stale in folder.glob("bot.db*"):
        stale.unlink()


async def one_exits(pair: list[Daemon], timeout: float = 60.0) -> tuple[Daemon, Daemon]:
    """Wait until one of ``pair`` has exited; return it and the other one."""
    waits = {asyncio.create_task(d.proc.wait()): d for d in pair if d.proc is not None}
    done, pending = await asyncio.wait(waits, timeout=timeout, return_when="FIRST_COMPLETED")
    for task in pending:
        task.cancel()
    assert done, "both processes kept running on one database"
    loser = waits[next(iter(done))]
    return loser, pair[1 - pair.index(loser)]


async def test_a_second_process_on_a_database_exits_and_touches_nothing(tmp_path: Path) -> None:
    started: list[Daemon] = []
    try:
        await two_at_once(tmp_path, started)
    finally:
        for daemon in started:  # also when a check failed: no process outlives the test
            await daemon.kill()


def daemon(config: Path, base_url: str, log_name: str, started: list[Daemon]) -> Daemon:
    started.append(Daemon(config, base_url, ENV, log_name=log_name))
    return started[-1]


async def two_at_once(tmp_path: Path, started: list[Daemon]) -> None:
    async with remote_google() as google, remote_telegram() as telegram:
        config, public = write_config(tmp_path, google, telegram)
        port, other = public.rsplit(":", 1)[1], str(free_port())
        elsewhere = tmp_path / "elsewhere.toml"  # the same database, another web port
        elsewhere.write_text(config.read_text().replace(f":{port}", f":{other}"))
        await google.set(redirect_uris=[f"{public}/oauth/callback"])
        database = tmp_path / "bot.db"
        async with aiohttp.ClientSession() as http:
            for run in range(RUNS):
                new_database(tmp_path)
                pair = [daemon(config, public, f"{run}{s}.log", started) for s in "ab"]
                await asyncio.gather(*(d.spawn() for d in pair))
                loser, winner = await one_exits(pair)
                await winner.ready()
                refused(loser, winner, database)

                user = 4000 + run
                await Stack(google, telegram, winner).connect([user], http)
                await google.set(gmail_latency=1.0)
                before = len(await telegram.sent(user))
                subject = f"Run {run}"
                await telegram.user_sends(user, f"/mail bob@example.com {subject} | Hello")

                async def at_gmail(subject: str = subject) -> bool:
                    return any(m["subject"] == subject for m in await google.sent())

                await until(at_gmail)
                third = daemon(elsewhere, f"http://127.0.0.1:{other}", f"{run}c.log", started)
                await third.spawn()
                assert third.proc is not None
                await asyncio.wait_for(third.proc.wait(), 60)
                refused(third, winner, database)

                await telegram.wait_for(user, "sent from", before)
                await google.set(gmail_latency=0.0)
                assert await winner.stop() == 0, winner.logs()
                told = [m["text"] for m in (await telegram.sent(user))[before:]]
                outcomes = [t for t in told if OUTCOME.search(t)]
                assert len(outcomes) == 1, told
                assert "sent from" in outcomes[0], told
                assert "Traceback" not in winner.logs()
        subjects = [m["subject"] for m in await google.sent()]
        assert sorted(subjects) == sorted(f"Run {run}" for run in range(RUNS))
