"""Several instances on one PostgreSQL, in one test process: two ``App.open`` on the same URL
are two instances (each its own run, pool, heartbeat and lease connection), chatting through
ChatKit adapters. What one instance does, the other must see and never repeat."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from sqlalchemy.engine import make_url

from bot.app import App
from bot.chat import Handler
from bot.store.instances import LAPSE, LEASE_TTL, Instances
from bot.store.outbox_rows import NewRow, OutboxRows
from tests.chatkit import LOGIN_LINK, ChatKit, Said
from tests.conftest import make_config
from tests.gmail_rig import gmail_config
from tests.google_fake import GoogleFake
from tests.running import bot_config, web_section
from tests.telegram_fake import TelegramFake

TAKEOVER = 10.0  # seconds: issue 15's bound for a standby to take over


class SoloKit(ChatKit):
    """A network with one consumer (like Matrix's sync): counts who runs its intake."""

    single_consumer = True

    def __init__(self, tally: dict[str, int], platform: str = "telegram") -> None:
        super().__init__(platform)
        self.tally = tally  # shared by the instances: how many run the intake now, at most
        self.running = asyncio.Event()
        self.stopped = asyncio.Event()

    async def run(self, handler: Handler) -> None:
        self.tally["now"] += 1
        self.tally["most"] = max(self.tally["most"], self.tally["now"])
        self.running.set()
        try:
            await super().run(handler)
        finally:
            self.tally["now"] -= 1
            self.stopped.set()


def pg_config(tmp_path: Path, pg_url: str, **bot: Any) -> Any:
    bot = {"database": pg_url, "data_key_file": str(tmp_path / "data.key"), **bot}
    return make_config(tmp_path, bot=bot)


def dsn(pg_url: str) -> str:
    return make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)


@asynccontextmanager
async def instances(cfg: Any, *kits: ChatKit) -> AsyncIterator[list[App]]:
    async with AsyncExitStack() as stack:
        apps = [
            await stack.enter_async_context(App.open(cfg, [kit], serve_web=False, env={}))
            for kit in kits
        ]
        yield apps


async def ask(pg_url: str, statement: str, *args: Any) -> Any:
    """Run one statement in a session of its own (not an instance's); return its first row."""
    conn = await asyncpg.connect(dsn(pg_url))
    try:
        return await conn.fetchrow(statement, *args)
    finally:
        await conn.close()


async def cut_off(pg_url: str, app: App) -> None:
    """End ``app``'s lease session from the server's side, as when its process dies."""
    pid = app.leadership.keeper.backend_pid
    assert (await ask(pg_url, "SELECT pg_terminate_backend($1)", pid))[0]


async def lease_row(pg_url: str, name: str) -> tuple[str, int, float] | None:
    row = await ask(pg_url, "SELECT holder, epoch, expires_at FROM leases WHERE name = $1", name)
    return None if row is None else (str(row[0]), int(row[1]), float(row[2]))


async def renewed(pg_url: str, name: str, until: float) -> tuple[str, int, float]:
    """Wait until lease ``name`` is renewed to last past ``until``; return its row."""
    async with asyncio.timeout(TAKEOVER):
        while True:
            row = await lease_row(pg_url, name)
            if row is not None and row[2] >= until:
                return row
            await asyncio.sleep(0.1)  # the row changes with no event to wait for


async def test_a_standby_takes_the_intake_over_within_10_s_of_the_leaders_death(
    tmp_path: Path, pg_url: str
) -> None:
    tally = {"now": 0, "most": 0}
    kit_a, kit_b = SoloKit(tally), SoloKit(tally)
    cfg = pg_config(tmp_path, pg_url)
    async with instances(cfg, kit_a, kit_b) as (a, b):
        assert a.leadership is not None
        run_a = asyncio.create_task(a.run())
        await asyncio.wait_for(kit_a.running.wait(), TAKEOVER)
        run_b = asyncio.create_task(b.run())
        # B stands by while A renews its lease (twice over, so B tried meanwhile).
        first = await lease_row(pg_url, "intake:telegram")
        assert first is not None
        assert first[0] == a.core.run
        row = await renewed(pg_url, "intake:telegram", first[2] + 2)
        assert row[:2] == first[:2]
        assert not kit_b.running.is_set()

        # A dies: its lease connection is cut and it does nothing more (as after SIGKILL).
        await cut_off(pg_url, a)
        killed = time.monotonic()
        run_a.cancel()
        await asyncio.gather(run_a, return_exceptions=True)
        await asyncio.wait_for(kit_b.running.wait(), TAKEOVER)
        took = time.monotonic() - killed
        assert kit_a.stopped.is_set()
        assert took < TAKEOVER, took
        now = await lease_row(pg_url, "intake:telegram")
        assert now is not None
        assert now[:2] == (b.core.run, first[1] + 1)
        assert tally["most"] == 1  # never two consumers at once
        run_b.cancel()
        await asyncio.gather(run_b, return_exceptions=True)
    print(f"takeover after the leader's death: {took:.2f} s")


