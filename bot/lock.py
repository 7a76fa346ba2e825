"""One process per database: an exclusive lock on a file beside it, held while mailbridge runs.

Two processes on one SQLite file race in their migrations and each takes the other's in-flight
mail for a crash's leftovers. The lock is ``flock`` on ``<database>.lock``, not on the database
itself: SQLite's own locks on that file are POSIX record locks, which any second descriptor of
the same file in this process would silently release on close. The kernel drops the lock when
the process ends, however it ends, so no stale lock survives a crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from bot.errors import InUseError


def lock_path(database: Path) -> Path:
    """Return the lock file of ``database``."""
    return database.with_name(database.name + ".lock")


@contextlib.contextmanager
def hold(database: Path) -> Iterator[None]:
    """Hold ``database`` for this process until the block ends; raise InUseError if another
    process holds it."""
    path = lock_path(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder(fd)
            who = f"another mailbridge (pid {pid})" if pid else "another mailbridge process"
            raise InUseError(
                f"the database {database} is in use by {who}; stop that one first, or give "
                "this one a database of its own ([bot] database)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays, so every process locks the same one


def _holder(fd: int) -> int | None:
    """Return the pid the holder wrote; it writes just after locking, so wait a moment."""
    for _ in range(20):
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text.isdigit():
            return int(text)
        time.sleep(0.01)
    return None
