"""The outbox's delivery: every accepted ``/mail`` is a row before any network call.

The rows and their states are bot.store.outbox_rows; here a row is submitted, sent through a
backend, recovered after a restart and its outcome told to its owner.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from typing import TypeVar

from bot.backends import MailBackend, Receipt, SendRefused, SendUnknown
from bot.gate import CLAIM, RECORD, TELL, Gate
from bot.grammar import MailRequest
from bot.metrics import Metrics
from bot.outcome import Notify as Notify
from bot.outcome import Outcome as Outcome
from bot.scheduler import Scheduler
from bot.store.engine import Database
from bot.store.leftovers import Leftovers
from bot.store.outbox_rows import (
    CANCELLED,
    FAILED,
    NO_LIMIT,
    SENT,
    TELLING,
    UNKNOWN,
    NewRow,
    OutboxRow,
    OutboxRows,
)
from bot.store.vault import SecretBox
from bot.together import together

log = logging.getLogger(__name__)

BUSY = 4  # mails whose own work (not their wait for Gmail) runs at once
T = TypeVar("T")


class Outbox:
    """Records accepted mail and delivers it through a backend, telling owners the outcome."""

    retell_after = 60.0  # seconds before an outcome the chat network refused is told again
    db_retry_max = 5.0  # most seconds between tries of a delivery's database step

    def __init__(
        self,
        db: Database,
        box: SecretBox,
        backend: MailBackend,
        notify: Notify,
        concurrency: int = 256,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        run: str = "",
    ) -> None:
        self.run = run  # this process run: it claims and tells rows under this id
        self.metrics = metrics or Metrics()
        self.rows = OutboxRows(db, run)
        self.leftovers = Leftovers(db, run)
        # The chat networks whose mail this instance can tell now (None: all; bot.app sets it
        # when instances share the database: Matrix only where its sync runs).
        self.networks: Callable[[], Collection[str]] | None = None
        self._transient = db.transient  # database errors a delivery waits out
        self._shared = db.shared  # a server: a step's statements go at once (bot.together)
        self.clock = clock  # when mail is due; tests turn it
        self.scheduler = Scheduler(self.rows, self.submit, clock)
        self._live: set[int] = set()  # rows with a delivery task
        self._box = box
        self._backend = backend
        self._notify = notify
        self._slots = asyncio.Semaphore(concurrency)  # sends in flight
        # The loop's and the database's work of a mail, not its wait for Gmail: a few at a
        # time, so a burst of mail queues here and commands get through between them.
        self.busy = Gate(BUSY)
        self._tasks: set[asyncio.Task[None]] = set()
        self._retells: set[asyncio.Task[None]] = set()  # outcomes the chat did not take yet
        self._closing = False

    async def accept(
        self,
        event_key: str,
        user_key: str,
        room: str,
        is_direct: bool,
        request: MailRequest,
        raw: bytes,
        *,
        held: bool = False,
        due_at: float = 0.0,
        author: str = "",
        person: str = "",
        limits: tuple[int, int] = (NO_LIMIT, NO_LIMIT),
        now: float | None = None,
    ) -> OutboxRow | None:
        """Record a mail (queued, or held for a preview) unless its person (``person``, or
        ``user_key`` when not joined) has had ``limits`` (per minute, per day) mails accepted
        already; return its row, or None if over a limit or this chat event was recorded before."""
        parts = zip(("to", "cc", "bcc"), (request.to, request.cc, request.bcc), strict=True)
        to = {name: [str(a) for a in part] for name, part in parts}
        mail = (to, request.subject, self._box.seal(raw))
        new = NewRow(event_key, user_key, room, is_direct, *mail, held, due_at, author, person)
        return await self.rows.insert(new, limits, time.time() if now is None else now)

    async def cancel(self, row_id: int) -> bool:
        """Cancel a held or queued row (Cancel, Undo); False if it already left or ended."""
        cancelled = await self.rows.cancel(row_id)
        if cancelled:
            self.metrics.mail_ended(CANCELLED)
        return cancelled

    def submit(self, row: OutboxRow, due_at: float | None = None) -> None:
        """Deliver a queued row not before ``due_at`` (the row's if None): in the background,
        or through the scheduler if it is due later."""
        when = row.due_at if due_at is None else due_at
        if row.id in self._live or self.scheduler.later(when):
            return
        self._live.add(row.id)
        task = asyncio.create_task(self._deliver(row, when), name=f"outbox-{row.id}")
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._ended, row_id=row.id))

    async def drain(self) -> None:
        """Wait until every delivery under way has ended."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Wait for deliveries under way; stop waiting to retell (a restart retells)."""
        self._closing = True
        await self.scheduler.close()
        await self.drain()
        for task in list(self._retells):
            task.cancel()
        await asyncio.gather(*self._retells, return_exceptions=True)

    async def recover(self) -> None:
        """Take over what an ended run left (after a restart; with instances sharing the
        database, a lapsed one's): rows caught mid-send become unknown; outcomes their owners
        never heard, or may not have heard, are told now; queued rows are sent."""
        networks = None if self.networks is None else self.networks()
        for row in await self.leftovers.sending(networks):
            self.metrics.mail_ended(UNKNOWN)
            msg = "outbox %d was being sent when its mailbridge stopped: outcome unknown"
            log.warning(msg, row.id, extra={"outbox": row.id})
            await self._tell(row, Outcome(UNKNOWN, after_restart=True), marked=True)
        for row, repeat in await self.leftovers.untold(networks):
            receipt = Receipt(row.detail or "") if row.state == SENT else None
            reason = row.detail or "" if row.state != SENT else ""
            outcome = Outcome(row.state, receipt=receipt, reason=reason, repeat=repeat)
            await self._tell(row, outcome)
        for row in await self.leftovers.queued(networks):
            self.submit(row)

    def _ended(self, task: asyncio.Task[None], row_id: int = 0) -> None:
        self._live.discard(row_id)
        self._tasks.discard(task)
        self._retells.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # Its row is still queued, sending or being told: a restart delivers or recovers it.
            log.error("%s ended by an error; a restart takes it up", task.get_name(), exc_info=exc)

    async def _persist(self, row_id: int, step: Callable[[], Awaitable[T]]) -> T:
        """Run one database step of a delivery until it succeeds: a locked, full or failing
        database delays a mail, never strands it. Closing gives up (a restart recovers it)."""
        delay = 0.05
        while True:
            try:
                return await step()
            except self._transient as exc:
                if self._closing:
                    raise
                log.warning(
                    "outbox %d: database error (%s); trying again",
                    row_id,
                    exc,
                    extra={"outbox": row_id},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.db_retry_max)

    async def _deliver(self, row: OutboxRow, due_at: float) -> None:
        if due_at > self.clock():  # the undo window; a cancel meanwhile ends it below
            await asyncio.sleep(due_at - self.clock())
        async with self._slots:
            # Steps that send nothing (a token refresh) come before the row is marked as
            # leaving, so a crash during them cannot make a mail's outcome unknown.
            refused = await self._prepare(row)
            async with self.busy.hold(CLAIM):
                # Claim the row and read its mail in one statement: only a queued row moves to
                # sending, so no row is sent twice, and "sending" is the last write before the
                # request leaves: it means "may be at Gmail".
                row_id = row.id
                claimed = await self._persist(row_id, lambda: self.rows.claim(row_id))
                if claimed is None:
                    return  # cancelled meanwhile
                row, raw = claimed[0], self._box.open(claimed[1])
            outcome = refused or await self._send(row, raw)
            self.metrics.mail_ended(outcome.state)
            marked = False
            try:
                async with self.busy.hold(RECORD):
                    # Both writes in one trip to the database.
                    detail = outcome.detail()
                    done = await together(
                        self._shared,
                        self._persist(
                            row_id, lambda: self.rows.decide(row_id, outcome.state, detail)
                        ),
                        self._persist(row_id, lambda: self.rows.remember_recipients(row))
                        if outcome.state == SENT
                        else asyncio.sleep(0),
                    )
                    marked = not isinstance(done[0], BaseException)
                    if done[0] is False:
                        # Taken over meanwhile (this run was lapsed): its new run tells.
                        log.warning("outbox %d was taken over", row.id, extra={"outbox": row.id})
                        return
                    for result in done:
                        if isinstance(result, BaseException):
                            raise result
            except Exception:
                # The send is done: whatever failed here, its owner must still hear of it.
                log.exception(
                    "outbox %d: recording the outcome failed", row.id, extra={"outbox": row.id}
                )
            await self._tell(row, outcome, marked=marked)

    async def _prepare(self, row: OutboxRow) -> Outcome | None:
        """Run the backend's preparation; return the failure if the send cannot happen."""
        try:
            await self._backend.prepare(row.person)
        except SendRefused as exc:
            return Outcome(FAILED, reason=str(exc))
        except Exception:
            log.exception(
                "outbox %d: unexpected error before sending", row.id, extra={"outbox": row.id}
            )
            return None  # the send itself will try, and decide
        return None

    async def _send(self, row: OutboxRow, raw: bytes) -> Outcome:
        try:
            with self.metrics.timing_send():
                receipt = await self._backend.send(row.person, raw)
        except SendRefused as exc:
            return Outcome(FAILED, reason=str(exc))
        except SendUnknown as exc:
            log.warning(
                "outbox %d: outcome unknown (%s)",
                row.id,
                type(exc).__name__,
                extra={"outbox": row.id},
            )
            return Outcome(UNKNOWN, reason=str(exc))
        except Exception:
            # A bug may strike after the request left: never guess that nothing was sent.
            log.exception(
                "outbox %d: unexpected error while sending", row.id, extra={"outbox": row.id}
            )
            return Outcome(UNKNOWN)
        log.info("outbox %d sent", row.id, extra={"outbox": row.id})
        return Outcome(SENT, receipt=receipt)

    async def _tell(self, row: OutboxRow, outcome: Outcome, *, marked: bool = False) -> None:
        # No chat network takes an idempotency key, so telling is at least once: a row marked
        # TELLING when the bot stops is told again after the restart, marked as a repeat (also
        # when the stop came just before the message left: "in case it did not reach you").
        if not marked:
            async with self.busy.hold(TELL):
                await self._told(row.id, TELLING)
        try:
            await self._notify(row, outcome)
        except Exception:
            # Not told: try again later (and a restart tells it) rather than never.
            log.exception(
                "outbox %d: could not tell the user the outcome", row.id, extra={"outbox": row.id}
            )
            await self._told(row.id, 0)
            task = asyncio.create_task(self._tell_later(row, outcome), name=f"retell-{row.id}")
            self._retells.add(task)
            task.add_done_callback(self._ended)
            return
        async with self.busy.hold(TELL):
            await self._told(row.id, 1)

    async def _told(self, row_id: int, told: int) -> None:
        await self._persist(row_id, lambda: self.rows.told(row_id, told))

    async def _tell_later(self, row: OutboxRow, outcome: Outcome) -> None:
        await asyncio.sleep(self.retell_after)
        await self._tell(row, outcome)
