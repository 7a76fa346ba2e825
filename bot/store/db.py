"""The store's database: opening it (a SQLite file, or a PostgreSQL server) and migrating it."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from bot.errors import StoreError
from bot.store.engine import Database
from bot.store.migrations import MIGRATIONS
from bot.store.sqlite import SqliteDatabase

log = logging.getLogger(__name__)
MEMORY = ":memory:"


def is_url(target: Path | str) -> bool:
    """Whether the configured database is a PostgreSQL URL (else a SQLite file)."""
    return isinstance(target, str) and target.startswith(
        ("postgresql://", "postgres://", "postgresql+asyncpg://")
    )


def shown(target: Path | str) -> str:
    """Return the configured database for output and logs: a URL without its password."""
    if not is_url(target):
        return str(target)
    from bot.store.pg import shown as shown_url

    return shown_url(str(target))


async def open_database(
    target: Path | str, migrations: Sequence[Sequence[str]] = MIGRATIONS
) -> Database:
    """Open and migrate the database ``target``: a PostgreSQL URL, or a SQLite file (created
    with mode 0600)."""
    db = await (_open_postgres(str(target)) if is_url(target) else _open_sqlite(target))
    try:
        await migrate(db, migrations)
    except BaseException:
        await db.close()
        raise
    return db


async def _open_postgres(url: str) -> Database:
    from bot.store.pg import PostgresDatabase  # SQLAlchemy only where PostgreSQL is used

    return PostgresDatabase.connect(url)


async def _open_sqlite(path: Path | str) -> Database:
    if str(path) != MEMORY:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Create the file ourselves so it is never readable by others, not even for a moment.
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        os.chmod(path, 0o600)
    return SqliteDatabase(str(path))


async def schema_version(db: Database) -> int:
    """Return the schema version ``db`` is at."""
    return await db.schema_version()


async def migrate(db: Database, migrations: Sequence[Sequence[str]]) -> None:
    """Apply the migrations the database lacks, each in its own transaction."""
    version = await db.schema_version()
    if version > len(migrations):
        raise StoreError(
            f"The database is at schema version {version}, but this mailbridge knows only "
            f"{len(migrations)}: it was written by a newer mailbridge. Upgrade mailbridge, or "
            "restore a backup made before the upgrade."
        )
    for number in range(version + 1, len(migrations) + 1):
        if await db.apply(number, migrations[number - 1]):
            log.info("database migrated to schema version %d", number)


async def ping(db: Database) -> None:
    """Run the cheapest statement: raises if the database does not answer."""
    await db.fetchall("SELECT 1")


async def tally(db: Database) -> tuple[dict[str, int], int]:
    """Return the outbox's rows by state, and how many accounts are linked."""
    rows = await db.fetchall("SELECT state, count(*) FROM outbox GROUP BY state")
    counts = {str(state): int(n) for state, n in rows}
    linked = await db.fetchall("SELECT count(*) FROM accounts")
    return counts, next((int(r[0]) for r in linked), 0)
