"""A step's store calls, run as one: at once on a database server, one after another on SQLite.

On PostgreSQL each call is a round trip, so a step's independent reads (or writes) go at once
and cost one. On SQLite each statement runs at once on the event loop's thread
(bot.store.sqlite): running the calls one after another costs nothing more, where a task for
each (``asyncio.gather``) costs tens of µs apiece. Either way every call runs to its end and
each result, or the exception it raised, comes back in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar, overload

A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")


@overload
async def together(
    at_once: bool, a: Awaitable[A], b: Awaitable[B], /
) -> tuple[A | BaseException, B | BaseException]: ...


@overload
async def together(
    at_once: bool, a: Awaitable[A], b: Awaitable[B], c: Awaitable[C], /
) -> tuple[A | BaseException, B | BaseException, C | BaseException]: ...


async def together(at_once: bool, *steps: Awaitable[Any]) -> tuple[Any, ...]:
    """Run ``steps`` (at once if ``at_once``); return each one's result or exception."""
    if at_once:
        return tuple(await asyncio.gather(*steps, return_exceptions=True))
    results: list[Any] = []
    try:
        for step in steps:
            try:
                results.append(await step)
            except Exception as exc:
                results.append(exc)
    finally:
        # Cancelled part way: the steps not begun are closed, never left unawaited.
        for step in steps[len(results) + 1 :]:
            if isinstance(step, Coroutine):
                step.close()
    return tuple(results)