async def test_a_clean_stop_hands_the_intake_over_at_once(tmp_path: Path, pg_url: str) -> None:
    tally = {"now": 0, "most": 0}
    kit_a, kit_b = SoloKit(tally), SoloKit(tally)
    cfg = pg_config(tmp_path, pg_url)
    async with instances(cfg, kit_b) as (b,):
        async with instances(cfg, kit_a) as (a,):
            run_a = asyncio.create_task(a.run())
            await asyncio.wait_for(kit_a.running.wait(), TAKEOVER)
            run_b = asyncio.create_task(b.run())
            run_a.cancel()  # a stop: the lease is given up, not left to run out
            await asyncio.gather(run_a, return_exceptions=True)
            stopped = time.monotonic()
        await asyncio.wait_for(kit_b.running.wait(), TAKEOVER)
        took = time.monotonic() - stopped
        assert took < LAPSE / 2, took  # no wait for the lease to end: a renewal period or so
        assert tally["most"] == 1
        run_b.cancel()
        await asyncio.gather(run_b, return_exceptions=True)


# --- mail across instances ----------------------------------------------------------------


class Clock:
    """A wall clock that moves only when the test says (due times of scheduled mail)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sent(said: Said) -> bool:
    return "not sent (trial mode)" in said.text


def mail_files(cfg: Any) -> list[Path]:
    return sorted(cfg.mail.outbox_dir.glob("*.eml")) if cfg.mail.outbox_dir.exists() else []


async def age(pg_url: str, run: str, seconds: float) -> None:
    """Make ``run``'s last heartbeat ``seconds`` old (as if it had stopped beating then)."""
    await ask(
        pg_url, "UPDATE instances SET beat_at = $1 WHERE run = $2", time.time() - seconds, run
    )


async def test_a_lapsed_runs_mail_in_flight_turns_unknown_told_once_a_live_ones_untouched(
    tmp_path: Path, pg_url: str
) -> None:
    cfg = pg_config(tmp_path, pg_url)
    kit_a, kit_b = ChatKit(), ChatKit()
    async with instances(cfg, kit_a, kit_b) as (a, b):
        # Two other runs were each sending a mail: "gone" stopped beating, "busy" beats on.
        ids = {}
        for run in ("gone", "busy"):
            await Instances(a.db, run).beat()
            rows = OutboxRows(a.db, run)
            new = NewRow(f"telegram:{run}", "telegram:1001", "dm-1001", True, RECIPIENTS, run, b"")
            row = await rows.insert(new, (99, 99), time.time())
            assert row is not None
            assert await rows.claim(row.id) is not None
            ids[run] = row.id
        for app in (a, b):
            await looked(app)
        assert [await state(a, i) for i in ids.values()] == ["sending", "sending"]  # both live

        await age(pg_url, "gone", LAPSE + 1)  # its heartbeat lapses
        await asyncio.gather(looked(a), looked(b))  # both look at once
        await asyncio.gather(looked(a), looked(b))  # and again
        assert await state(a, ids["gone"]) == "unknown"
        assert await state(a, ids["busy"]) == "sending"  # a live instance's: never touched
        told = [s for s in kit_a.replies + kit_b.replies if f"#{ids['gone']}" in s.text]
        assert len(told) == 1, told
        assert told[0].text.startswith("⚠️ Maybe sent: mail #1")
        assert not any(f"#{ids['busy']}" in s.text for s in kit_a.replies + kit_b.replies)


