"""Process runs that share one database: their heartbeats, and the leases of jobs run once.

Every process run has an id (``new_run``). On a shared database (PostgreSQL) a run writes its
row into ``instances`` at start and beats every ``BEAT`` seconds; a run whose beat is older than
``LAPSE`` seconds is lapsed: dead, stopped or cut off, and what it was doing is taken over by
others (``LIVE`` is the clause that says "this run is not lapsed"). A clean stop deletes the row,
so others take over at once. On SQLite there is one process (bot/lock.py), so nothing is written.

A lease names a job that must run on one instance only (the Matrix sync, Telegram's long poll,
the sweeps). ``PgKeeper`` holds it by a session advisory lock on one dedicated connection (never a
pooled one: a pooled connection handed to someone else would keep the lock) plus a row in
``leases`` whose ``epoch`` grows with every new holder, so a write can carry the epoch it was
made under and an old holder's is refused. ``SoleKeeper`` is SQLite's: the one process holds
every lease, with no round trip.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

from bot.store.engine import POSTGRESQL, Database

log = logging.getLogger(__name__)

BEAT = 2.0  # seconds between heartbeats (and between looks for a lapsed run's work)
LAPSE = 10.0  # seconds without a heartbeat after which a run is lapsed
LEASE_TTL = 5.0  # seconds a lease lasts unless renewed; its holder stops acting when it ends
STATEMENT_TIMEOUT = 3.0  # seconds for a statement on the lease connection (a stop never hangs)
RENEW = 1.5  # seconds between renewals of a held lease, and between tries of a wanted one
# "The run in column ``run`` is alive": a statement adds ``(time.time() - LAPSE,)`` to its
# parameters for it. A run that never beat (SQLite, or the '' of rows from before) is not.
LIVE = "run IN (SELECT i.run FROM instances i WHERE i.beat_at >= ?)"
CHANNEL = "mailbridge_instances"  # NOTIFY: a run stopped, look for its work now


def new_run() -> str:
    """Return a new process run id."""
    return secrets.token_hex(8)


class Instances:
    """The instances table: this run's row and heartbeat."""

    def __init__(self, db: Database, run: str) -> None:
        self._db = db
        self.run = run

    async def beat(self) -> None:
        """Record that this run is alive (its row is made the first time)."""
        now = time.time()
        await self._db.execute(
            "INSERT INTO instances (run, host, pid, started_at, beat_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (run) DO UPDATE SET beat_at = excluded.beat_at",
            (self.run, socket.gethostname(), os.getpid(), now, now),
        )

    async def stop(self) -> None:
        """Remove this run's row: it is lapsed at once, and others take its work over."""
        gone = ("DELETE FROM instances WHERE run = ?", (self.run,))
        if self._db.dialect != POSTGRESQL:
            await self._db.execute(*gone)
            return
        # Delivered at commit to every session listening (PgKeeper.listen), so the others look
        # now rather than at their next beat; not durable, so the beats still look.
        await self._db.transaction([gone, ("SELECT pg_notify(?, ?)", (CHANNEL, self.run))])

    async def live(self) -> list[str]:
        """Return the runs whose heartbeat has not lapsed."""
        rows = await self._db.fetchall(
            "SELECT run FROM instances WHERE beat_at >= ? ORDER BY started_at",
            (time.time() - LAPSE,),
        )
        return [str(r[0]) for r in rows]

    async def prune(self) -> None:
        """Forget runs lapsed long ago (their work was taken over after ``LAPSE``)."""
        await self._db.execute(
            "DELETE FROM instances WHERE beat_at < ?", (time.time() - 100 * LAPSE,)
        )


