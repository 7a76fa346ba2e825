"""Whole-file copies of a SQLite database, for backup and restore."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from bot.errors import StoreError


def copy_database(source: Path, target: Path) -> None:
    """Copy ``source`` as of one moment into the new file ``target`` (mode 0600)."""
    write_new(target, b"")
    # Read-write, though it only reads: a read-only connection cannot open a WAL database
    # whose -shm file is missing (the bot stopped). busy_timeout: the bot may be checkpointing.
    src = sqlite3.connect(source, timeout=30)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)  # all pages in one step: one snapshot, however busy the source
        # One self-contained file (the copied header says WAL); the bot turns WAL on again.
        dst.execute("PRAGMA journal_mode = DELETE")
        check = dst.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise StoreError(f"the copy in {target} failed SQLite's check: {check}")
    except sqlite3.Error as exc:
        raise StoreError(f"copying {source} to {target} failed: {exc}") from None
    finally:
        dst.close()
        src.close()


def schema_of(path: Path) -> int:
    """Return the schema version of the SQLite file ``path``."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = db.execute("PRAGMA user_version").fetchone()
    except sqlite3.Error as exc:
        raise StoreError(f"{path} is not a SQLite database: {exc}") from None
    finally:
        db.close()
    return int(row[0]) if row else 0


def write_new(path: Path, data: bytes) -> None:
    """Create ``path`` (never replacing one) readable by its owner only, with ``data``."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        raise StoreError(f"{path} exists; it is never overwritten") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
