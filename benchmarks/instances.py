"""Several instances (issue 15): mails per second with 1, 2 and 3 ``mailbridge run`` processes
on one PostgreSQL against one on SQLite, and how long a ``/mail`` takes on each. Every part is
a real process (tests/instances.py): the instances, the round-robin proxy their webhooks sit
behind, the Bot API fake and the Google fake; the same rig for SQLite, with one instance.

Latency: /mail commands one after another (each from another user), Gmail answering at once,
from the moment the user sends to the moment the Bot API fake gets the "✅ Mail" outcome (both
clocks are the machine's monotonic clock). Throughput: ``USERS`` users send ``PER_USER`` mails
each at once, Gmail taking ``GMAIL_LATENCY`` per send: mails per second until Gmail has them
all, and outcomes told per second (which Telegram's 30 messages a second bounds: the bot keeps
each process at 27); and the burst's CPU time per mail, of the instances and of the PostgreSQL
server (on a machine of 2 cores, CPU is what several instances share).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path

import aiohttp

from tests.instances import Instances, instances
from tests.postgres import running_server

USERS, PER_USER, SEQUENTIAL = 60, 4, 20
GMAIL_LATENCY = 0.1  # seconds per send in the throughput run
LIMITS = "sends_per_minute = 1000\nsends_per_day = 100000"
OUTCOME = "✅ Mail #"


TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pids: list[int], children_of: int | None = None) -> float:
    """CPU time (user and system, every thread) of ``pids``, plus, for a PostgreSQL server,
    that of the postmaster ``children_of``'s live backends and of those that ended."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        pid, ppid = int(entry.name), int(fields[1])
        if pid in pids or (children_of is not None and ppid == children_of):
            total += int(fields[11]) + int(fields[12])  # utime, stime
        if pid == children_of:
            total += sum(int(f) for f in fields[11:15])  # its own and its ended children's
    return total / TICK


async def _latency(s: Instances, users: list[int]) -> list[float]:
    """One /mail at a time, each from another user: Telegram's one message a second to a chat
    (which the bot keeps to) would otherwise be most of what is measured."""
    await s.google.set(gmail_latency=0.0)
    samples = []
    for user in users:
        skip = len(await s.telegram.sent(user))
        t0 = time.monotonic()
        await s.telegram.user_sends(user, f"/mail bob@example.com L{user} | Body")
        told = await s.telegram.wait_for(user, rf"{OUTCOME}\d+ to .*“L{user}”", skip, 30)
        samples.append((float(told["sent_at"]) - t0) * 1000)
    return samples


async def _throughput(s: Instances, users: list[int]) -> tuple[float, float]:
    """Return mails per second taken by Gmail, and outcomes told per second."""
    await s.google.set(gmail_latency=GMAIL_LATENCY)
    before, sent_before = len(await s.telegram.sent()), len(await s.google.sent())
    total = len(users) * PER_USER
    t0 = time.monotonic()
    await asyncio.gather(
        *(
            s.telegram.user_sends(u, f"/mail bob@example.com T{u}-{k} | Body")
            for k in range(PER_USER)
            for u in users
        )
    )
    deadline, gmail_done = t0 + 120, 0.0
    while time.monotonic() < deadline:
        if not gmail_done and len(await s.google.sent()) - sent_before >= total:
            gmail_done = time.monotonic()  # polled 10 times a second: within 0.1 s
        told = [m for m in (await s.telegram.sent())[before:] if m["text"].startswith(OUTCOME)]
        if len(told) >= total and gmail_done:
            break
        await asyncio.sleep(0.1)
    assert len(told) == total, f"{len(told)} of {total} mails were confirmed"
    return total / (gmail_done - t0), total / (max(float(m["sent_at"]) for m in told) - t0)


async def _measure(
    tmp: Path, database: str, n: int, server_pid: int | None = None
) -> dict[str, float]:
    await asyncio.to_thread(tmp.mkdir, parents=True)
    async with instances(tmp, database, n, LIMITS) as s, aiohttp.ClientSession() as http:
        users = [7000 + i for i in range(USERS)]
        await s.connect(users, http)
        latency = await _latency(s, users[:SEQUENTIAL])
        pids = [bot.proc.pid for bot in s.bots if bot.proc is not None]
        bot0, db0 = _cpu_seconds(pids), _cpu_seconds([], server_pid) if server_pid else 0.0
        proxy0 = await s.proxy_stats()
        gmail_rate, told_rate = await _throughput(s, users)
        bot1, db1 = _cpu_seconds(pids), _cpu_seconds([], server_pid) if server_pid else 0.0
        proxy1 = await s.proxy_stats()
        await s.stop()
    mails = len(users) * PER_USER
    return {
        "mails_per_s": gmail_rate,
        "told_per_s": told_rate,
        "mail_latency_ms_median": statistics.median(latency),
        # The burst's CPU per mail: every instance (SQLite's work is in the bot's threads),
        # and the PostgreSQL server's processes.
        "bot_cpu_ms_per_mail": (bot1 - bot0) / mails * 1000,
        "db_cpu_ms_per_mail": (db1 - db0) / mails * 1000,
        # How long Telegram waited for each webhook answer during the burst, on average.
        "webhook_ms_mean": (_spent(proxy1, " ms") - _spent(proxy0, " ms"))
        / max(1, _spent(proxy1, " 200") - _spent(proxy0, " 200")),
    }


def _spent(stats: dict[str, int], suffix: str) -> int:
    return sum(n for key, n in stats.items() if key.endswith(suffix))


async def several(tmp: Path) -> dict[str, float]:
    """Run each setup in turn; return its figures and their ratios, all from this run."""
    results = {
        f"sqlite_1_{k}": v for k, v in (await _measure(tmp / "sqlite", "bot.db", 1)).items()
    }
    with running_server() as server:
        for n in (1, 2, 3):
            url = server.url(await asyncio.to_thread(server.create_database))
            figures = await _measure(tmp / f"pg{n}", url, n, server.pid())
            results |= {f"pg_{n}_{k}": v for k, v in figures.items()}
    for n in (1, 2, 3):
        results[f"pg_{n}_vs_sqlite_rate_ratio"] = (
            results[f"pg_{n}_mails_per_s"] / results["sqlite_1_mails_per_s"]
        )
    sqlite_ms = results["sqlite_1_mail_latency_ms_median"]
    pg_ms = results["pg_1_mail_latency_ms_median"]
    results["pg_added_latency_ms"] = pg_ms - sqlite_ms
    results["pg_latency_ratio"] = pg_ms / sqlite_ms
    return results
