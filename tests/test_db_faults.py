"""A database that fails during a delivery (here: locked by another connection for longer than
the bot's busy timeout) delays the mail; it is still sent once and its owner told once."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import sqlite3
import time
from pathlib import Path

import pytest

from tests.gmail_rig import connect, gmail_config, start_gmail_rig
from tests.google_fake import GoogleFake
from tests.stack import until

pytestmark = pytest.mark.integration
OUTCOME = re.compile(r"sent from|Not sent|Maybe sent")


async def tick(ticks: list[float]) -> None:
    """Note the time every 50 ms, for as long as the event loop lets this run."""
    while True:
        await asyncio.sleep(0.05)
        ticks.append(time.monotonic())


async def locked_out(caplog: pytest.LogCaptureFixture, ceiling: float = 15.0) -> None:
    """Wait until the bot has logged a write refused by the lock (after its 5 s busy timeout),
    or at most ``ceiling`` seconds (code that does not log it still meets the lock)."""

    async def refused() -> bool:
        return any(
            "database is locked" in f"{r.getMessage()} {r.exc_info and r.exc_info[1]}"
            for r in caplog.records
        )

    with contextlib.suppress(AssertionError):
        await until(refused, ceiling)


@pytest.mark.parametrize("when", ["waiting-to-leave", "at-gmail"])
async def test_a_locked_database_delays_a_mail_but_never_strands_it(
    tmp_path: Path, google_fake: GoogleFake, caplog: pytest.LogCaptureFixture, when: str
) -> None:
    # Either the mail waits out its undo window when the lock comes (its claim, a write, hits
    # it), or Gmail has taken it and is slow to answer (recording the outcome hits it).
    undo = 2 if when == "waiting-to-leave" else 0
    config = gmail_config(tmp_path, google_fake, mail={"confirm": "never", "undo_seconds": undo})
    caplog.set_level(logging.WARNING, logger="bot")
    async for rig in start_gmail_rig(config, google_fake):
        await connect(rig)
        start = len(rig.chat.replies)
        if when == "at-gmail":
            google_fake.gmail_latency = 1.0
        await rig.say("/mail bob@example.com Locked out | Still arrives")
        if when == "at-gmail":

            async def taken() -> bool:
                return bool(google_fake.sent)

            await until(taken)
        else:
            await rig.wait("goes out in", start)
        holder = sqlite3.connect(config.bot.database, timeout=10, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        ticks = [time.monotonic()]
        ticker = asyncio.create_task(tick(ticks))
        try:
            await locked_out(caplog)
        finally:
            ticker.cancel()
            holder.execute("ROLLBACK")
            holder.close()
        # The bot waited for the lock without stopping its event loop (statements run on the
        # loop's thread; one that meets a lock waits in a worker thread): a stopped loop shows
        # as a gap of the busy timeout, 5 s, between ticks.
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        assert max(gaps) < 1.0, max(gaps)
        said = await rig.wait("sent from", start, timeout=30)
        assert said.text.startswith("✅ Mail #1 to bob@example.com")
        await rig.core.outbox.drain()
        told = [s.text for s in rig.chat.replies[start:] if OUTCOME.search(s.text)]
        assert told == [said.text]
        assert [m.subject for m in google_fake.sent] == ["Locked out"]
    with sqlite3.connect(config.bot.database) as db:
        assert db.execute("SELECT state, told FROM outbox").fetchall() == [("sent", 1)]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
