"""The one interface every store module speaks, and its SQLite engine (aiosqlite).

Store modules write one SQL text for both engines, with ``?`` placeholders and the portable
subset SQLite and PostgreSQL share (``ON CONFLICT``, ``RETURNING``, ``FILTER``, ``coalesce``).
What differs between the engines lives here and in ``bot.store.pg`` only: how a transaction is
opened, what makes a commit durable, how one person's writes are serialised, how the schema
version is kept and how the migrations' column types are spelled.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import sqlite3
from collections.abc import Sequence
from typing import Any

import aiosqlite

log = logging.getLogger(__name__)

Params = Sequence[Any]
Row = Sequence[Any]
Statement = tuple[str, Params]
SQLITE, POSTGRESQL = "sqlite", "postgresql"


class Database(abc.ABC):
    """A connection (or pool) to the store's database."""

    dialect: str
    shared: bool  # several instances may share it (PostgreSQL), or one process only (SQLite)
    transient: tuple[type[BaseException], ...]  # errors that pass: a locked or lost database

    @abc.abstractmethod
    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one statement (committed at once) and return its rows."""

    @abc.abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement (committed at once) and return how many rows it changed."""

    @abc.abstractmethod
    async def transaction(self, statements: Sequence[Statement]) -> list[list[Row]]:
        """Run ``statements`` in one transaction, all or none; return each one's rows."""

    @abc.abstractmethod
    async def durable(self, sql: str, params: Params, *, serial: str = "") -> list[Row]:
        """Run one statement as a commit that survives a power cut; return its rows.

        ``serial`` names what the statement must not run beside (one person's send budget):
        statements with the same ``serial`` run one after another, on every instance."""

    @abc.abstractmethod
    async def schema_version(self) -> int:
        """Return the schema version the database is at (0: empty)."""

    @abc.abstractmethod
    async def apply(self, version: int, statements: Sequence[str]) -> bool:
        """Take the database from ``version - 1`` to ``version`` in one transaction, unless
        another connection did meanwhile; return whether this call did."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection (or pool)."""


class SqliteDatabase(Database):
    """One aiosqlite connection in autocommit mode: one process, one writer at a time."""

    dialect = SQLITE
    shared = False
    transient: tuple[type[BaseException], ...] = (sqlite3.OperationalError,)

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self.connection = connection
        self._lock = asyncio.Lock()  # one switch to synchronous FULL and back at a time

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return list(await self.connection.execute_fetchall(sql, params))

    async def execute(self, sql: str, params: Params = ()) -> int:
        # One trip to the worker thread: the cursor is not closed (a second trip); it holds
        # no lock once its statement is done, and the garbage collector frees it.
        cur = await self.connection.execute(sql, params)
        return cur.rowcount

    async def transaction(self, statements: Sequence[Statement]) -> list[list[Row]]:
        # The connection is shared and autocommits: all statements are queued at once, so its
        # one worker runs them back to back between BEGIN and COMMIT; any failure rolls the
        # whole transaction back.
        db = self.connection
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
        # In WAL mode, synchronous=NORMAL syncs the log only at checkpoints: a commit survives
        # a crash of the process, not a power cut. FULL syncs at each commit. The three are
        # queued together: the connection's one worker runs them in this order, so the
        # statement runs between the switches (others may too, with FULL: more syncs, never
        # fewer), and the trip costs one wait, not three. ``serial`` needs nothing: SQLite
        # runs one write at a time, and each statement is one write.
        async with self._lock:
            full, rows, normal = await asyncio.gather(
                self.connection.execute_fetchall("PRAGMA synchronous = FULL"),
                self.connection.execute_fetchall(sql, params),
                self.connection.execute_fetchall("PRAGMA synchronous = NORMAL"),
                return_exceptions=True,
            )
        if isinstance(rows, BaseException):
            raise rows
        # The statement ran: its caller must hear its rows (retrying it would find it done).
        for switch in (full, normal):
            if isinstance(switch, BaseException):
                log.error("could not switch synchronous for a durable commit: %s", switch)
        return list(rows)

    async def schema_version(self) -> int:
        rows = await self.connection.execute_fetchall("PRAGMA user_version")
        return next((int(r[0]) for r in rows), 0)

    async def apply(self, version: int, statements: Sequence[str]) -> bool:
        db = self.connection
        await db.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the write lock: another connection may have migrated meanwhile.
            if await self.schema_version() >= version:
                await db.execute("ROLLBACK")
                return False
            for statement in statements:
                await db.execute(statement)
            await db.execute(f"PRAGMA user_version = {int(version)}")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        await db.execute("COMMIT")
        return True

    async def close(self) -> None:
        await self.connection.close()