class LeaseKeeper(abc.ABC):
    """Takes, keeps and gives up leases for one process run."""

    backend_pid: int | None = None  # the dedicated connection's server process, if any

    @abc.abstractmethod
    async def take(self, name: str) -> int | None:
        """Try to become the holder of lease ``name``; return its epoch, or None if held."""

    @abc.abstractmethod
    async def keep(self, name: str, epoch: int) -> bool:
        """Renew a held lease; False if it was lost (its connection died, a new epoch began)."""

    @abc.abstractmethod
    async def give_up(self, name: str, epoch: int) -> None:
        """Let another instance take lease ``name`` now."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Give up every lease (closing the dedicated connection)."""

    async def listen(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` when another run stops (again after a lost connection: call this
        at each beat)."""
        return None


class SoleKeeper(LeaseKeeper):
    """One process on the database (SQLite): it holds every lease, for good."""

    async def take(self, name: str) -> int | None:
        return 1

    async def keep(self, name: str, epoch: int) -> bool:
        return True

    async def give_up(self, name: str, epoch: int) -> None:
        return None

    async def close(self) -> None:
        return None


class PgKeeper(LeaseKeeper):
    """Leases on PostgreSQL: session advisory locks on one dedicated asyncpg connection."""

    def __init__(self, dsn: str, run: str) -> None:
        self._dsn = dsn
        self.run = run
        self._conn: Any = None  # asyncpg.Connection, opened when a lease is first wanted
        self._lock = asyncio.Lock()  # one statement at a time on the connection
        self._held: set[str] = set()
        self._wake: Callable[[], None] | None = None
        self._listening: Any = None  # the connection the listener is on
        self.notified = 0  # notifications of other runs' stops (tests count them)

    async def _connection(self) -> Any:
        import asyncpg  # type: ignore[import-untyped]  # only where PostgreSQL is used

        if self._conn is None or self._conn.is_closed():
            self._held.clear()  # a new session holds no lock
            self._conn = await asyncpg.connect(
                self._dsn, statement_cache_size=0, timeout=STATEMENT_TIMEOUT
            )
            self.backend_pid = int(self._conn.get_server_pid())  # tests end it to kill us
        if self._wake is not None and self._listening is not self._conn:
            # On this dedicated connection, never a pooled one: a pool would hand it on.
            await asyncio.wait_for(
                self._conn.add_listener(CHANNEL, self._notified), STATEMENT_TIMEOUT
            )
            self._listening = self._conn
        return self._conn

    async def _drop(self) -> None:
        # A broken connection may still hold the locks on the server until it notices: close
        # it for sure, so they are released and nothing here believes it still holds them.
        conn, self._conn = self._conn, None
        self._held.clear()
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.terminate()

    async def listen(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        async with self._lock:
            try:
                await self._connection()
            except Exception as exc:
                log.warning("could not listen for other instances (%s); trying again", exc)
                await self._drop()

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload != self.run and self._wake is not None:
            self.notified += 1
            self._wake()

    async def take(self, name: str) -> int | None:
        async with self._lock:
            try:
                conn = await self._connection()
                got = await conn.fetchval(
                    "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                    "lease:" + name,
                    timeout=STATEMENT_TIMEOUT,
                )
                if not got:
                    return None
                self._held.add(name)
                # Under the lock, so no other instance writes the row meanwhile.
                before = await conn.fetchrow(
                    "SELECT holder, expires_at FROM leases WHERE name = $1",
                    name,
                    timeout=STATEMENT_TIMEOUT,
                )
                epoch = await conn.fetchval(
                    "INSERT INTO leases (name, holder, epoch, expires_at) VALUES ($1, $2, 1, $3)"
                    " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
                    " epoch = leases.epoch + 1, expires_at = excluded.expires_at RETURNING epoch",
                    name,
                    self.run,
                    time.time() + LEASE_TTL,
                    timeout=STATEMENT_TIMEOUT,
                )
            except Exception as exc:
                log.warning("could not try for lease %s (%s); trying again", name, exc)
                await self._drop()
                return None
        # The old holder lost its session (so the lock), but may not know yet if it was cut
        # off rather than killed: it stops acting when its lease ends, so wait until then.
        if before is not None and before[0] != self.run and before[1] > time.time():
            await asyncio.sleep(before[1] - time.time())
        return int(epoch)

    async def keep(self, name: str, epoch: int) -> bool:
        async with self._lock:
            if name not in self._held or self._conn is None:
                return False
            try:
                changed = await self._conn.fetchval(
                    "WITH k AS (UPDATE leases SET expires_at = $1 WHERE name = $2"
                    " AND holder = $3 AND epoch = $4 RETURNING 1) SELECT count(*) FROM k",
                    time.time() + LEASE_TTL,
                    name,
                    self.run,
                    epoch,
                    timeout=STATEMENT_TIMEOUT,
                )
            except Exception:
                await self._drop()
                return False
            return bool(changed)

    async def give_up(self, name: str, epoch: int) -> None:
        async with self._lock:
            if name not in self._held or self._conn is None:
                return
            self._held.discard(name)
            try:
                await self._conn.execute(
                    "UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2"
                    " AND epoch = $3",
                    name,
                    self.run,
                    epoch,
                    timeout=STATEMENT_TIMEOUT,
                )
                await self._conn.fetchval(
                    "SELECT pg_advisory_unlock(hashtextextended($1, 0))",
                    "lease:" + name,
                    timeout=STATEMENT_TIMEOUT,
                )
            except Exception:
                await self._drop()

    async def close(self) -> None:
        async with self._lock:
            conn = self._conn
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.execute(
                        "UPDATE leases SET expires_at = 0 WHERE holder = $1",
                        self.run,
                        timeout=STATEMENT_TIMEOUT,
                    )
        # Closing the session releases its advisory locks (PostgreSQL docs 13.3.5).
        async with self._lock:
            conn, self._conn = self._conn, None
            self._held.clear()
            if conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), STATEMENT_TIMEOUT)
                if not conn.is_closed():
                    conn.terminate()


def keeper(db: Database, run: str) -> LeaseKeeper:
    """Return the lease keeper for ``db``: a dedicated connection if instances share it."""
    if not db.shared:
        return SoleKeeper()
    from bot.store.pg import PostgresDatabase, dedicated_dsn

    assert isinstance(db, PostgresDatabase)
    return PgKeeper(dedicated_dsn(db.url), run)
