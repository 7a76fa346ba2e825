"""Crash: 300 /mail commands from 30 Telegram users while mailbridge is killed with SIGKILL and
restarted at 10 random moments. The Bot API fake, the Google fake and the bot each run as a
separate process. Seeds are random unless MAILBRIDGE_CRASH_SEEDS=1,2,3 names them; each run
prints its seed, so a failure can be replayed."""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from bot.wording import REPEAT
from tests.stack import Stack, stack

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

USERS, PER_USER, KILLS = 30, 10, 10
DRIVE_SECONDS = 20.0  # the commands are spread over this long
SEEDS = [
    int(s) for s in os.environ.get("MAILBRIDGE_CRASH_SEEDS", "").split(",") if s.strip()
] or random.SystemRandom().sample(range(1, 10**6), 3)
OUTCOME = re.compile(r"^(✅ Mail|❌ Not sent: mail|⚠️ Maybe sent: mail) #\d+ to .*?“(c\d{3})”")
HELP = "/help - this list"
KIND = {"✅ Mail": "sent", "❌ Not sent: mail": "failed", "⚠️ Maybe sent: mail": "unknown"}


async def drive(s: Stack, commands: list[tuple[int, str]], rng: random.Random) -> None:
    gap = DRIVE_SECONDS / len(commands)
    for user, subject in commands:
        await s.telegram.user_sends(
            user, f"/mail bob{user}@example.com {subject} | Body {subject}"
        )
        await asyncio.sleep(rng.expovariate(1 / gap))


async def chaos(s: Stack, rng: random.Random) -> int:
    """Kill the bot at ``KILLS`` random moments of the drive; restart it at once each time."""
    t0 = time.monotonic()
    for moment in sorted(rng.uniform(0, DRIVE_SECONDS) for _ in range(KILLS)):
        await asyncio.sleep(max(0.0, t0 + moment - time.monotonic()))
        await s.bot.kill()
        await s.bot.start()
    return KILLS


async def outcomes(s: Stack, users: list[int], skip: dict[int, int]) -> dict[str, list[str]]:
    """Every outcome told, by subject; any other message after connecting fails the test."""
    told: dict[str, list[str]] = {}
    for user in users:
        for message in (await s.telegram.sent(user))[skip[user] :]:
            if HELP in message["text"]:
                continue  # the /help sent after the drive, to see that nothing more comes
            m = OUTCOME.match(message["text"])
            assert m, f"user {user} was told something else: {message['text']!r}"
            repeat = message["text"].endswith(REPEAT)
            told.setdefault(m.group(2), []).append(KIND[m.group(1)] + " again" * repeat)
    return told


@pytest.mark.parametrize("seed", SEEDS)
async def test_sigkill_ten_times_loses_no_mail_and_sends_none_twice(
    tmp_path: Path, seed: int, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(seed)
    users = [1000 + n for n in range(USERS)]
    commands = [(user, f"c{n:03d}") for n, user in enumerate(users * PER_USER)]
    rng.shuffle(commands)
    limits = "sends_per_minute = 1000\nsends_per_day = 100000"
    async with stack(tmp_path, limits) as s, aiohttp.ClientSession() as http:
        t0 = time.monotonic()
        await s.connect(users, http)
        t1 = time.monotonic()
        skip = {user: len(await s.telegram.sent(user)) for user in users}
        await s.google.set(gmail_latency=0.03)  # a send takes time, so kills land mid-send
        _, kills = await asyncio.gather(drive(s, commands, rng), chaos(s, rng))
        t2 = time.monotonic()

        deadline = time.monotonic() + 60
        while len(told := await outcomes(s, users, skip)) < len(commands):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        t3 = time.monotonic()
        # Anything told twice comes before the answer to a /help sent now, in each chat.
        await asyncio.gather(*(s.telegram.user_sends(user, "/help") for user in users))
        await asyncio.gather(*(s.telegram.wait_for(u, HELP, skip[u], 60) for u in users))
        told = await outcomes(s, users, skip)
        received = Counter(m["subject"] for m in await s.google.sent())
        assert await s.bot.stop() == 0
        logs = s.bot.logs()

    without = sorted({subject for _, subject in commands} - told.keys())
    duplicates = sum(n - 1 for n in received.values())
    # Telling is at least once (no chat network takes an idempotency key): a kill while the bot
    # tells an outcome makes it tell that outcome again after the restart, marked as a repeat.
    firsts = {subject: said[0].removesuffix(" again") for subject, said in told.items()}
    kinds = Counter(firsts.values())
    told_again = sum(len(said) - 1 for said in told.values())
    wrong = {
        subject: said
        for subject, said in told.items()
        if said.count(firsts[subject]) > 1  # told twice, not as a repeat
        or any(s.removesuffix(" again") != firsts[subject] for s in said)  # told two outcomes
    }
    with capsys.disabled():
        print(
            f"\ncrash seed={seed}: commands={len(commands)} kills={kills} "
            f"restarts={s.bot.starts - 1} mails_received={sum(received.values())} "
            f"duplicates={duplicates} without_outcome={len(without)} "
            f"told_again={told_again} sent={kinds['sent']} unknown={kinds['unknown']} "
            f"failed={kinds['failed']}; seconds: connect {t1 - t0:.1f}, drive {t2 - t1:.1f}, "
            f"settle {t3 - t2:.1f}"
        )
    assert duplicates == 0, [subject for subject, n in received.items() if n > 1]
    assert without == [], f"no outcome told for {without}"
    assert wrong == {}, f"outcomes told twice or disagreeing: {wrong}"
    assert told_again <= kills * 8, told_again  # at most the tells cut by each kill
    assert kinds["failed"] == 0  # nothing failed here: Gmail said yes or the bot was killed
    for subject in received:  # whatever Gmail took was confirmed or reported unknown
        assert firsts[subject] in ("sent", "unknown"), (subject, told[subject])
    for subject, first in firsts.items():  # never "sent" for a mail Gmail did not take
        assert first != "sent" or subject in received, subject
    assert "Traceback" not in logs
