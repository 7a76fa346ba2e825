"""Several instances on one PostgreSQL (issue 15): three ``mailbridge run`` processes behind a
round-robin HTTP proxy, Telegram in webhook mode (tests/instances.py)."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from bot.store.instances import BEAT, LAPSE
from tests.instances import Instances, instances
from tests.stack import until
from tests.test_crash import DRIVE_SECONDS, HELP, drive, outcomes

pytestmark = [pytest.mark.reliability, pytest.mark.postgres, pytest.mark.integration]


async def test_three_instances_share_the_work_and_each_mail_goes_once(
    tmp_path: Path, pg_url: str
) -> None:
    users = [3000 + n for n in range(6)]
    async with instances(tmp_path, pg_url) as s, aiohttp.ClientSession() as http:
        await s.connect(users, http)
        skip = {u: len(await s.telegram.sent(u)) for u in users}
        await asyncio.gather(
            *(s.telegram.user_sends(u, f"/mail bob@example.com Hi {u} | Body") for u in users)
        )
        await asyncio.gather(
            *(s.telegram.wait_for(u, rf"✅ Mail #\d+ to .*“Hi {u}”", skip[u]) for u in users)
        )
        stats = await s.proxy_stats()
        received = Counter(m["subject"] for m in await s.google.sent())
        assert await s.stop() == [0, 0, 0]
        logs = s.logs()
    answered = {key.split()[0] for key, n in stats.items() if key.endswith(" 200") and n}
    assert len(answered) == 3, stats  # every instance took requests
    assert received == Counter(f"Hi {u}" for u in users)
    assert "Traceback" not in logs


async def test_a_restart_leaves_alone_the_mail_another_instance_is_sending(
    tmp_path: Path, pg_url: str
) -> None:
    user = 5000
    async with instances(tmp_path, pg_url) as s, aiohttp.ClientSession() as http:
        await s.connect([user], http)
        skip = len(await s.telegram.sent(user))
        await s.google.set(gmail_latency=4.0)  # Gmail takes the mail at once, answers in 4 s
        before = await s.proxy_stats()
        await s.telegram.user_sends(user, "/mail bob@example.com Slow | Body")

        async def gmail_has_it() -> bool:
            return any(m["subject"] == "Slow" for m in await s.google.sent())

        await until(gmail_has_it)
        after = await s.proxy_stats()
        taker = next(
            k.split()[0] for k in after if k.endswith(" 200") and after[k] > before.get(k, 0)
        )
        others = [i for i, bot in enumerate(s.bots) if not bot.base_url.endswith(f":{taker}")]
        assert len(others) == 2
        await asyncio.gather(*(s.restart(i) for i in others))  # while the taker waits on Gmail
        await s.telegram.wait_for(user, r"Mail #\d+ to .*“Slow”", skip, 30)
        await s.telegram.user_sends(user, "/help")  # anything told twice comes before its answer
        await s.telegram.wait_for(user, HELP, skip, 30)
        said = [m["text"] for m in (await s.telegram.sent(user))[skip:]]
        assert await s.stop() == [0, 0, 0]
    outcomes_told = [t for t in said if "“Slow”" in t]
    assert len(outcomes_told) == 1, outcomes_told
    assert outcomes_told[0].startswith("✅ Mail #"), outcomes_told


async def test_three_instances_together_keep_to_telegram_s_send_limits(
    tmp_path: Path, pg_url: str
) -> None:
    user = 5100
    async with instances(tmp_path, pg_url) as s, aiohttp.ClientSession() as http:
        await s.connect([user], http)
        skip = len(await s.telegram.sent(user))
        await s.telegram.inject(enforce_limits=True)  # 429 past 1/s to a chat or 30/s overall
        for n in range(6):  # the round-robin hands them to the three instances in turn
            await s.telegram.user_sends(user, f"/mail bob@example.com Q{n} | Body")
        for n in range(6):
            await s.telegram.wait_for(user, rf"✅ Mail #\d+ to .*“Q{n}”", skip, 60)
        calls = await s.telegram.calls()
        assert await s.stop() == [0, 0, 0]
    refused = {call: n for call, n in calls.items() if not call.endswith(" 200")}
    assert refused == {}  # not one 429: the bot kept to Telegram's limits


async def test_an_update_whose_instance_died_mid_handling_is_handled_by_another(
    tmp_path: Path, pg_url: str
) -> None:
    user = 5200
    async with instances(tmp_path, pg_url) as s:
        await s.telegram.user_sends(user, "/help")
        await s.telegram.wait_for(user, HELP)
        # The next answer waits 3 s on a 429: its update is claimed, handled, not yet answered.
        await s.telegram.inject(status=429, count=1, retry_after=3, methods=["sendMessage"])
        await s.telegram.user_sends(user, "/status")

        async def refused_once() -> bool:
            return (await s.telegram.calls()).get("sendMessage 429", 0) == 1

        await until(refused_once)
        stats = await s.proxy_stats()
        holder = next(
            i for i, b in enumerate(s.bots) if stats.get(f"{b.base_url.rsplit(':', 1)[1]} open")
        )
        await s.bots[holder].kill()  # mid-handling: Telegram gets no answer, delivers it again
        await s.telegram.wait_for(user, "No Gmail is connected", 1, timeout=30)  # answered
        await s.bots[holder].start(timeout=60)
        assert await s.stop() == [0, 0, 0]


async def test_sigterm_while_an_instance_still_recovers_stops_it_cleanly(
    tmp_path: Path, pg_url: str
) -> None:
    user = 5300
    async with instances(tmp_path, pg_url, 1) as s, aiohttp.ClientSession() as http:
        await s.connect([user], http)
        await s.google.set(gmail_latency=30.0)  # Gmail takes the mail, then answers late
        await s.telegram.user_sends(user, "/mail bob@example.com Cut | Body")

        async def gmail_has_it() -> bool:
            return any(m["subject"] == "Cut" for m in await s.google.sent())

        await until(gmail_has_it)
        await s.bots[0].kill()  # mid-send: the mail is left 'sending', its outcome untold
        await asyncio.sleep(LAPSE + BEAT)  # its run lapses: the next start takes the mail over
        await s.telegram.inject(offline=True)  # so telling "maybe sent" waits at the start
        await s.bots[0].start(timeout=60)
        status = await s.bots[0].stop()  # as systemd stops it, while it recovers
        await s.telegram.inject(offline=False)
    assert status == 0, s.bots[0].logs()[-2000:]


USERS, PER_USER, KILLS = 30, 10, 10
SEEDS = [
    int(s) for s in os.environ.get("MAILBRIDGE_INSTANCES_SEEDS", "").split(",") if s.strip()
] or random.SystemRandom().sample(range(1, 10**6), 1)


async def chaos(s: Instances, rng: random.Random) -> list[int]:
    """SIGKILL a random instance at ``KILLS`` random moments of the drive; restart it at once."""
    t0, killed = time.monotonic(), []
    for moment in sorted(rng.uniform(0, DRIVE_SECONDS) for _ in range(KILLS)):
        await asyncio.sleep(max(0.0, t0 + moment - time.monotonic()))
        killed.append(rng.randrange(len(s.bots)))
        await s.restart(killed[-1])
    return killed


@pytest.mark.parametrize("seed", SEEDS)
async def test_sigkill_of_instances_ten_times_loses_no_mail_and_sends_none_twice(
    tmp_path: Path, pg_url: str, seed: int, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(seed)
    users = [1000 + n for n in range(USERS)]
    commands = [(user, f"c{n:03d}") for n, user in enumerate(users * PER_USER)]
    rng.shuffle(commands)
    limits = "sends_per_minute = 1000\nsends_per_day = 100000"
    async with (
        instances(tmp_path, pg_url, 3, limits) as s,
        aiohttp.ClientSession() as http,
    ):
        t0 = time.monotonic()
        await s.connect(users, http)
        t1 = time.monotonic()
        skip = {user: len(await s.telegram.sent(user)) for user in users}
        await s.google.set(gmail_latency=0.03)  # a send takes time, so kills land mid-send
        _, killed = await asyncio.gather(drive(s, commands, rng), chaos(s, rng))  # type: ignore[arg-type]
        t2 = time.monotonic()
        deadline = time.monotonic() + 60
        while len(told := await outcomes(s, users, skip)) < len(commands):  # type: ignore[arg-type]
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        t3 = time.monotonic()
        # Stopped only once up: SIGTERM to an instance still starting (its recovery telling a
        # lapsed run's outcomes at Telegram's pace) ends it by the signal (seen once: -15).
        await s.ready()
        # Anything told twice comes before the answer to a /help sent now, in each chat.
        await asyncio.gather(*(s.telegram.user_sends(user, "/help") for user in users))
        await asyncio.gather(*(s.telegram.wait_for(u, HELP, skip[u], 60) for u in users))
        told = await outcomes(s, users, skip)  # type: ignore[arg-type]
        received = Counter(m["subject"] for m in await s.google.sent())
        stats = await s.proxy_stats()
        statuses = await s.stop()
        logs = s.logs()

    without = sorted({subject for _, subject in commands} - told.keys())
    duplicates = sum(n - 1 for n in received.values())
    firsts = {subject: said[0].removesuffix(" again") for subject, said in told.items()}
    kinds = Counter(firsts.values())
    told_again = sum(len(said) - 1 for said in told.values())
    wrong = {
        subject: said
        for subject, said in told.items()
        if said.count(firsts[subject]) > 1  # told twice, not as a repeat
        or any(s.removesuffix(" again") != firsts[subject] for s in said)  # two outcomes
    }
    per_instance = {key.split()[0] for key, n in stats.items() if key.endswith(" 200") and n}
    with capsys.disabled():
        print(
            f"\ninstances crash seed={seed}: commands={len(commands)} kills={len(killed)} "
            f"(instances {killed}) mails_received={sum(received.values())} "
            f"duplicates={duplicates} without_outcome={len(without)} told_again={told_again} "
            f"sent={kinds['sent']} unknown={kinds['unknown']} failed={kinds['failed']} "
            f"proxy={dict(sorted(stats.items()))}; seconds: connect {t1 - t0:.1f}, "
            f"drive {t2 - t1:.1f}, settle {t3 - t2:.1f}"
        )
    assert duplicates == 0, [subject for subject, n in received.items() if n > 1]
    lost = [subject for subject in without if subject not in received]
    assert lost == without, f"no outcome told for mail Gmail took: {without}"
    assert told_again <= len(killed) * 8, told_again  # at most the tells cut by each kill
    assert kinds["failed"] == 0  # nothing failed here: Gmail said yes or the bot was killed
    for subject in received:  # whatever Gmail took was confirmed or reported unknown
        assert firsts[subject] in ("sent", "unknown"), (subject, told[subject])
    for subject, said in told.items():  # never "sent" for a mail Gmail did not take
        assert "sent" not in said or subject in received, subject
    assert len(per_instance) == 3  # the proxy spread the work
    assert statuses == [0, 0, 0]
    assert "Traceback" not in logs
    assert wrong == {}, f"outcomes told twice or disagreeing: {wrong}"
    assert without == [], f"no outcome told for {without}"  # none dropped


@pytest.mark.parametrize(
    ("per_minute", "per_day", "refusal"),
    [(5, 100, "mails in the last minute"), (100, 7, "mails in the last 24 hours")],
)
async def test_a_burst_from_one_user_over_three_instances_keeps_to_the_user_s_limits(
    tmp_path: Path, pg_url: str, per_minute: int, per_day: int, refusal: str
) -> None:
    # Telegram has one update of a chat in flight at a time, so the burst comes from the
    # user's private chat and five groups at once: six /mail on the three instances together.
    user, groups, per_chat = 4000, [-1004001 - n for n in range(5)], 4
    chats = [None, *groups]
    limit = min(per_minute, per_day)
    limits = f"sends_per_minute = {per_minute}\nsends_per_day = {per_day}"
    async with instances(tmp_path, pg_url, 3, limits) as s, aiohttp.ClientSession() as http:
        await s.connect([user], http)
        before = len(await s.telegram.sent())
        await asyncio.gather(
            *(
                s.telegram.user_sends(user, f"/mail bob@example.com B{n}{c} | Body", chat)
                for n in range(per_chat)
                for c, chat in enumerate(chats)
            )
        )
        total = per_chat * len(chats)

        async def everyone_answered() -> bool:
            said = (await s.telegram.sent())[before:]
            sent = [m for m in said if m["text"].startswith("✅ Mail #")]
            return len(sent) + sum(refusal in m["text"] for m in said) >= total

        await until(everyone_answered, 60)
        said = [m["text"] for m in (await s.telegram.sent())[before:]]
        received = Counter(m["subject"] for m in await s.google.sent())
        stats = await s.proxy_stats()
        assert await s.stop() == [0, 0, 0]
        logs = s.logs()
    webhooks = {k.split()[0] for k, n in stats.items() if k.endswith(" 200") and n}
    assert len(webhooks) == 3, stats
    assert sum(received.values()) == limit, received  # Gmail got exactly the limit, no more
    assert max(received.values()) == 1
    assert sum(refusal in t for t in said) == total - limit, said
    assert sum(t.startswith("✅ Mail #") for t in said) == limit, said
    assert "Traceback" not in logs
