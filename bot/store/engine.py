"""The one interface every store module speaks; its engines are bot.store.sqlite and .pg.

Store modules write one SQL text for both engines, with ``?`` placeholders and the portable
subset SQLite and PostgreSQL share (``ON CONFLICT``, ``RETURNING``, ``FILTER``, ``coalesce``).
What differs between the engines lives in those two modules only: how a transaction is
opened, what makes a commit durable, how one person's writes are serialised, how the schema
version is kept and how the migrations' column types are spelled.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Sequence
from typing import Any

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
