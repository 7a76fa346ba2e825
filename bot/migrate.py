"""``mailbridge migrate --to postgresql://…``: move a SQLite deployment onto PostgreSQL.

It holds the SQLite file's lock (bot/lock.py) from before it opens the file until the copy is
committed, so it refuses while a bot runs on it and no bot starts on it meanwhile. The file is
left as it was; the bot must not run on it again once instances run on PostgreSQL (its queued
mail would go twice).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from bot.config import Config
from bot.errors import ConfigError, StoreError
from bot.lock import hold
from bot.store.db import MEMORY, open_database
from bot.store.sqlite import SqliteDatabase
from bot.store.vault import KEY_ENV


def migrate_to(config: Config, url: str, key_file: Path | None) -> list[str]:
    """Copy the configured SQLite database into the empty PostgreSQL ``url``; return lines
    saying what was copied (counts only) and what to do next."""
    from bot.store.pg import has_password, shown  # SQLAlchemy only where PostgreSQL is used

    database = _database(config)
    with hold(database):  # the lock `mailbridge run` holds: refused while a bot runs on it
        version, copied = asyncio.run(_copy(database, url))
    # As the operator wrote it (shown() spells the driver's scheme), without the password.
    where = url.split("://", 1)[0] + "://" + shown(url).split("://", 1)[1]
    said = [f"copied {database} (schema version {version}) into {where} in one transaction:"]
    said += [f"  {table}: {rows}" for table, rows in copied]
    said.append(f"  {len(copied)} tables, {sum(n for _, n in copied)} rows")
    if os.environ.get(KEY_ENV):
        key = f"${KEY_ENV}"
    elif key_file is not None and key_file.exists():
        key = str(key_file)
    else:
        key = f"the key that was at {key_file} (it is not there now)"
    said += [
        f"data key: links and waiting mail stay sealed with the data key {key}: every instance"
        f" on PostgreSQL must use that same key ([bot] data_key_file, or ${KEY_ENV})",
        f'next: set [bot] database = "{where}"'
        f"{' with the password in place of ***' if has_password(url) else ''}"
        " (or $MAILBRIDGE_DATABASE_URL) and start the bot; never start one on the SQLite"
        " file again, or its waiting mail goes twice",
    ]
    return said


async def _copy(database: Path, url: str) -> tuple[int, list[tuple[str, int]]]:
    from bot.store.move import move
    from bot.store.pg import PostgresDatabase

    source = await open_database(database)  # migrated forward, as `run` would
    target = PostgresDatabase.connect(url)
    try:
        assert isinstance(source, SqliteDatabase)
        return await source.schema_version(), await move(source, target)
    finally:
        await target.close()
        await source.close()


def _database(config: Config) -> Path:
    database = config.bot.database
    if not isinstance(database, Path):
        raise ConfigError(
            "[bot] database is already PostgreSQL (or $MAILBRIDGE_DATABASE_URL is set):"
            " migrate copies the SQLite file [bot] database names; point it at that file"
        )
    if str(database) == MEMORY or not database.is_file() or database.stat().st_size == 0:
        raise StoreError(f"there is no database at {database} to migrate ([bot] database)")
    return database
