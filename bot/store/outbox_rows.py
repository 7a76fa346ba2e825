"""The outbox's rows: states, the statements that move a row between them, known recipients.

States: ``held`` (a preview waits for Send) -> ``queued`` (waits out the undo window, ``due_at``)
-> ``sending`` -> ``sent``, or ``failed`` (certainly not sent), or ``unknown`` (it may have reached
the provider), or ``cancelled`` (Cancel or Undo). ``unknown`` is never sent again by itself; the
user may ``/retry``. The content is stored sealed; sealing is the caller's (bot.outbox).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.store.engine import Database

HELD, QUEUED, SENDING, SENT = "held", "queued", "sending", "sent"
FAILED, UNKNOWN, CANCELLED = "failed", "unknown", "cancelled"
TELLING = 2  # outbox.told: 0 not yet told, 2 being told, 1 told
NO_LIMIT = 2**62
_COLUMNS = (
    "id, event_key, user_key, room, is_direct, recipients, subject, state, detail, created_at,"
    " due_at, author, person"
)


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
    person: str = ""  # whose mail it is (bot.store.people): ``user_key`` unless joined


@dataclass(frozen=True, slots=True)
class NewRow:
    """What an accepted mail's row is made of (``sealed``: its content, already encrypted)."""

    event_key: str
    user_key: str
    room: str
    is_direct: bool
    recipients: dict[str, list[str]]
    subject: str
    sealed: bytes
    held: bool = False
    due_at: float = 0.0
    author: str = ""
    person: str = ""  # '': ``user_key`` itself


