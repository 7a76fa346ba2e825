"""Liveness and readiness while the chat networks go away and come back."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.botproc import free_port
from tests.running import bot_config, running
from tests.synapse import Synapse
from tests.telegram_fake import TelegramFake

pytestmark = pytest.mark.integration
BACK_WITHIN = 10.0  # seconds from a network's return to 200 on /readyz (the bound)


class Probe:
    """Asks /livez and /readyz as a load balancer does, every 0.2 s, and keeps the answers."""

    def __init__(self, base: str, http: aiohttp.ClientSession) -> None:
        self.base, self.http = base, http
        self.live: list[int] = []
        self.ready: list[tuple[float, int, dict[str, Any]]] = []

    async def run(self) -> None:
        while True:
            async with self.http.get(f"{self.base}/livez") as r:
                self.live.append(r.status)
            async with self.http.get(f"{self.base}/readyz") as r:
                self.ready.append((time.monotonic(), r.status, await r.json()))
            await asyncio.sleep(0.2)

    async def until(self, status: int, timeout: float) -> tuple[float, dict[str, Any]]:
        """Wait for a /readyz answer with ``status``; return when it came and its body."""
        seen = len(self.ready)
        async with asyncio.timeout(timeout):
            while True:
                for when, got, body in self.ready[seen:]:
                    if got == status:
                        return when, body
                seen = len(self.ready)
                await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def probing(base: str) -> AsyncIterator[Probe]:
    async with aiohttp.ClientSession() as http:
        probe = Probe(base, http)
        task = asyncio.create_task(probe.run())
        try:
            yield probe
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert probe.live
        assert set(probe.live) == {200}, probe.live  # never failed in between


async def outage(
    probe: Probe,
    network: str,
    stop: Callable[[], Awaitable[None]],
    start: Callable[[], Awaitable[Any]],
) -> float:
    """Take ``network`` down until /readyz says so, bring it back; return seconds to ready."""
    await probe.until(200, 60)
    await stop()
    _, body = await probe.until(503, 60)
    assert body["status"] == "not ready"
    assert network in body["not_ready"], body
    await asyncio.sleep(3)  # down for a while: the bot backs off between tries
    await start()
    back = time.monotonic()
    when, _ = await probe.until(200, BACK_WITHIN + 5)
    return when - back


@pytest.mark.telegram
async def test_readyz_follows_the_bot_api_and_livez_never_fails(tmp_path: Path) -> None:
    port = free_port()
    fake = await TelegramFake(port=port).start()
    telegram = {"token": fake.token, "base_url": f"{fake.url}/bot"}
    config = bot_config(tmp_path, telegram=telegram)
    try:
        async with running(config) as base, probing(base) as probe:

            async def start() -> None:
                nonlocal fake
                fake = await TelegramFake(port=port).start()  # a fresh Bot API, same address

            seconds = await outage(probe, "telegram", fake.stop, start)
            assert seconds < BACK_WITHIN, seconds
            print(f"\nreadyz: 200 again {seconds:.1f} s after the Bot API returned")
    finally:
        await fake.stop()


@pytest.mark.matrix
async def test_readyz_follows_the_homeserver_and_livez_never_fails(
    synapse: Synapse, tmp_path: Path
) -> None:
    from tests.test_matrix import matrix_bot

    _, config = await matrix_bot(synapse, tmp_path)
    async with running(config) as base, probing(base) as probe:
        seconds = await outage(
            probe,
            "matrix",
            lambda: asyncio.to_thread(synapse.stop),
            lambda: asyncio.to_thread(synapse.start),
        )
        assert seconds < BACK_WITHIN, seconds
        print(f"\nreadyz: 200 again {seconds:.1f} s after the homeserver returned")


async def test_readyz_names_a_database_that_does_not_answer(tmp_path: Path) -> None:
    from bot.health import not_ready
    from bot.store.db import open_database

    db = await open_database(tmp_path / "bot.db")
    assert await not_ready(db, []) == {}
    await db.close()
    assert await not_ready(db, []) == {"database": "the database did not answer"}