async def test_a_mail_due_later_accepted_on_a_is_sent_once_by_b_after_a_is_gone(
    tmp_path: Path, pg_url: str
) -> None:
    cfg = pg_config(tmp_path, pg_url)
    start = time.time()
    clock_a, clock_b = Clock(start), Clock(start)
    kit_a, kit_b = ChatKit(), ChatKit()
    async with App.open(cfg, [kit_b], serve_web=False, env={}, clock=clock_b) as b:
        with contextlib.suppress(Crash):
            async with App.open(cfg, [kit_a], serve_web=False, env={}, clock=clock_a) as a:
                await a.core.handle(kit_a.message("/mail at:+2m bob@example.com Later | x"))
                assert "goes out" in kit_a.replies[-1].text
                await looked(b)
                row = await a.core.outbox.rows.get(1)
                assert row is not None
                assert row.state == "queued"
                assert await owner(b, 1) == a.core.run  # A lives: B leaves A's mail alone
                await a.core.outbox.scheduler.close()  # A dies: it never sends it
                gone = time.monotonic()
                raise Crash
        # B takes it over once A's heartbeat lapsed, and sends it at its time, once.
        async with asyncio.timeout(3 * LAPSE):
            while await owner(b, 1) != b.core.run:
                await looked(b)
        took = time.monotonic() - gone
        assert LAPSE - 1 < took < LAPSE + 6, took
        clock_b.now = start + 121
        await b.core.outbox.scheduler.looked()
        said = await kit_b.wait_for(sent)
        assert said.room == "dm-1001"
        await b.core.outbox.drain()
        await looked(b)
        assert len(mail_files(cfg)) == 1
        assert not any(sent(s) for s in kit_a.replies)
    print(f"a lapsed instance's scheduled mail taken over after {took:.1f} s")


async def test_one_event_delivered_to_two_instances_is_handled_once(
    tmp_path: Path, pg_url: str
) -> None:
    cfg = pg_config(tmp_path, pg_url)
    kit_a, kit_b = ChatKit(), ChatKit()
    async with instances(cfg, kit_a, kit_b) as (a, b):
        # At once, on both (a webhook redelivered to another instance behind the balancer).
        message = kit_a.message("/help", event_key="tg-1")
        await asyncio.gather(a.core.handle(message), b.core.handle(message))
        assert len(kit_a.replies) + len(kit_b.replies) == 1
        # Redelivered to B while A still handles it: B waits, and A's answer is the one.
        slow = kit_a.message("/help", event_key="tg-2")
        assert await a.core.claims.claim("telegram:tg-2")
        waiting = asyncio.create_task(b.core.handle(slow))
        await a.core.claims.done("telegram:tg-2")  # A finished it (its answer went out)
        await asyncio.wait_for(waiting, LAPSE)
        assert len(kit_a.replies) + len(kit_b.replies) == 1
        # Redelivered to B while A handles it, and A dies: B takes it over once A lapsed.
        cut = kit_a.message("/help", event_key="tg-3")
        assert await a.core.claims.claim("telegram:tg-3")
        waiting = asyncio.create_task(b.core.handle(cut))
        assert a.heartbeat is not None
        await a.heartbeat.pause()  # A stops beating
        await age(pg_url, a.core.run, LAPSE + 1)
        await asyncio.wait_for(waiting, LAPSE)
        assert len(kit_b.replies) + len(kit_a.replies) == 2
        # A mail delivered to both: one mail, one confirmation.
        await a.heartbeat.start()  # A is back
        mail = kit_a.message("/mail bob@example.com Once | x", event_key="tg-4")
        await asyncio.gather(a.core.handle(mail), b.core.handle(mail))
        await asyncio.gather(a.core.outbox.drain(), b.core.outbox.drain())
        assert len(mail_files(cfg)) == 1
        assert sum(sent(s) for s in kit_a.replies + kit_b.replies) == 1


async def test_a_burst_from_one_user_over_two_instances_keeps_the_limit(
    tmp_path: Path, pg_url: str
) -> None:
    cfg = pg_config(tmp_path, pg_url, sends_per_minute=LIMIT)
    kit_a, kit_b = ChatKit(), ChatKit()
    async with instances(cfg, kit_a, kit_b) as (a, b):
        burst = [
            (a if n % 2 else b).core.handle(kit_a.message(f"/mail bob@example.com B{n} | x"))
            for n in range(24)
        ]
        await asyncio.gather(*burst)
        await asyncio.gather(a.core.outbox.drain(), b.core.outbox.drain())
        assert len(mail_files(cfg)) == LIMIT
        refused = [s for s in kit_a.replies + kit_b.replies if not sent(s)]
        assert len(refused) == 24 - LIMIT
        assert {s.text for s in refused} == {
            f"You have sent {LIMIT} mails in the last minute, the most allowed here."
            " Wait a minute and send again."
        }
        assert kit_a.replies
        assert kit_b.replies


class Crash(Exception):
    """An instance's end without its clean stop."""


