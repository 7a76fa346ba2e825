"""Outgoing rate limits for a chat network: overall, per chat and per group; waits, never drops."""

from __future__ import annotations

import asyncio
import time
from collections import deque

from bot.chat import Pacer

PRUNE_EVERY = 1024  # sends between clean-ups of per-chat state
# Shared slots are spaced from when they were taken, not from the network's answer (that would
# cost a second trip to the database): a little more apart, for the jitter of arrival.
SHARED_MARGIN = 1.1


class SendLimiter:
    """Space out sends: ``overall`` per second in all, one per ``per_chat`` seconds to a chat,
    ``per_group`` per minute to a group. ``acquire`` waits until a send is allowed; ``sent``
    says when the network answered it.

    The network counts a message when it arrives, which is later than when it was let go here
    by a varying delay (a busy event loop, a slow connection). So a chat's next message is
    spaced from the moment the previous one was answered, when it had certainly arrived, and the
    overall rate keeps 10 % under Telegram's 30 messages a second, so that jitter does not push
    a burst over it."""

    def __init__(self, overall: float = 27.0, per_chat: float = 1.0, per_group: int = 20) -> None:
        self._overall_gap = 1.0 / overall
        self._per_chat = per_chat
        self._per_group = per_group
        self._next_overall = 0.0
        self._next_in_chat: dict[str, float] = {}
        self._group_sends: dict[str, deque[float]] = {}
        self._chat_locks: dict[str, asyncio.Lock] = {}
        self._overall_lock = asyncio.Lock()
        self._acquired = 0
        self._pacer: Pacer | None = None  # slots shared with other instances, if any

    def pace_with(self, pacer: Pacer) -> None:
        """Also keep to slots shared with the other instances of the same bot account: a
        chat's messages from all of them one ``per_chat`` apart (a group's, the group's rate),
        and the overall rate split among them."""
        self._pacer = pacer

    def chat_lock(self, chat: str) -> asyncio.Lock:
        """Return the lock that keeps one chat's messages in order."""
        return self._chat_locks.setdefault(chat, asyncio.Lock())

    async def acquire(self, chat: str, is_group: bool) -> None:
        """Wait until one more message may go to ``chat`` (call with its chat lock held)."""
        await _sleep_until(self._next_in_chat.get(chat, 0.0))
        if is_group:
            window = self._group_sends.setdefault(chat, deque())
            while len(window) >= self._per_group:
                now = time.monotonic()
                while window and window[0] <= now - 60.0:
                    window.popleft()
                if len(window) >= self._per_group:
                    await _sleep_until(window[0] + 60.0)
        if self._pacer is not None:
            # Wall clock: the slot is shared with other processes, maybe on other hosts.
            gap = max(self._per_chat, 60.0 / self._per_group) if is_group else self._per_chat
            at = await self._pacer.slot(chat, gap * SHARED_MARGIN)
            await asyncio.sleep(max(0.0, at - time.time()))
        share = self._pacer.share() if self._pacer is not None else 1
        async with self._overall_lock:
            await _sleep_until(self._next_overall)
            self._next_overall = time.monotonic() + self._overall_gap * share
        now = time.monotonic()
        self._next_in_chat[chat] = now + self._per_chat
        if is_group:
            self._group_sends[chat].append(now)
        self._acquired += 1
        if self._acquired % PRUNE_EVERY == 0:
            self._prune(now)

    def sent(self, chat: str, is_group: bool) -> None:
        """The network answered the message just let go to ``chat``: space the next from now."""
        now = time.monotonic()
        self._next_in_chat[chat] = max(self._next_in_chat.get(chat, 0.0), now + self._per_chat)
        window = self._group_sends.get(chat) if is_group else None
        if window:
            window[-1] = max(window[-1], now)  # the minute counts from its arrival, too

    def chats_tracked(self) -> int:
        """How many chats the limiter holds state for (quiet ones are dropped)."""
        return len(self._next_in_chat.keys() | self._chat_locks.keys() | self._group_sends.keys())

    def _prune(self, now: float) -> None:
        """Forget chats that went quiet, so a long-running bot does not grow with its users."""
        for chat, when in list(self._next_in_chat.items()):
            lock = self._chat_locks.get(chat)
            if when < now and (lock is None or not lock.locked()):
                del self._next_in_chat[chat]
                self._chat_locks.pop(chat, None)
        for chat, window in list(self._group_sends.items()):
            if not window or window[-1] <= now - 60.0:
                del self._group_sends[chat]

    def back_off(self, chat: str, seconds: float) -> None:
        """The network said "too many requests": send nothing to ``chat`` for ``seconds``."""
        self._next_in_chat[chat] = max(
            self._next_in_chat.get(chat, 0.0), time.monotonic() + seconds
        )


async def _sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


class Backoff:
    """Waits between tries of a call that failed: doubling from 2 s, at most ``cap`` seconds,
    so the adapter is back soon after an outage ends. One per retry loop."""

    def __init__(self, cap: float) -> None:
        self.cap = cap
        self.failures = 0  # since the last success

    def succeeded(self) -> None:
        """Start again from the shortest wait."""
        self.failures = 0

    def failed(self) -> float:
        """Count a failure; return how many seconds to wait before the next try."""
        self.failures += 1
        return min(2.0**self.failures, self.cap)
