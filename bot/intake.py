"""Running the chat adapters' intake until a signal: each one, or under its lease if it needs a
single consumer across instances (bot.leader)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

from bot.chat import ChatAdapter
from bot.core import Core
from bot.leader import Leadership, intake, solo

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals(stop: asyncio.Event) -> Iterator[None]:
    """Set ``stop`` on SIGINT or SIGTERM while the block runs (instead of dying by them)."""
    loop = asyncio.get_running_loop()
    for sig in SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


async def run_adapters(
    core: Core,
    adapters: list[ChatAdapter],
    leadership: Leadership | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the adapters until one ends (the console's input) or ``stop`` is set (else a
    signal)."""
    if stop is None:
        stop = asyncio.Event()
        with signals(stop):
            return await run_adapters(core, adapters, leadership, stop)
    tasks = [asyncio.create_task(_intake(a, core, leadership), name=a.platform) for a in adapters]
    stopper = asyncio.create_task(stop.wait())
    try:
        # The console ends with its input; the others run until a signal.
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for task in [*tasks, stopper]:
            task.cancel()
        await asyncio.gather(*tasks, stopper, return_exceptions=True)


async def _intake(adapter: ChatAdapter, core: Core, leadership: Leadership | None) -> None:
    # A network with one consumer runs on the instance leading it; the others stand by.
    if leadership is None or not solo(adapter):
        return await adapter.run(core.handle)
    await leadership.run(intake(adapter.platform), lambda _lead: adapter.run(core.handle))