RECIPIENTS = {"to": ["bob@example.com"], "cc": [], "bcc": []}
LIMIT = 5


async def looked(app: App) -> None:
    assert app.heartbeat is not None
    await app.heartbeat.looked()


async def state(app: App, row_id: int) -> str:
    row = await app.core.outbox.rows.get(row_id)
    assert row is not None
    return row.state


async def owner(app: App, row_id: int) -> str:
    rows = await app.db.fetchall("SELECT run FROM outbox WHERE id = ?", (row_id,))
    return str(rows[0][0])


async def test_connect_on_one_instance_and_the_callback_on_the_other(
    tmp_path: Path, pg_url: str, google_fake: GoogleFake
) -> None:
    # Behind one public address (the balancer): the consent's callback may reach either.
    front, other = web_section(), web_section()
    shared = {"database": pg_url, "data_key_file": str(tmp_path / "data.key")}
    cfg_a = gmail_config(tmp_path, google_fake, bot=shared, web=front)
    cfg_b = gmail_config(
        tmp_path, google_fake, bot=shared, web={**other, "public_url": front["public_url"]}
    )
    kit_a, kit_b = ChatKit(), ChatKit()
    async with (
        App.open(cfg_a, [kit_a], env={}) as a,
        App.open(cfg_b, [kit_b], env={}),
    ):
        google_fake.add_account("alice@gmail.com")
        google_fake.next_account = "alice@gmail.com"
        google_fake.auto_consent = "allow"
        await a.core.handle(kit_a.message("/connect"))
        match = LOGIN_LINK.search(kit_a.replies[-1].text)
        assert match, kit_a.replies[-1].text
        async with aiohttp.ClientSession() as http:
            async with http.get(match.group(0)) as page:  # served by A
                assert page.status == 200
            async with http.post(match.group(0), allow_redirects=False) as to_google:
                assert to_google.status in (302, 303)
                google = to_google.headers["Location"]
            async with http.get(google, allow_redirects=False) as back:
                assert back.status == 302
                callback = back.headers["Location"]
            assert callback.startswith(front["public_url"] + "/oauth/callback?")
            on_b = "http://" + cfg_b.web.listen + callback.removeprefix(front["public_url"])
            async with http.get(on_b) as done:  # the balancer sent it to B
                assert done.status == 200, await done.text()
        said = await kit_b.wait_for(lambda s: "Gmail connected as alice@gmail.com" in s.text)
        assert said.room == "dm-1001"
        # A, which never saw the callback, sends from the link B stored.
        await a.core.handle(kit_a.message("/mail bob@example.com Linked | via B"))
        await a.core.outbox.drain()
        [mail] = await google_fake.wait_for_mail(1)
        assert "alice@gmail.com" in mail.as_json()["from"]


async def test_a_lapsed_runs_matrix_mail_is_taken_over_by_the_matrix_leader_only(
    tmp_path: Path, pg_url: str
) -> None:
    tally = {"now": 0, "most": 0}
    kit_a, kit_b = SoloKit(tally, "matrix"), SoloKit(tally, "matrix")
    cfg = pg_config(tmp_path, pg_url)
    async with instances(cfg, kit_a, kit_b) as (a, b):
        rows = OutboxRows(a.db, "gone")
        new = NewRow("matrix:$ev", "matrix:@al:hs", "!dm:hs", True, RECIPIENTS, "M", b"")
        row = await rows.insert(new, (99, 99), time.time())
        assert row is not None
        assert await rows.claim(row.id) is not None  # "gone" never beat: lapsed
        # Nobody runs Matrix's sync yet, so nobody can tell its owner: both leave it.
        await asyncio.gather(looked(a), looked(b))
        assert await state(b, row.id) == "sending"
        run_a = asyncio.create_task(a.run())
        await asyncio.wait_for(kit_a.running.wait(), TAKEOVER)  # A leads the sync
        said = await kit_a.wait_for(lambda s: "#1" in s.text)
        assert said.room == "!dm:hs"
        assert said.text.startswith("⚠️ Maybe sent")
        assert await state(a, row.id) == "unknown"
        await looked(b)
        assert kit_b.replies == []  # B never took it
        run_a.cancel()
        await asyncio.gather(run_a, return_exceptions=True)


