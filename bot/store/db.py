"""The SQLite database: opening it safely and bringing its schema up to date."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import aiosqlite

from bot.errors import StoreError
from bot.store.migrations import MIGRATIONS

log = logging.getLogger(__name__)
MEMORY = ":memory:"


async def open_database(
    path: Path | str, migrations: Sequence[Sequence[str]] = MIGRATIONS
) -> aiosqlite.Connection:
    """Open (creating with mode 0600) and migrate the database at ``path``."""
    if str(path) != MEMORY:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Create the file ourselves so it is never readable by others, not even for a moment.
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        os.chmod(path, 0o600)
    db = await aiosqlite.connect(str(path), isolation_level=None)
    try:
        await db.execute("PRAGMA foreign_keys = ON")
        if str(path) != MEMORY:
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")
        await db.execute("PRAGMA busy_timeout = 5000")
        await migrate(db, migrations)
    except BaseException:
        await db.close()
        raise
    return db


async def schema_version(db: aiosqlite.Connection) -> int:
    """Return ``PRAGMA user_version``."""
    async with db.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def migrate(db: aiosqlite.Connection, migrations: Sequence[Sequence[str]]) -> None:
    """Apply the migrations the database lacks, each in its own transaction."""
    version = await schema_version(db)
    if version > len(migrations):
        raise StoreError(
            f"The database is at schema version {version}, but this mailbridge knows only "
            f"{len(migrations)}: it was written by a newer mailbridge. Upgrade mailbridge, or "
            "restore a backup made before the upgrade."
        )
    while version < len(migrations):
        await db.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the write lock: another connection may have migrated meanwhile.
            version = await schema_version(db)
            if version < len(migrations):
                for statement in migrations[version]:
                    await db.execute(statement)
                version += 1
                await db.execute(f"PRAGMA user_version = {version}")
                log.info("database migrated to schema version %d", version)
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        await db.execute("COMMIT")


async def ping(db: aiosqlite.Connection) -> None:
    """Run the cheapest statement: raises if the database does not answer."""
    async with db.execute("SELECT 1") as cur:
        await cur.fetchone()


async def tally(db: aiosqlite.Connection) -> tuple[dict[str, int], int]:
    """Return the outbox's rows by state, and how many accounts are linked."""
    async with db.execute("SELECT state, count(*) FROM outbox GROUP BY state") as cur:
        counts = {str(state): int(n) for state, n in await cur.fetchall()}
    async with db.execute("SELECT count(*) FROM accounts") as cur:
        row = await cur.fetchone()
    return counts, int(row[0]) if row else 0
