"""``mailbridge backup DIR`` and ``mailbridge restore DIR``: the database and its data key.

A backup is taken while the bot runs: SQLite's online backup API copies the database as of one
moment (one read transaction; in WAL mode the bot keeps writing meanwhile), so it never takes
the bot's lock (bot/lock.py). A restore puts a backup into an empty location only, holding that
lock, so never while a bot runs on the database. Neither ever overwrites a file. These run
outside any event loop: plain sqlite3.
"""

from __future__ import annotations

import os
from pathlib import Path

from bot.config import Config
from bot.errors import StoreError
from bot.lock import hold
from bot.store.copy import copy_database, schema_of, write_new
from bot.store.db import MEMORY
from bot.store.migrations import MIGRATIONS
from bot.store.vault import KEY_ENV

DATABASE = "mailbridge.db"  # the names inside a backup folder, whatever the configured ones
KEY = "mailbridge.db.key"


def backup(config: Config, folder: Path, key_file: Path | None) -> list[str]:
    """Copy the database and the data key into ``folder``; return lines saying what was done."""
    database = _database(config)
    if not database.exists():
        raise StoreError(f"there is no database at {database} to back up")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    copy, key_copy = folder / DATABASE, folder / KEY
    for path in (copy, key_copy):
        if path.exists():
            raise StoreError(f"{path} exists; a backup never overwrites: choose an empty folder")
    copy_database(database, copy)
    said = [f"database {database} -> {copy} (schema version {schema_of(copy)})"]
    if os.environ.get(KEY_ENV):
        said.append(f"data key: taken from ${KEY_ENV}; keep it with this backup, it is not here")
    elif key_file is not None and key_file.exists():
        write_new(key_copy, key_file.read_bytes())
        said.append(f"data key {key_file} -> {key_copy}")
    else:
        said.append(f"data key: none at {key_file}; the stored secrets cannot be read without it")
    return said


def restore(config: Config, folder: Path, key_file: Path | None) -> list[str]:
    """Put the backup in ``folder`` where the configuration expects the database and key."""
    database = _database(config)
    copy, key_copy = folder / DATABASE, folder / KEY
    if not copy.is_file():
        raise StoreError(f"{copy} does not exist: is {folder} a mailbridge backup?")
    version = schema_of(copy)
    if version > len(MIGRATIONS):
        raise StoreError(
            f"the backup is at schema version {version}, but this mailbridge knows only "
            f"{len(MIGRATIONS)}: restore it with the mailbridge that made it, or a newer one"
        )
    with hold(database):  # the lock `mailbridge run` holds: no bot starts meanwhile
        taken = [p for p in _database_files(database) if p.exists() and p.stat().st_size > 0]
        if key_copy.exists() and key_file is not None and key_file.exists():
            taken.append(key_file)
        if taken:
            names = ", ".join(str(p) for p in taken)
            raise StoreError(f"{names} exists; a restore never overwrites: move it away first")
        database.parent.mkdir(parents=True, exist_ok=True)
        for leftover in _database_files(database):
            leftover.unlink(missing_ok=True)  # empty files only, checked above
        copy_database(copy, database)
        _give_to_owner(database)
        said = [f"database {copy} -> {database} (schema version {version})"]
        if key_copy.exists() and key_file is not None:
            write_new(key_file, key_copy.read_bytes())
            _give_to_owner(key_file)
            said.append(f"data key {key_copy} -> {key_file}")
        else:
            said.append(f"data key: not in the backup; set ${KEY_ENV} as it was when it was made")
    return said


def _give_to_owner(path: Path) -> None:
    """Run as root (say, under the systemd unit's dynamic user), hand a restored file to the
    owner of its folder, the user the bot runs as; its mode stays 0600."""
    if os.geteuid() == 0:
        folder = path.parent.stat()
        os.chown(path, folder.st_uid, folder.st_gid)


def _database(config: Config) -> Path:
    if str(config.bot.database) == MEMORY:
        raise StoreError("[bot] database is :memory:; there is nothing on disk to back up")
    if not isinstance(config.bot.database, Path):
        raise StoreError(
            "[bot] database is PostgreSQL: back it up with pg_dump (and keep the data key),"
            " restore with pg_restore; backup and restore copy SQLite files only"
        )
    return config.bot.database


def _database_files(database: Path) -> list[Path]:
    return [database, *(database.with_name(database.name + s) for s in ("-wal", "-shm"))]