class OutboxRows:
    """The outbox and known_recipients tables."""

    def __init__(self, db: Database, run: str = "") -> None:
        self._db = db
        self.run = run  # the process run that owns (sends, tells) the rows it writes

    async def insert(self, new: NewRow, limits: tuple[int, int], now: float) -> OutboxRow | None:
        """Insert ``new`` unless its person has had ``limits`` (per minute, per day) rows since
        ``now`` or its event was recorded before; return the row, or None."""
        # One statement counts and records, so a burst cannot slip past the limits (SQLite
        # runs one write at a time; on PostgreSQL ``serial`` queues one person's accepts, on
        # every instance), and gives the row back. The WHERE also keeps SQLite from reading
        # ON CONFLICT as a join. Durable: the accept decides what the user was told.
        found = await self._db.durable(
            "INSERT INTO outbox (event_key, user_key, room, is_direct, recipients, subject, raw,"
            " state, created_at, updated_at, due_at, author, person, run)"
            " SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"
            " WHERE (SELECT count(*) FILTER (WHERE created_at >= ?) < ? AND count(*) < ?"
            "  FROM outbox WHERE person = ? AND created_at >= ?)"
            f" ON CONFLICT (event_key) DO NOTHING RETURNING {_COLUMNS}",
            (
                new.event_key,
                new.user_key,
                new.room,
                int(new.is_direct),
                json.dumps(new.recipients),
                new.subject,
                new.sealed,
                HELD if new.held else QUEUED,
                now,
                now,
                new.due_at,
                new.author,
                new.person or new.user_key,
                self.run,
                now - 60,
                limits[0],
                limits[1],
                new.person or new.user_key,
                now - 86_400,
            ),
            serial=new.person or new.user_key,  # one person's accepts one at a time
        )
        return next((_row(r) for r in found), None)

    async def counts_since(self, person: str, *since: float) -> list[int]:
        """Return how many mails ``person`` has had accepted since each time in ``since``."""
        cases = ", ".join("count(*) FILTER (WHERE created_at >= ?)" for _ in since)
        rows = await self._db.fetchall(
            f"SELECT {cases} FROM outbox WHERE person = ? AND created_at >= ?",
            (*since, person, min(since)),
        )
        return next(([int(n) for n in row] for row in rows), [0] * len(since))

    async def last_sent(self, person: str) -> float | None:
        """Return when the person's newest mail was sent, if ever."""
        rows = await self._db.fetchall(
            "SELECT max(updated_at) FROM outbox WHERE person = ? AND state = ?",
            (person, SENT),
        )
        return next((float(r[0]) for r in rows if r[0] is not None), None)

    async def get(self, row_id: int) -> OutboxRow | None:
        """Return one row by number."""
        rows = await self._db.fetchall(f"SELECT {_COLUMNS} FROM outbox WHERE id = ?", (row_id,))
        return next((_row(r) for r in rows), None)

    async def latest(self, person: str, state: str) -> OutboxRow | None:
        """Return the person's newest row in ``state``."""
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM outbox WHERE person = ? AND state = ?"
            " ORDER BY id DESC LIMIT 1",
            (person, state),
        )
        return next((_row(r) for r in rows), None)

    async def history(self, person: str, limit: int = 10) -> list[OutboxRow]:
        """Return the person's newest rows (from all its chat accounts), newest first."""
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM outbox WHERE person = ? ORDER BY id DESC LIMIT ?",
            (person, limit),
        )
        return [_row(r) for r in rows]

    async def release(self, row_id: int, due_at: float) -> bool:
        """Move a held row to queued (the user pressed Send); False if it is not held."""
        changed = await self._db.execute(
            "UPDATE outbox SET state = ?, due_at = ?, updated_at = ?, run = ? WHERE id = ?"
            " AND state = ?",
            (QUEUED, due_at, time.time(), self.run, row_id, HELD),
        )
        return changed == 1

    async def cancel(self, row_id: int) -> bool:
        """Cancel a held or queued row; False if it already left or ended."""
        changed = await self._db.execute(
            "UPDATE outbox SET state = ?, raw = NULL, updated_at = ? WHERE id = ?"
            " AND state IN (?, ?)",
            (CANCELLED, time.time(), row_id, HELD, QUEUED),
        )
        return changed == 1

    async def requeue(self, row_id: int) -> bool:
        """Queue a failed or unknown row again; return whether it was."""
        changed = await self._db.execute(
            "UPDATE outbox SET state = ?, told = 0, updated_at = ?, run = ? WHERE id = ?"
            " AND state IN (?, ?) AND raw IS NOT NULL",
            (QUEUED, time.time(), self.run, row_id, FAILED, UNKNOWN),
        )
        return changed == 1

    async def due(self, before: float) -> list[OutboxRow]:
        """Return the queued rows due at or before ``before``, the soonest first."""
        mine, params = self._mine()
        found = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM outbox WHERE state = ? AND due_at <= ?{mine} ORDER BY due_at",
            (QUEUED, before, *params),
        )
        return [_row(r) for r in found]

    async def next_due(self, after: float) -> float | None:
        """Return when the first queued row due after ``after`` is due, if any."""
        mine, params = self._mine()
        found = await self._db.fetchall(
            f"SELECT min(due_at) FROM outbox WHERE state = ? AND due_at > ?{mine}",
            (QUEUED, after, *params),
        )
        return next((float(r[0]) for r in found if r[0] is not None), None)

    def _mine(self) -> tuple[str, tuple[str, ...]]:
        # Instances share the database: each schedules the rows it owns; a lapsed run's are
        # taken over first (bot.store.leftovers). One process (SQLite) owns them all.
        return (" AND run = ?", (self.run,)) if self._db.shared else ("", ())

    async def claim(self, row_id: int) -> tuple[OutboxRow, bytes] | None:
        """Move a queued row to sending, durably; return it and its sealed content, or None."""
        found = await self._db.durable(
            f"UPDATE outbox SET state = ?, updated_at = ?, run = ? WHERE id = ? AND state = ?"
            f" RETURNING {_COLUMNS}, raw",
            (SENDING, time.time(), self.run, row_id, QUEUED),
        )
        return (_row(found[0][:-1]), bytes(found[0][-1])) if found else None

    async def decide(self, row_id: int, state: str, detail: str | None) -> bool:
        """Record the outcome of a row this run claimed, marked as being told; False if
        another run took it over meanwhile (this one was lapsed): that one tells."""
        # Sent mail needs no content any more; failed and unknown keep it for /retry.
        extra = ", raw = NULL" if state == SENT else ""
        changed = await self._db.execute(
            f"UPDATE outbox SET state = ?, detail = ?, updated_at = ?, told = {TELLING}{extra}"
            " WHERE id = ? AND run = ?",
            (state, detail, time.time(), row_id, self.run),
        )
        return changed == 1

    async def told(self, row_id: int, told: int) -> None:
        """Record whether the owner was told (0 no, TELLING under way, 1 yes)."""
        await self._db.execute("UPDATE outbox SET told = ? WHERE id = ?", (told, row_id))

    async def unknown_recipients(self, person: str, addresses: list[str]) -> list[str]:
        """Return the addresses this person has never had a mail sent to."""
        rows = await self._db.fetchall(
            f"SELECT address FROM known_recipients WHERE user_key = ? AND address IN"
            f" ({', '.join('?' * len(addresses))})",
            (person, *(a.lower() for a in addresses)),
        )
        known = {str(r[0]) for r in rows}
        return [a for a in addresses if a.lower() not in known]

    async def remember_recipients(self, row: OutboxRow) -> None:
        """Record a sent row's recipients as known to its owner."""
        addresses = sorted({a.lower() for a in (*row.to, *row.cc, *row.bcc)})
        values = ", ".join("(?, ?)" for _ in addresses)
        params = [p for a in addresses for p in (row.person or row.user_key, a)]
        await self._db.execute(
            f"INSERT INTO known_recipients (user_key, address) VALUES {values}"
            " ON CONFLICT DO NOTHING",
            params,
        )


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
        person=str(r[12]) or str(r[2]),
    )
