"""Replies waiting for the instance that can send them (bot.relay): one row each, taken once."""

from __future__ import annotations

import time

from bot.store.engine import Database
from bot.store.vault import SecretBox

BATCH = 20  # rows taken at a time


class RelayedRows:
    """The relayed table; each reply is sealed at rest, as it may name a mail."""

    def __init__(self, db: Database, box: SecretBox) -> None:
        self._db = db
        self._box = box

    async def put(self, platform: str, room: str, plain: bytes) -> None:
        """Queue ``plain`` (a reply) for ``room`` on ``platform``."""
        await self._db.execute(
            "INSERT INTO relayed (platform, room, sealed, queued_at) VALUES (?, ?, ?, ?)",
            (platform, room, self._box.seal(plain), time.time()),
        )

    async def take(self, platform: str) -> list[tuple[str, bytes]]:
        """Remove and return the oldest replies for ``platform`` (room, plain), in order.

        Taken before they are sent: a leader that dies in between loses them, and none is
        ever sent twice (the core never says anything twice)."""
        rows = await self._db.fetchall(
            "DELETE FROM relayed WHERE id IN"
            " (SELECT id FROM relayed WHERE platform = ? ORDER BY id LIMIT ?)"
            " RETURNING id, room, sealed",
            (platform, BATCH),
        )
        rows.sort(key=lambda row: int(row[0]))  # RETURNING keeps no order
        return [(str(room), self._box.open(bytes(sealed))) for _, room, sealed in rows]
