"""Several instances on one PostgreSQL, in one test process: two ``App.open`` on the same URL
are two instances (each its own run, pool, heartbeat and lease connection), chatting through
ChatKit adapters. What one instance does, the other must see and never repeat."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from bot.app import App
from bot.chat import Handler
from bot.store.instances import LAPSE
from tests.chatkit import ChatKit
from tests.conftest import make_config

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


def pg_config(tmp_path: Path, pg_url: str, **sections: dict[str, Any]) -> Any:
    bot = {"database": pg_url, "data_key_file": str(tmp_path / "data.key")}
    return make_config(tmp_path, bot=bot, **sections)


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


async def lease_row(pg_url: str, name: str) -> tuple[str, int, float] | None:
    conn = await asyncpg.connect(dsn(pg_url))
    try:
        row = await conn.fetchrow(
            "SELECT holder, epoch, expires_at FROM leases WHERE name = $1", name
        )
    finally:
        await conn.close()
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
        pid = a.leadership.keeper.backend_pid
        conn = await asyncpg.connect(dsn(pg_url))
        try:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await conn.close()
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
