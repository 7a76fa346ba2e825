"""The scenarios: each drives the real core and returns figures; none asserts anything."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sqlite3
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.harness import Rig, Said
from benchmarks.naive import NaiveBot
from bot.addresses import EmailAddress
from bot.compose import compose
from bot.google.gmail_send import GmailSender
from bot.grammar import parse_mail
from bot.link_check import LinkCheck
from tests import runtime
from tests.botproc import free_port


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def is_outcome(user: str) -> Any:
    return lambda s: s.room == user and "Mail #" in s.text and "✅" in s.text


async def overhead(rig: Rig, user: str, n: int, tmp: Path, token: str) -> dict[str, float]:
    """Sequential /mail commands from one user, Gmail answering at once: our own time each;
    after each, its floor (``Floor``) and a raw POST of the same request (``RawPost``), so each
    figure and its floor are measured under the same load."""
    await rig.fake.set(gmail_latency=0.0)
    floor, floors = Floor(tmp), []
    raw, raws = RawPost(rig, token), []
    samples: list[float] = []
    cpu = 0.0  # every thread of this process: the loop's and the database's
    for i in range(n):
        cpu0 = time.process_time()
        done = rig.chat.expect(is_outcome(user))
        before = len(rig.gmail_seconds)
        t0 = time.perf_counter()
        await rig.core.handle(rig.message(user, f"/mail bob@example.com Note {i} | Hello Bob"))
        said: Said = await done
        gmail = sum(rig.gmail_seconds[before:])
        samples.append((said.at - t0 - gmail) * 1000)
        await rig.core.outbox.drain()  # the last write (told) is this mail's CPU too
        cpu += time.process_time() - cpu0
        floors.append(floor.step())
        raws.append(await raw.step())
    floor.db.close()
    await raw.http.close()
    gmail_ms = [s * 1000 for s in rig.gmail_seconds[-n:]]
    return {
        "cpu_ms_per_mail": cpu / n * 1000,
        "overhead_ms_median": statistics.median(samples),
        "overhead_ms_p99": percentile(samples, 99),
        "overhead_floor_ms": statistics.median(floors),
        "raw_post_ms_median": statistics.median(raws),
        "gmail_call_ms_median": statistics.median(gmail_ms),
        "sends_measured": float(n),
    }


class RawPost:
    """The same request as one plain aiohttp POST to the same fake: the same composed message
    (as the overhead scenario's), built once by the client library, so URL, headers and body
    are the backend's; one connection kept alive."""

    def __init__(self, rig: Rig, token: str) -> None:
        request = parse_mail("bob@example.com Note 0 | Hello Bob", {})
        raw = compose(request, EmailAddress("user1", "gmail.com")).as_bytes()
        built = GmailSender(rig.fake.api_endpoint).build(raw)
        self.uri, self.body = built.uri, built.body.encode()
        self.headers = {**built.headers, "authorization": f"Bearer {token}"}
        self.http = aiohttp.ClientSession()

    async def step(self) -> float:
        """One POST, in milliseconds."""
        t0 = time.perf_counter()
        async with self.http.post(self.uri, data=self.body, headers=self.headers) as r:
            await r.read()
            assert r.status == 200, r.status
        return (time.perf_counter() - t0) * 1000


async def ask_help(rig: Rig, user: str, stop: asyncio.Event, samples: list[float]) -> None:
    """Ask /help again and again (5 ms apart) until ``stop``; record each answer's time."""
    while not stop.is_set():
        t0 = time.perf_counter()
        await rig.core.handle(rig.message(user, "/help"))
        samples.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(0.005)


async def help_idle(rig: Rig, user: str, n: int = 300) -> dict[str, float]:
    """/help asked the same way (5 ms apart) with nothing else going on."""
    samples: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        await rig.core.handle(rig.message(user, "/help"))
        samples.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(0.005)
    return {"help_p99_ms_idle": percentile(samples, 99)}


async def concurrent(
    rig: Rig, users: list[str], helper_user: str, rounds: int = 3
) -> dict[str, float]:
    """Every user sends one /mail at the same moment; Gmail takes 250 ms for each. Meanwhile
    another user keeps asking /help. ``rounds`` such bursts, one after another: the wall is
    their median, /help's p99 is over the answers of all of them (one burst gives about 120, so
    its p99 would be the second-slowest answer: one hiccup of a shared machine)."""
    latency = 0.25
    await rig.fake.set(gmail_latency=latency)
    help_ms: list[float] = []
    walls: list[float] = []
    cpu = 0.0
    for _ in range(rounds):
        outcomes = [rig.chat.expect(is_outcome(u)) for u in users]
        stop = asyncio.Event()
        helper = asyncio.create_task(ask_help(rig, helper_user, stop, help_ms))
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        await asyncio.gather(
            *(
                rig.core.handle(rig.message(u, f"/mail bob@example.com From {u} | Hi"))
                for u in users
            )
        )
        said = await asyncio.gather(*outcomes)
        walls.append(max(s.at for s in said) - t0)
        cpu += time.process_time() - cpu0
        stop.set()
        await helper
        await rig.core.outbox.drain()  # the last writes (told) before the next burst
    await rig.fake.set(gmail_latency=0.0)
    wall = statistics.median(walls)
    return {
        "concurrent_users": float(len(users)),
        "concurrent_latency_s": latency,
        "concurrent_wall_s": wall,
        "concurrent_ratio": wall / latency,
        "concurrent_cpu_s": cpu / rounds,
        "concurrent_rounds": float(rounds),
        "help_p99_ms_under_load": percentile(help_ms, 99),
        "help_answers_under_load": float(len(help_ms)),
    }


class Floor:
    """What any crash-safe outbox must do per mail, with ``sqlite3`` directly: compose the same
    mail, then commit it (durably), claim it (durably) and record the outcome."""

    def __init__(self, tmp: Path) -> None:
        from bot.store.migrations import MIGRATIONS

        self.db = sqlite3.connect(tmp / "floor.db", isolation_level=None)
        self.db.execute("PRAGMA journal_mode = WAL")
        for migration in MIGRATIONS:
            for statement in migration:
                self.db.execute(statement)
        self.request = parse_mail("bob@example.com Note 0 | Hello Bob", {})
        self.sender = EmailAddress("user1", "gmail.com")
        self.n = 0

    def step(self) -> float:
        """One mail's floor, in milliseconds."""
        self.n += 1
        t0 = time.perf_counter()
        raw = compose(self.request, self.sender).as_bytes()
        self.db.execute("PRAGMA synchronous = FULL")
        (row_id,) = self.db.execute(
            "INSERT INTO outbox (event_key, user_key, room, is_direct, recipients, subject, raw,"
            " state, created_at, updated_at) VALUES (?, 'u', 'r', 1, '{}', 'Note', ?, 'queued',"
            " 0, 0) RETURNING id",
            (f"floor:{self.n}", raw),
        ).fetchone()
        self.db.execute(
            "UPDATE outbox SET state = 'sending' WHERE id = ? AND state = 'queued'", (row_id,)
        )
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.db.execute("UPDATE outbox SET state = 'sent', raw = NULL WHERE id = ?", (row_id,))
        return (time.perf_counter() - t0) * 1000


async def baseline(rig: Rig, users: list[str], tokens: dict[str, str]) -> dict[str, float]:
    """The same concurrent scenario through the naive way (benchmarks/naive.py)."""
    latency = 0.25
    await rig.fake.set(gmail_latency=latency)
    naive = NaiveBot(rig.fake.api_endpoint, tokens)
    t0 = time.perf_counter()
    await asyncio.gather(*(naive.handle(u, "bob@example.com", "Hi", "Hello") for u in users))
    wall = time.perf_counter() - t0
    await rig.fake.set(gmail_latency=0.0)
    return {"baseline_concurrent_wall_s": wall, "baseline_concurrent_ratio": wall / latency}


async def seed_accounts(rig: Rig, n: int) -> None:
    """Fill the database with ``n`` linked accounts (for the memory figure)."""
    for i in range(n):
        await rig.core.accounts.save(
            f"telegram:9{i:08d}", f"seed{i}@gmail.com", f"1//seed-refresh-token-{i:08d}", ()
        )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def ready(tmp: Path, telegram_url: str, telegram_token: str, synapse: Any) -> float:
    """From process start to /healthz answering, with Telegram and Matrix configured."""
    bot_user = await synapse.register()
    port = free_port()
    config = tmp / "ready.toml"
    config.write_text(
        f"""
[bot]
database = "ready.db"
log_level = "warning"
[web]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
[telegram]
token = "{telegram_token}"
base_url = "{telegram_url}/bot"
[matrix]
homeserver = "{synapse.url}"
user_id = "{bot_user.user_id}"
password = "{bot_user.password}"
store_path = "ready-store"
"""
    )
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        runtime.mailbridge(),
        "run",
        "--config",
        str(config),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=runtime.env(),
    )
    try:
        async with aiohttp.ClientSession() as http:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                        if r.status == 200:
                            return time.perf_counter() - t0
                if proc.returncode is not None:
                    raise RuntimeError(f"mailbridge exited with {proc.returncode}")
                await asyncio.sleep(0.01)
    finally:
        proc.terminate()
        await proc.wait()


