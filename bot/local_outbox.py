"""The local outbox backend: each message is written as an ``.eml`` file; nothing is sent."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from bot.addresses import EmailAddress
from bot.backends import Receipt, SendRefused
from bot.compose import TRIAL_SENDER


class LocalOutbox:
    """Write mail into a folder instead of sending it (trial mode, and for testing setups)."""

    name = "outbox"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def sender(self, user_key: str) -> EmailAddress:
        """Return the placeholder sender used in trial mode."""
        return TRIAL_SENDER

    async def prepare(self, user_key: str) -> None:
        """Nothing precedes writing a file."""

    async def send(self, user_key: str, raw: bytes) -> Receipt:
        """Write ``raw`` to a new file in the folder."""
        try:
            path = await asyncio.to_thread(self._write, raw)
        except OSError as exc:
            raise SendRefused(
                f"The mail could not be written to {self.folder}: {exc.strerror}."
            ) from None
        return Receipt(path.name, f"written to {self._shown(path)}, not sent (trial mode)")

    async def close(self) -> None:
        """Nothing to release."""

    def _write(self, raw: bytes) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for n in range(1, 100_000):
            path = self.folder / f"{stamp}-{n:04d}.eml"
            try:
                # O_EXCL: two sends in the same second never overwrite each other.
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                continue
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
            return path
        raise OSError(17, "too many files this second")

    def _shown(self, path: Path) -> str:
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)
