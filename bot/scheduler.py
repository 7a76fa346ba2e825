"""The scheduler: one task that wakes for the next mail due later, however many wait.

A mail due within ``LEAD`` seconds (the undo window) gets its own delivery task at once. One due
later (``/mail at:…``) is only a queued row with its due time: the scheduler looks up the next
such time in the database, sleeps until shortly before it, and hands the rows then due to
delivery. So a mail scheduled days ahead holds no task and no memory, and after a restart it
still goes at its time: the row's due time is all there is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from bot.store.outbox_rows import OutboxRow, OutboxRows

log = logging.getLogger(__name__)

LEAD = 30.0  # seconds: a mail due sooner is handed to delivery now, which waits out the rest
NAP = 60.0  # most seconds between looks: a wall clock set forward is noticed within a minute


class Scheduler:
    """Hands queued rows to ``submit`` shortly before they are due, by ``clock``."""

    def __init__(
        self,
        rows: OutboxRows,
        submit: Callable[[OutboxRow], None],
        clock: Callable[[], float],
    ) -> None:
        self._rows = rows
        self._submit = submit
        self._clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._asked = 0  # looks asked for by ``looked``
        self._done = 0  # the last of them a look has finished
        self._looks = asyncio.Condition()

    def later(self, due_at: float) -> bool:
        """Return whether a mail due at ``due_at`` is left to the scheduler (and wake it)."""
        if due_at - self._clock() <= LEAD:
            return False
        self.wake()
        return True

    def wake(self) -> None:
        """Look again now (a mail was scheduled; the clock moved); start looking if not yet."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="scheduler")
        self._wake.set()

    async def looked(self) -> None:
        """Return once a look that began after this call has handed over what was due."""
        self._asked += 1
        asked = self._asked
        self.wake()
        async with self._looks:
            await self._looks.wait_for(lambda: self._done >= asked)

    async def close(self) -> None:
        """Stop looking (the rows stay queued for the next start)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            asked = self._asked
            try:
                nap = await self._look()
            except Exception:
                log.exception("the scheduler could not read the outbox; trying again")
                nap = 1.0
            async with self._looks:
                self._done = asked
                self._looks.notify_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), nap)

    async def _look(self) -> float:
        """Hand over the rows due within the lead; return how long to sleep until the next."""
        horizon = self._clock() + LEAD
        for row in await self._rows.due(horizon):
            self._submit(row)  # delivery skips a row it already has
        upcoming = await self._rows.next_due(horizon)
        if upcoming is None:
            return NAP
        return max(0.0, min(NAP, upcoming - LEAD - self._clock()))
