"""The SQLite engine: statements on the event loop's thread, waits in aiosqlite's thread.

A statement on ``sqlite3`` directly takes 3-40 µs here; the same statement through aiosqlite's
worker thread costs a thread hop each way (0.1-0.3 ms), and a ``/mail`` makes a dozen. So each
statement runs at once on a connection of the loop's thread that never waits for a lock
(``timeout=0``). One process writes (bot/lock.py), so the database is locked only by someone
else: the sqlite3 shell, a ``PRAGMA`` from a tool. Then the statement goes to aiosqlite's
connection, whose worker thread waits out the lock (``busy_timeout``) while the loop goes on.

Durable commits (the accept and the claim: they decide what a user is told) must survive a
power cut. In WAL mode ``synchronous=NORMAL`` writes a commit to the log without syncing it;
``FULL`` syncs the log at each commit. Here the commit is written on the loop's thread and the
log is then synced (``fdatasync``) before the caller hears of it, in one of two ways:
- on a disk whose syncs take under ``INLINE_SYNC`` on average, when nothing else is writing, the
  loop's thread syncs, as FULL would: a worker thread's round trip costs 0.1-0.3 ms here, as
  much as such a sync;
- on a slower disk, or in a burst (another durable commit came while the loop let whatever was
  ready run once), a worker thread syncs while the loop goes on, and one sync covers every
  commit written before it began.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Sequence

import aiosqlite

from bot.store.engine import SQLITE, Database, Params, Row, Statement

log = logging.getLogger(__name__)
MEMORY = ":memory:"
BUSY_TIMEOUT_MS = 5000  # how long the waiting connection waits for someone else's lock
INLINE_SYNC = 0.0005  # seconds: a disk whose syncs take less (on average) is synced by the loop


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class SqliteDatabase(Database):
    """One SQLite file (or memory) written by this process only."""

    dialect = SQLITE
    shared = False
    transient: tuple[type[BaseException], ...] = (sqlite3.OperationalError,)

    def __init__(self, path: str) -> None:
        self.path = path
        self.connection = self._connect(timeout=0.0)  # the loop's own: never waits
        self._waiting: aiosqlite.Connection | None = None  # opened at the first lock met
        self._wal = -1  # the log's file descriptor, for syncing it
        self._sync_lock = asyncio.Lock()
        self.committed = 0  # durable commits written ...
        self.synced = 0  # ... and how many of them a finished sync covers
        self.inline_sync = INLINE_SYNC  # tests set 0 for the worker thread's way
        self.sync_seconds = 0.0  # how long a sync of the log takes here (a moving average)

    def _connect(self, timeout: float) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        try:
            connection.execute("PRAGMA foreign_keys = ON")
            if self.path != MEMORY:
                connection.execute("PRAGMA journal_mode = WAL")
                connection.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            connection.close()
            raise
        return connection

    async def _waiter(self) -> aiosqlite.Connection:
        if self._waiting is None:
            self._waiting = await aiosqlite.connect(self.path, isolation_level=None)
            await self._waiting.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await self._waiting.execute("PRAGMA foreign_keys = ON")
        return self._waiting

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        try:
            return self.connection.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or self.path == MEMORY:
                raise
        log.info("the database is locked by another program; waiting for it")
        return list(await (await self._waiter()).execute_fetchall(sql, params))

    async def execute(self, sql: str, params: Params = ()) -> int:
        try:
            cur = self.connection.execute(sql, params)
            cur.fetchall()  # a statement with RETURNING ends (and commits) only once read
            return cur.rowcount
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or self.path == MEMORY:
                raise
        log.info("the database is locked by another program; waiting for it")
        return (await (await self._waiter()).execute(sql, params)).rowcount

    async def transaction(self, statements: Sequence[Statement]) -> list[list[Row]]:
        db = self.connection
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or self.path == MEMORY:
                raise
            return await self._transaction_waiting(statements)
        # No await until COMMIT: no other statement of this process runs inside it.
        try:
            found = [db.execute(sql, params).fetchall() for sql, params in statements]
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return found

    async def _transaction_waiting(self, statements: Sequence[Statement]) -> list[list[Row]]:
        # All queued at once, so the waiting connection's one worker runs them back to back
        # between BEGIN and COMMIT; any failure rolls the whole transaction back.
        db = await self._waiter()
        results = await asyncio.gather(
            db.execute_fetchall("BEGIN IMMEDIATE"),
            *(db.execute_fetchall(sql, params) for sql, params in statements),
            return_exceptions=True,
        )
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is None:
            await db.execute_fetchall("COMMIT")
            return [list(r) for r in results[1:] if not isinstance(r, BaseException)]
        if not isinstance(results[0], BaseException):
            await db.execute_fetchall("ROLLBACK")
        raise failed

    async def durable(self, sql: str, params: Params, *, serial: str = "") -> list[Row]:
        # ``serial`` needs nothing: SQLite runs one write at a time, each statement one write.
        rows = await self.fetchall(sql, params)
        if self.path == MEMORY:
            return rows
        self.committed += 1
        await self._sync(self.committed)
        return rows

    async def _sync(self, commit: int) -> None:
        """Return once the log is synced to disk with durable commit number ``commit`` in it."""
        # A quick disk with no sync under way: let whatever else is ready run once; other
        # durable commits written meanwhile mean a burst, which one sync in a worker thread
        # covers at once while the loop goes on.
        inline = self.sync_seconds < self.inline_sync and not self._sync_lock.locked()
        if inline:
            await asyncio.sleep(0)
            inline = self.committed == commit
        async with self._sync_lock:
            if self.synced >= commit:  # a sync that began after it was written covered it
                return
            upto = self.committed
            # The statement ran: its caller must hear its rows, whatever the sync says.
            try:
                if inline:
                    self._fsync()  # a quick disk, nothing else waiting: no thread's round trip
                else:
                    await asyncio.get_running_loop().run_in_executor(None, self._fsync)
            except OSError as exc:
                log.error("could not sync the database's log to disk: %s", exc)
            else:
                way = "on the loop" if inline else "in a worker thread"
                log.debug("database log synced (%s): durable commits up to %d", way, upto)
            self.synced = upto

    def _fsync(self) -> None:
        wal = f"{self.path}-wal"
        # The log keeps its file while a connection is open; reopen it if it was replaced.
        if self._wal < 0 or os.fstat(self._wal).st_ino != os.stat(wal).st_ino:
            if self._wal >= 0:
                os.close(self._wal)
            self._wal = os.open(wal, os.O_RDONLY | os.O_CLOEXEC)
        # As SQLite syncs its log on Linux: the data and what reading it needs (its size), not
        # the file's times.
        started = time.perf_counter()
        os.fdatasync(self._wal)
        self.sync_seconds += (time.perf_counter() - started - self.sync_seconds) / 8

    async def schema_version(self) -> int:
        rows = await self.fetchall("PRAGMA user_version")
        return next((int(r[0]) for r in rows), 0)

    async def apply(self, version: int, statements: Sequence[str]) -> bool:
        # At start, before anything else runs: the loop may wait for a lock here.
        memory = self.path == MEMORY
        db = self.connection if memory else self._connect(timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                # Read again under the write lock: another connection may have migrated.
                if int(db.execute("PRAGMA user_version").fetchone()[0]) >= version:
                    db.execute("ROLLBACK")
                    return False
                for statement in statements:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {int(version)}")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return True
        finally:
            if not memory:
                db.close()

    async def close(self) -> None:
        async with self._sync_lock:  # a sync under way keeps the log's descriptor open
            if self._wal >= 0:
                os.close(self._wal)
                self._wal = -1
        if self._waiting is not None:
            await self._waiting.close()
        self.connection.close()