async def test_a_clean_stop_wakes_the_others_to_take_its_mail_over_at_once(
    tmp_path: Path, pg_url: str
) -> None:
    cfg = pg_config(tmp_path, pg_url)
    start = time.time()
    clock = Clock(start)
    kit_a, kit_b = ChatKit(), ChatKit()
    async with App.open(cfg, [kit_b], serve_web=False, env={}, clock=clock) as b:
        async with App.open(cfg, [kit_a], serve_web=False, env={}, clock=clock) as a:
            await a.core.handle(kit_a.message("/mail at:+2m bob@example.com Later | x"))
            assert "goes out" in kit_a.replies[-1].text
            await looked(b)
            assert await owner(b, 1) == a.core.run
        stopped = time.monotonic()  # A stopped cleanly: its row is gone, B was notified
        async with asyncio.timeout(LAPSE):
            while True:
                if await owner(b, 1) == b.core.run:
                    break
                await asyncio.sleep(0.05)  # B's look runs on its own; the row shows it
        took = time.monotonic() - stopped
        assert b.leadership is not None
        assert b.leadership.keeper.notified == 1
        clock.now = start + 121
        await b.core.outbox.scheduler.looked()
        await kit_b.wait_for(sent)
        await b.core.outbox.drain()
        assert len(mail_files(cfg)) == 1
    print(f"taken over {took:.2f} s after a clean stop")


async def test_telegram_polling_has_one_poller_and_a_standby_polls_after_its_death(
    tmp_path: Path, pg_url: str, telegram_fake: TelegramFake
) -> None:
    shared = {"database": pg_url, "data_key_file": str(tmp_path / "data.key")}
    telegram = {"token": telegram_fake.token, "base_url": f"{telegram_fake.url}/bot"}
    cfg_a, cfg_b = (
        bot_config(tmp_path, bot=shared, telegram={**telegram, "mode": "polling"})
        for _ in range(2)
    )
    alice = telegram_fake.add_user(1001, "Alice")
    async with App.open(cfg_a, env={}) as a, App.open(cfg_b, env={}) as b:
        assert a.leadership is not None
        run_a = asyncio.create_task(a.run())
        telegram_fake.user_sends(alice, text="/help")
        await telegram_fake.wait_for_message(alice.id, lambda m: "/help - this list" in m.text)
        run_b = asyncio.create_task(b.run())  # stands by: never polls beside A
        await renewed(pg_url, "intake:telegram", time.time() + LEASE_TTL - 1)
        await renewed(pg_url, "intake:telegram", time.time() + LEASE_TTL - 1)
        # B's poll would end A's at once with 409 (one consumer per token): there was none.
        assert conflicts(telegram_fake) == []
        # A dies (its lease connection is cut, it does nothing more): B polls.
        await cut_off(pg_url, a)
        run_a.cancel()
        await asyncio.gather(run_a, return_exceptions=True)
        died = time.monotonic()
        telegram_fake.user_sends(alice, text="/help")
        async with asyncio.timeout(TAKEOVER + 5):
            await telegram_fake.wait_for_calls(
                lambda c: c.method == "sendMessage" and "/help - this list" in str(c.params), 2
            )
        took = time.monotonic() - died
        run_b.cancel()
        await asyncio.gather(run_b, return_exceptions=True)
    assert len(conflicts(telegram_fake)) <= 1  # at most A's poll left open when it died
    answers = [m for m in telegram_fake.sent if "/help - this list" in m.text]
    assert len(answers) == 2  # each /help answered once
    assert took < TAKEOVER + 5, took
    print(f"Telegram polling taken over {took:.1f} s after the poller's death")


def conflicts(fake: TelegramFake) -> list[Any]:
    return [c for c in fake.calls if c.method == "getUpdates" and c.status == 409]


async def test_a_leader_cut_off_while_another_took_its_lease_over_acts_no_more(
    tmp_path: Path, pg_url: str
) -> None:
    # The database's view after a partition: another run holds the lease with the next epoch,
    # while this one still believes it leads (its renewals had not failed yet). Every
    # leader-only act asks the database first (Leadership.still), and the epoch fences it out.
    cfg = pg_config(tmp_path, pg_url)
    async with instances(cfg, ChatKit()) as [a]:
        lead = await a.leadership.lead("fenced")
        assert await a.leadership.still(lead)
        await ask(
            pg_url,
            "UPDATE leases SET holder = 'another-run', epoch = epoch + 1,"
            " expires_at = $1 WHERE name = 'fenced'",
            time.time() + LEASE_TTL,
        )
        assert not await a.leadership.still(lead)
        assert await lease_row(pg_url, "fenced") == (
            "another-run",
            lead.epoch + 1,
            pytest.approx(time.time() + LEASE_TTL, abs=3),
        )
