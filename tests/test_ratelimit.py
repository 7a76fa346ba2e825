"""The outgoing rate limiter keeps Telegram's limits and forgets chats that went quiet."""

from __future__ import annotations

import asyncio
import time

from adapters.ratelimit import PRUNE_EVERY, SendLimiter


async def test_quiet_chats_are_forgotten_so_memory_does_not_grow_with_users() -> None:
    limiter = SendLimiter(overall=10**6, per_chat=0.001)
    for n in range(5 * PRUNE_EVERY):
        chat = str(n)
        async with limiter.chat_lock(chat):
            await limiter.acquire(chat, is_group=False)
        if n % PRUNE_EVERY == PRUNE_EVERY // 2:
            await asyncio.sleep(0.002)  # the chats so far have gone quiet
    assert limiter.chats_tracked() < 2 * PRUNE_EVERY  # not 5,120


async def test_a_chat_still_waiting_keeps_its_spacing() -> None:
    # Measured from "a"'s first send, so a slow (loaded) machine cannot make it fail; the
    # clean-up takes milliseconds, far less than the spacing, so a forgotten "a" fails it.
    limiter = SendLimiter(overall=10**6, per_chat=1.5)
    first = time.monotonic()
    async with limiter.chat_lock("a"):
        await limiter.acquire("a", is_group=False)
    for n in range(PRUNE_EVERY):  # a clean-up runs meanwhile
        async with limiter.chat_lock(str(n)):
            await limiter.acquire(str(n), is_group=False)
    assert time.monotonic() - first < 1.0, "the clean-up must take less than the spacing"
    async with limiter.chat_lock("a"):
        await limiter.acquire("a", is_group=False)
    assert time.monotonic() - first >= 1.5  # "a" was not forgotten while its second was not up


async def test_a_chats_next_message_is_spaced_from_the_answer_to_the_last() -> None:
    # Telegram counts a message when it arrives: a request held up on its way (a busy loop, a
    # slow connection) must not let the next one arrive less than a second after it.
    limiter = SendLimiter(overall=10**6, per_chat=0.2)
    async with limiter.chat_lock("a"):
        await limiter.acquire("a", is_group=False)
        await asyncio.sleep(0.15)  # the request's way to Telegram and back
        limiter.sent("a", is_group=False)
        t0 = time.monotonic()
        await limiter.acquire("a", is_group=False)
    assert time.monotonic() - t0 >= 0.19  # 0.2 s from the answer, not 0.05 s from the start


async def test_the_overall_rate_keeps_a_margin_under_telegrams_thirty_a_second() -> None:
    limiter = SendLimiter(per_chat=0.0)
    t0 = time.monotonic()
    for n in range(28):
        async with limiter.chat_lock(str(n)):
            await limiter.acquire(str(n), is_group=False)
    assert time.monotonic() - t0 >= 27 / 27.0 - 0.01  # 28 sends span a second: never 30 in one
