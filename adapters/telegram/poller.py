"""Telegram's long poll, our own: an update's offset is confirmed only once it was handled."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

from telegram import Bot, Update
from telegram.error import Conflict, InvalidToken, NetworkError, RetryAfter

from adapters.ratelimit import Backoff

log = logging.getLogger(__name__)

POLL_TIMEOUT = 25  # seconds a getUpdates long poll may wait
BUSY_POLL = 0.5  # seconds between getUpdates calls while updates are being handled
MAX_BACKOFF = 5.0  # seconds between tries while Telegram is unreachable: back soon after
ALLOWED_UPDATES = ["message", "callback_query"]


async def poll(bot: Bot, dispatch: Callable[[Update], Coroutine[Any, Any, None]]) -> None:
    """Fetch updates and handle each as its own task, so one slow reply (a group at its
    limit, a long 429) holds up nobody else. Telegram's offset confirms every update below
    it, so it only moves past an update once that update is handled; meanwhile the updates
    still in flight come back with each call and are skipped."""
    in_flight: dict[int, asyncio.Task[None]] = {}
    next_new: int | None = None  # the lowest update id not yet taken
    backoff = Backoff(MAX_BACKOFF)
    try:
        while True:
            offset = min(in_flight) if in_flight else next_new
            try:
                updates = await bot.get_updates(
                    offset=offset,
                    timeout=0 if in_flight else POLL_TIMEOUT,
                    allowed_updates=ALLOWED_UPDATES,
                )
                backoff.succeeded()
            except RetryAfter as exc:
                await asyncio.sleep(seconds(exc.retry_after))
                continue
            except InvalidToken:
                raise
            except (NetworkError, Conflict) as exc:
                # Conflict: another process polls with this token (or a webhook is set).
                delay = backoff.failed()
                log.warning("getUpdates failed (%s); trying again in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                continue
            floor = next_new or 0
            fresh = [u for u in updates if u.update_id >= floor and u.update_id not in in_flight]
            for update in fresh:
                task = asyncio.create_task(dispatch(update))
                in_flight[update.update_id] = task
                task.add_done_callback(functools.partial(_forget, in_flight, update.update_id))
            if updates:
                next_new = max(next_new or 0, updates[-1].update_id + 1)
            if in_flight and not fresh:
                # Updates under way: ask again when they are all done, or in half a second
                # for new ones (not at every completion: each call returns those under way).
                await asyncio.wait(list(in_flight.values()), timeout=BUSY_POLL)
    finally:
        for task in in_flight.values():
            task.cancel()  # not confirmed: Telegram delivers them again after a restart
        await asyncio.gather(*in_flight.values(), return_exceptions=True)


def seconds(value: timedelta | float) -> float:
    """Return a Bot API duration (a timedelta under PTB_TIMEDELTA, else a number) in seconds."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _forget(in_flight: dict[int, asyncio.Task[None]], update_id: int, _: object) -> None:
    in_flight.pop(update_id, None)
