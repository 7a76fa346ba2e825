"""Mail a lapsed process run left behind, taken over by a live one in one statement each.

A run owns the rows it accepted, claimed or tells (``outbox.run``). When it stops, crashes or is
cut off (bot.store.instances: its heartbeat lapsed; on SQLite, every earlier run), a live run
takes its rows over: each statement moves the rows to itself and returns them, so of several
instances looking at once exactly one gets each row (PostgreSQL re-checks an updated row's WHERE
under its lock in READ COMMITTED; SQLite runs one write at a time). ``networks`` limits them to
rows whose owner this instance can tell (None: every network).
"""

from __future__ import annotations

import time
from collections.abc import Collection

from bot.store.engine import Database, Params
from bot.store.instances import LAPSE, LIVE
from bot.store.outbox_rows import (
    _COLUMNS,
    FAILED,
    QUEUED,
    SENDING,
    SENT,
    TELLING,
    UNKNOWN,
    OutboxRow,
    _row,
)


class Leftovers:
    """Takes over the outbox rows of lapsed runs for run ``run``."""

    def __init__(self, db: Database, run: str) -> None:
        self._db = db
        self.run = run

    def _scope(self, networks: Collection[str] | None) -> tuple[str, Params]:
        where, params = f" AND run != ? AND NOT {LIVE}", [self.run, time.time() - LAPSE]
        if networks is not None:
            where += f" AND ({' OR '.join('user_key LIKE ?' for _ in networks)})"
            params += [f"{n}:%" for n in networks]
        return where, params

    async def sending(self, networks: Collection[str] | None = None) -> list[OutboxRow]:
        """Mark rows caught mid-send unknown (being told by this run); return them."""
        if networks is not None and not networks:
            return []
        where, params = self._scope(networks)
        found = await self._db.fetchall(
            f"UPDATE outbox SET state = ?, told = {TELLING}, run = ?, updated_at = ?"
            f" WHERE state = ?{where} RETURNING {_COLUMNS}",
            (UNKNOWN, self.run, time.time(), SENDING, *params),
        )
        return sorted((_row(r) for r in found), key=lambda r: r.id)

    async def untold(
        self, networks: Collection[str] | None = None
    ) -> list[tuple[OutboxRow, bool]]:
        """Take decided rows whose owner was not surely told; return them, with whether
        telling them had begun."""
        if networks is not None and not networks:
            return []
        where, params = self._scope(networks)
        found = await self._db.fetchall(
            f"UPDATE outbox SET run = ? WHERE state IN (?, ?, ?) AND told != 1{where}"
            f" RETURNING {_COLUMNS}, told",
            (self.run, SENT, FAILED, UNKNOWN, *params),
        )
        return sorted(((_row(r[:-1]), r[-1] == TELLING) for r in found), key=lambda p: p[0].id)

    async def queued(self, networks: Collection[str] | None = None) -> list[OutboxRow]:
        """Take queued rows (due now or later) to send; return them."""
        if networks is not None and not networks:
            return []
        where, params = self._scope(networks)
        found = await self._db.fetchall(
            f"UPDATE outbox SET run = ? WHERE state = ?{where} RETURNING {_COLUMNS}",
            (self.run, QUEUED, *params),
        )
        return sorted((_row(r) for r in found), key=lambda r: r.id)
