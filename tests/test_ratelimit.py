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
    limiter = SendLimiter(overall=10**6, per_chat=0.3)
    async with limiter.chat_lock("a"):
        await limiter.acquire("a", is_group=False)
    for n in range(PRUNE_EVERY):  # a clean-up runs meanwhile
        async with limiter.chat_lock(str(n)):
            await limiter.acquire(str(n), is_group=False)
    t0 = time.monotonic()
    async with limiter.chat_lock("a"):
        await limiter.acquire("a", is_group=False)
    assert time.monotonic() - t0 > 0.05  # "a" was not forgotten while its second was not up
