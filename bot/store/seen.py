"""Chat events claimed on receipt, so a network's redelivery is handled by nobody else.

A network delivers an event again when it did not hear in time that the first delivery was taken
(Telegram: a webhook not answered 200 yet, an offset not confirmed yet; Matrix: a sync replayed
after a restart). The first delivery claims the event's key in one statement before handling it;
a delivery that finds it claimed does nothing. A claim records the process run that made it: a
claim left ``claimed`` by an earlier run was cut off by a crash or a stop, and the next delivery
takes it over, so a command interrupted by a restart is still handled after it. Instances
sharing a database (PostgreSQL) take over only the claims of a lapsed run (bot.store.instances):
an event redelivered to one instance while another handles it is handled once.
"""

from __future__ import annotations

import asyncio
import time

from bot.store.engine import Database
from bot.store.instances import LAPSE, LIVE, new_run

CLAIMED, DONE = "claimed", "done"
SETTLE_POLL = 0.1  # seconds between looks at an event another instance handles
KEEP = 172_800.0  # seconds; networks redeliver for a day at most (Telegram keeps updates 24 h)


class Claims:
    """The seen_events table: one row per event key, claimed, then done."""

    def __init__(self, db: Database, run: str = "") -> None:
        self._db = db
        self.run = run or new_run()  # this process run; a restart is a new run
        self._pruned = 0.0

    async def claim(self, key: str) -> bool:
        """Claim event ``key`` for this run; False if it is done, or being handled by this run."""
        now = time.time()
        # One statement, so two deliveries at once cannot both get it (SQLite serialises
        # writes; on PostgreSQL the same upsert takes a row lock, and the waiting one reads
        # the row again). SQLite has one process: a claim of another run was cut off by a
        # restart. Shared: only a lapsed run's claim is taken over, never a live instance's.
        alive = f" AND NOT seen_events.{LIVE}" if self._db.shared else ""
        got = bool(
            await self._db.fetchall(
                "INSERT INTO seen_events (event_key, seen_at, state, run) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (event_key) DO UPDATE SET seen_at = excluded.seen_at,"
                " run = excluded.run WHERE seen_events.state = ?"
                f" AND seen_events.run != excluded.run{alive} RETURNING event_key",
                (key, now, CLAIMED, self.run, CLAIMED)
                + ((now - LAPSE,) if self._db.shared else ()),
            )
        )
        if now - self._pruned > 3600:
            self._pruned = now
            await self._db.execute("DELETE FROM seen_events WHERE seen_at < ?", (now - KEEP,))
        return got

    async def settled(self, key: str) -> bool:
        """After a failed claim on a shared database: wait while another live run handles
        ``key``; return True once this run claimed it (that run lapsed or gave it up), False
        when it is done (or this run's, or still handled after ``2 * LAPSE``)."""
        if not self._db.shared:
            return False  # one process: a claim of another run was taken over at once
        give_up = time.monotonic() + 2 * LAPSE
        while time.monotonic() < give_up:
            rows = await self._db.fetchall(
                f"SELECT state, run, {LIVE} FROM seen_events WHERE event_key = ?",
                (time.time() - LAPSE, key),
            )
            if rows and (rows[0][0] == DONE or rows[0][1] == self.run):
                return False
            if not rows or not rows[0][2]:  # released, or its run lapsed
                if await self.claim(key):
                    return True
                continue
            await asyncio.sleep(SETTLE_POLL)  # no event tells when another instance finishes
        return False

    async def done(self, key: str) -> None:
        """Mark ``key`` handled: no delivery of it is handled again, by any run."""
        await self._db.execute(
            # seen_at stays the claim's: the row is kept for KEEP from then (and its index
            # needs no second write).
            "UPDATE seen_events SET state = ? WHERE event_key = ? AND run = ?",
            (DONE, key, self.run),
        )

    async def release(self, key: str) -> None:
        """Give up this run's claim on ``key`` (its handling was cut off): a redelivery may
        take it."""
        await self._db.execute(
            "DELETE FROM seen_events WHERE event_key = ? AND run = ? AND state = ?",
            (key, self.run, CLAIMED),
        )
