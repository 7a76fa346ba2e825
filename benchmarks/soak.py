"""``python -m benchmarks.soak [--minutes 10] [--rate 10]``: the bot under steady load, and its
memory.

The Bot API fake, the Google fake and ``mailbridge run`` each run as a separate process (see
``tests/stack.py``). Telegram users send a steady mix of /help, /status and /mail (a third are
mails, from 50 connected users) at ``--rate`` commands per second; the bot's resident memory is
read from /proc every 5 s. The first fifth of the run is warm-up; growth is the last sample
against the first one after warm-up. Exit status 1 if memory grew 10 % or more, or if commands
went unanswered.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bot import logs
from tests.stack import Stack, stack

SAMPLE_EVERY = 5.0
GROWTH_LIMIT = 0.10


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def drive(s: Stack, seconds: float, rate: float, mailers: list[int]) -> int:
    """Send commands at ``rate`` per second for ``seconds``; return how many were sent."""
    chatters = itertools.cycle(range(30_000, 30_000 + 600))  # one reply a second per chat at most
    mailer = itertools.cycle(mailers)
    start, n = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        if n % 3 == 2:
            user = next(mailer)
            text = f"/mail bob@example.com Soak {n} | Body {n}"
        else:
            user = next(chatters)
            text = "/help" if n % 3 == 0 else "/status"
        await s.telegram.user_sends(user, text)
        n += 1
        await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
    return n


async def sample(pid: int, samples: list[tuple[float, float]], t0: float) -> None:
    while True:
        samples.append((time.monotonic() - t0, rss_mb(pid)))
        await asyncio.sleep(SAMPLE_EVERY)


async def run(minutes: float, rate: float) -> int:
    seconds = minutes * 60
    with tempfile.TemporaryDirectory(prefix="mailbridge-soak-") as tmp:
        limits = "sends_per_minute = 1000\nsends_per_day = 1000000"
        async with stack(Path(tmp), limits) as s, aiohttp.ClientSession() as http:
            mailers = list(range(40_000, 40_050))
            await s.connect(mailers, http)
            assert s.bot.proc is not None
            samples: list[tuple[float, float]] = []
            t0 = time.monotonic()
            sampler = asyncio.create_task(sample(s.bot.proc.pid, samples, t0))
            sent = await drive(s, seconds, rate, mailers)
            await asyncio.sleep(10)  # the last answers
            sampler.cancel()
            answered = len(await s.telegram.sent()) - 2 * len(mailers)
            mails = len(await s.google.sent())
            await s.bot.stop()
    warm = next(mb for at, mb in samples if at >= seconds / 5)
    last = samples[-1][1]
    growth = (last - warm) / warm
    print(f"soak: {minutes:g} min at {rate:g} commands/s; {sent} commands, {answered} answers")
    print(f"soak: {mails} mails sent through the Google fake")
    print("soak: RSS MB every minute: " + " ".join(f"{mb:.1f}" for at, mb in samples[::12]))
    print(
        f"soak: RSS after warm-up {warm:.1f} MB, at the end {last:.1f} MB, "
        f"peak {max(mb for _, mb in samples):.1f} MB; growth {growth:+.1%} (limit +10%)"
    )
    ok = growth < GROWTH_LIMIT and answered == sent
    if answered != sent:
        print(f"soak: {sent - answered} commands were not answered", file=sys.stderr)
    return 0 if ok else 1


def main() -> int:
    logs.setup("warning")
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=10.0, help="commands per second")
    args = parser.parse_args()
    return asyncio.run(run(args.minutes, args.rate))


if __name__ == "__main__":
    sys.exit(main())
