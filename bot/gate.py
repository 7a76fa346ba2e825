"""A few slots for a mail's own work (its loop and database time, not its wait for Gmail).

Under a burst, the event loop and the database's single worker run everything in arrival order: a
command asked meanwhile would wait behind the work of every mail in the burst. Mail work holds
one of a few slots instead, so at most those few are ahead of a command. Waiters go in order of
stage, later stages first: a mail that has come further gets on first, so the first mails of a
burst leave for Gmail early and their wait overlaps the work of the rest, instead of every mail
being accepted before the first one is sent.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from types import TracebackType

# A mail's stages, in the order it goes through them.
EVENT, READ, ACCEPT, CLAIM, RECORD, TELL = range(6)


class Gate:
    """A semaphore whose waiters are let in by stage (latest first), then first come."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def hold(self, stage: int) -> _Held:
        """Hold a slot for an ``async with`` block, waiting for one if none is free."""
        return _Held(self, stage)

    async def _acquire(self, stage: int) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        turn = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (-stage, next(self._order), turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release()  # it was handed over just as we were cancelled
            raise

    def _release(self) -> None:
        while self._waiting:
            _, _, turn = heapq.heappop(self._waiting)
            if not turn.done():  # a cancelled waiter is skipped
                turn.set_result(None)  # the slot goes straight to the next in line
                return
        self._free += 1


class _Held:
    # A class, not contextlib's generator: a mail passes six gates, each a few µs cheaper so.
    __slots__ = ("_gate", "_stage")

    def __init__(self, gate: Gate, stage: int) -> None:
        self._gate, self._stage = gate, stage

    async def __aenter__(self) -> None:
        await self._gate._acquire(self._stage)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._gate._release()