def python_info() -> str:
    return f"Python {sys.version.split()[0]}"


async def help_under_link_check(
    rig: Rig, user: str, per_second: float, n: int = 300, suffix: str = ""
) -> dict[str, float]:
    """/help asked as in ``help_idle`` while the link check refreshes the connected users'
    tokens at ``per_second`` (1: its default cap of 60 a minute)."""
    core = rig.core
    tokens = core.backend._tokens  # type: ignore[attr-defined]
    check = LinkCheck(core.ctx, tokens, core.link_health)
    links = len(await core.link_health.links())
    check.interval, check.min_gap = links / per_second, 1 / per_second
    before = len((await rig.fake.state())["token_requests"])
    check.start()
    t0 = time.perf_counter()
    try:
        samples: list[float] = []
        for _ in range(n):
            s0 = time.perf_counter()
            await core.handle(rig.message(user, "/help"))
            samples.append((time.perf_counter() - s0) * 1000)
            await asyncio.sleep(0.005)
    finally:
        await check.stop()
    wall = time.perf_counter() - t0
    made = len((await rig.fake.state())["token_requests"]) - before
    return {
        f"help_p99_ms_under_link_check{suffix}": percentile(samples, 99),
        f"link_check_requests_per_s{suffix}": made / wall,
    }
