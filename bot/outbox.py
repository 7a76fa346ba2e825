"""The outbox: every accepted ``/mail`` is a row before any network call.

States: ``held`` (a preview waits for Send) -> ``queued`` (waits out the undo window, ``due_at``)
-> ``sending`` -> ``sent``, or ``failed`` (certainly not sent), or ``unknown`` (it may have reached
the provider), or ``cancelled`` (Cancel or Undo). ``unknown`` is never sent again by itself; the
user may ``/retry``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiosqlite

from bot.backends import MailBackend, Receipt, SendRefused, SendUnknown
from bot.durable import Durable
from bot.grammar import MailRequest
from bot.metrics import Metrics
from bot.vault import SecretBox

log = logging.getLogger(__name__)

HELD, QUEUED, SENDING, SENT = "held", "queued", "sending", "sent"
FAILED, UNKNOWN, CANCELLED = "failed", "unknown", "cancelled"
TELLING = 2  # outbox.told: 0 not yet told, 2 being told, 1 told
NO_LIMIT = 2**62
BUSY = 16  # mails whose own work (not their wait for Gmail) runs at once


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One accepted mail, without its (encrypted) content."""

    id: int
    event_key: str
    user_key: str
    room: str
    is_direct: bool
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    subject: str
    state: str
    detail: str | None
    created_at: float
    due_at: float
    author: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a delivery ended: the new state and, for the user, the receipt or reason."""

    state: str
    receipt: Receipt | None = None
    reason: str = ""
    after_restart: bool = False
    repeat: bool = False  # a restart cut in while telling it: the owner may have heard it


Notify = Callable[[OutboxRow, Outcome], Awaitable[None]]
T = TypeVar("T")
_COLUMNS = (
    "id, event_key, user_key, room, is_direct, recipients, subject, state, detail, created_at,"
    " due_at, author"
)


class Outbox:
    """Records accepted mail and delivers it through a backend, telling owners the outcome."""

    retell_after = 60.0  # seconds before an outcome the chat network refused is told again
    db_retry_max = 5.0  # most seconds between tries of a delivery's database step

    def __init__(
        self,
        db: aiosqlite.Connection,
        box: SecretBox,
        backend: MailBackend,
        notify: Notify,
        concurrency: int = 256,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self._db = db
        self._durable = Durable(db)  # the accept and the claim survive a power cut
        self._box = box
        self._backend = backend
        self._notify = notify
        self._slots = asyncio.Semaphore(concurrency)  # sends in flight
        # The loop's and the database's work of a mail, not its wait for Gmail: a few at a
        # time, so a burst of mail queues here and commands get through between them.
        self.busy = asyncio.Semaphore(BUSY)
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
        limits: tuple[int, int] = (NO_LIMIT, NO_LIMIT),
        now: float | None = None,
    ) -> OutboxRow | None:
        """Record a mail (queued, or held for a preview) unless ``user_key`` has had ``limits``
        (per minute, per day) mails accepted already; return its row, or None if over a limit
        or this chat event was recorded before."""
        recipients = {
            "to": [str(a) for a in request.to],
            "cc": [str(a) for a in request.cc],
            "bcc": [str(a) for a in request.bcc],
        }
        now = time.time() if now is None else now
        # One statement counts and records, so a burst cannot slip past the limits (SQLite
        # runs one write at a time), and gives the row back. The WHERE also keeps SQLite from
        # reading ON CONFLICT as a join.
        found = await self._durable.fetch(
            "INSERT INTO outbox (event_key, user_key, room, is_direct, recipients, subject, raw,"
            " state, created_at, updated_at, due_at, author)"
            " SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"
            " WHERE (SELECT total(created_at >= ?) < ? AND count(*) < ? FROM outbox"
            "  WHERE user_key = ? AND created_at >= ?)"
            f" ON CONFLICT (event_key) DO NOTHING RETURNING {_COLUMNS}",
            (
                event_key,
                user_key,
                room,
                int(is_direct),
                json.dumps(recipients),
                request.subject,
                self._box.seal(raw),
                HELD if held else QUEUED,
                now,
                now,
                due_at,
                author,
                now - 60,
                limits[0],
                limits[1],
                user_key,
                now - 86_400,
            ),
        )
        return next((_row(r) for r in found), None)

    async def counts_since(self, user_key: str, *since: float) -> list[int]:
        """Return how many mails ``user_key`` has had accepted since each time in ``since``."""
        cases = ", ".join("coalesce(sum(created_at >= ?), 0)" for _ in since)
        rows = await self._db.execute_fetchall(
            f"SELECT {cases} FROM outbox WHERE user_key = ? AND created_at >= ?",
            (*since, user_key, min(since)),
        )
        return next(([int(n) for n in row] for row in rows), [0] * len(since))

    async def last_sent(self, user_key: str) -> float | None:
        """Return when the user's newest mail was sent, if ever."""
        rows = await self._db.execute_fetchall(
            "SELECT max(updated_at) FROM outbox WHERE user_key = ? AND state = ?",
            (user_key, SENT),
        )
        return next((float(r[0]) for r in rows if r[0] is not None), None)

    async def get(self, row_id: int) -> OutboxRow | None:
        """Return one row by number."""
        rows = await self._db.execute_fetchall(
            f"SELECT {_COLUMNS} FROM outbox WHERE id = ?", (row_id,)
        )
        return next((_row(r) for r in rows), None)

    async def latest(self, user_key: str, state: str) -> OutboxRow | None:
        """Return the user's newest row in ``state``."""
        rows = await self._db.execute_fetchall(
            f"SELECT {_COLUMNS} FROM outbox WHERE user_key = ? AND state = ?"
            " ORDER BY id DESC LIMIT 1",
            (user_key, state),
        )
        return next((_row(r) for r in rows), None)

    async def history(self, user_key: str, limit: int = 10) -> list[OutboxRow]:
        """Return the user's newest rows, newest first."""
        rows = await self._db.execute_fetchall(
            f"SELECT {_COLUMNS} FROM outbox WHERE user_key = ? ORDER BY id DESC LIMIT ?",
            (user_key, limit),
        )
        return [_row(r) for r in rows]

    async def release(self, row_id: int, due_at: float) -> bool:
        """Move a held row to queued (the user pressed Send); False if it is not held."""
        cur = await self._db.execute(
            "UPDATE outbox SET state = ?, due_at = ?, updated_at = ? WHERE id = ? AND state = ?",
            (QUEUED, due_at, time.time(), row_id, HELD),
        )
        return cur.rowcount == 1

    async def cancel(self, row_id: int) -> bool:
        """Cancel a held or queued row (Cancel, Undo); False if it already left or ended."""
        cur = await self._db.execute(
            "UPDATE outbox SET state = ?, raw = NULL, updated_at = ? WHERE id = ?"
            " AND state IN (?, ?)",
            (CANCELLED, time.time(), row_id, HELD, QUEUED),
        )
        if cur.rowcount == 1:
            self.metrics.mail_ended(CANCELLED)
        return cur.rowcount == 1

    async def unknown_recipients(self, user_key: str, addresses: list[str]) -> list[str]:
        """Return the addresses this user has never had a mail sent to."""
        rows = await self._db.execute_fetchall(
            f"SELECT address FROM known_recipients WHERE user_key = ? AND address IN"
            f" ({', '.join('?' * len(addresses))})",
            (user_key, *(a.lower() for a in addresses)),
        )
        known = {str(r[0]) for r in rows}
        return [a for a in addresses if a.lower() not in known]

    def submit(self, row: OutboxRow, due_at: float | None = None) -> None:
        """Deliver a queued row in the background, not before ``due_at`` (the row's if None)."""
        when = row.due_at if due_at is None else due_at
        task = asyncio.create_task(self._deliver(row, when), name=f"outbox-{row.id}")
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    async def drain(self) -> None:
        """Wait until every delivery under way has ended."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Wait for deliveries under way; stop waiting to retell (a restart retells)."""
        self._closing = True
        await self.drain()
        for task in list(self._retells):
            task.cancel()
        await asyncio.gather(*self._retells, return_exceptions=True)

    async def recover(self) -> None:
        """After a restart: rows caught mid-send become unknown; queued rows are sent; outcomes
        their owners never heard, or may not have heard, are told now."""
        found = await self._db.execute_fetchall(
            f"SELECT {_COLUMNS}, told FROM outbox WHERE state IN (?, ?)"
            " OR (state IN (?, ?, ?) AND told != 1) ORDER BY id",
            (SENDING, QUEUED, SENT, FAILED, UNKNOWN),
        )
        rows = [(_row(r[:-1]), r[-1] == TELLING) for r in found]
        for row, repeat in rows:
            if row.state == QUEUED:
                self.submit(row)
            elif row.state == SENDING:
                step = functools.partial(self._set, row.id, UNKNOWN, None, telling=True)
                await self._persist(row.id, step)
                self.metrics.mail_ended(UNKNOWN)
                log.warning(
                    "outbox %d was being sent when mailbridge stopped: outcome unknown",
                    row.id,
                    extra={"outbox": row.id},
                )
                await self._tell(row, Outcome(UNKNOWN, after_restart=True), marked=True)
            else:  # decided, but the bot stopped before (or while) its owner was told
                receipt = Receipt(row.detail or "") if row.state == SENT else None
                reason = row.detail or "" if row.state != SENT else ""
                outcome = Outcome(row.state, receipt=receipt, reason=reason, repeat=repeat)
                await self._tell(row, outcome)

    async def requeue(self, row_id: int) -> bool:
        """Queue a failed or unknown row again (the user asked); return whether it was."""
        cur = await self._db.execute(
            "UPDATE outbox SET state = ?, told = 0, updated_at = ? WHERE id = ?"
            " AND state IN (?, ?) AND raw IS NOT NULL",
            (QUEUED, time.time(), row_id, FAILED, UNKNOWN),
        )
        return cur.rowcount == 1

    def _ended(self, task: asyncio.Task[None]) -> None:
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
            except sqlite3.OperationalError as exc:
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
        if due_at > time.time():  # the undo window; a cancel meanwhile ends it below
            await asyncio.sleep(due_at - time.time())
        async with self._slots:
            # Steps that send nothing (a token refresh) come before the row is marked as
            # leaving, so a crash during them cannot make a mail's outcome unknown.
            refused = await self._prepare(row)
            async with self.busy:
                # Claim the row and read its mail in one statement: only a queued row moves to
                # sending, so no row is sent twice, and "sending" is the last write before the
                # request leaves: it means "may be at Gmail".
                row_id = row.id
                found = await self._persist(
                    row_id,
                    lambda: self._durable.fetch(
                        "UPDATE outbox SET state = ?, updated_at = ? WHERE id = ? AND state = ?"
                        f" RETURNING {_COLUMNS}, raw",
                        (SENDING, time.time(), row_id, QUEUED),
                    ),
                )
                if not found:
                    return  # cancelled meanwhile
                row, raw = _row(found[0][:-1]), self._box.open(found[0][-1])
            outcome = refused or await self._send(row, raw)
            self.metrics.mail_ended(outcome.state)
            marked = False
            try:
                async with self.busy:
                    # Both writes in one trip to the database.
                    detail = _detail(outcome)
                    done = await asyncio.gather(
                        self._persist(
                            row_id, lambda: self._set(row_id, outcome.state, detail, telling=True)
                        ),
                        self._persist(row_id, lambda: self._remember_recipients(row))
                        if outcome.state == SENT
                        else _nothing(),
                        return_exceptions=True,
                    )
                    marked = not isinstance(done[0], BaseException)
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
            await self._backend.prepare(row.user_key)
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
                receipt = await self._backend.send(row.user_key, raw)
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

    async def _remember_recipients(self, row: OutboxRow) -> None:
        addresses = sorted({a.lower() for a in (*row.to, *row.cc, *row.bcc)})
        values = ", ".join("(?, ?)" for _ in addresses)
        params = [p for a in addresses for p in (row.user_key, a)]
        await self._db.execute(
            f"INSERT OR IGNORE INTO known_recipients (user_key, address) VALUES {values}", params
        )

    async def _set(
        self, row_id: int, state: str, detail: str | None, *, telling: bool = False
    ) -> None:
        # Sent mail needs no content any more; failed and unknown keep it for /retry.
        extra = ", raw = NULL" if state == SENT else ""
        extra += f", told = {TELLING}" if telling else ""  # one write: telling comes next
        await self._db.execute(
            f"UPDATE outbox SET state = ?, detail = ?, updated_at = ?{extra} WHERE id = ?",
            (state, detail, time.time(), row_id),
        )

    async def _tell(self, row: OutboxRow, outcome: Outcome, *, marked: bool = False) -> None:
        # No chat network takes an idempotency key, so telling is at least once: a row marked
        # TELLING when the bot stops is told again after the restart, marked as a repeat (also
        # when the stop came just before the message left: "in case it did not reach you").
        if not marked:
            async with self.busy:
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
        async with self.busy:
            await self._told(row.id, 1)

    async def _told(self, row_id: int, told: int) -> None:
        sql = "UPDATE outbox SET told = ? WHERE id = ?"
        await self._persist(row_id, lambda: self._db.execute(sql, (told, row_id)))

    async def _tell_later(self, row: OutboxRow, outcome: Outcome) -> None:
        await asyncio.sleep(self.retell_after)
        await self._tell(row, outcome)


async def _nothing() -> None:
    pass


def _detail(outcome: Outcome) -> str | None:
    return outcome.receipt.message_id if outcome.receipt else (outcome.reason or None)


def _row(r: Sequence[Any]) -> OutboxRow:
    recipients = json.loads(str(r[5]))
    return OutboxRow(
        id=int(r[0]),
        event_key=str(r[1]),
        user_key=str(r[2]),
        room=str(r[3]),
        is_direct=bool(r[4]),
        to=tuple(recipients["to"]),
        cc=tuple(recipients["cc"]),
        bcc=tuple(recipients["bcc"]),
        subject=str(r[6]),
        state=str(r[7]),
        detail=None if r[8] is None else str(r[8]),
        created_at=float(r[9]),
        due_at=float(r[10]),
        author=str(r[11]),
    )
