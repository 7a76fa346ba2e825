"""The relay of replies between instances (bot.chat.Relay) over the shared database."""

from __future__ import annotations

import json
from dataclasses import asdict

from bot.chat import Button, Reply
from bot.store.relayed import RelayedRows


class StoreRelay:
    """Replies for one network, waiting in the relayed table (bot.store.relayed)."""

    def __init__(self, rows: RelayedRows, platform: str) -> None:
        self._rows = rows
        self._platform = platform

    async def put(self, room: str, reply: Reply) -> None:
        """Keep ``reply`` for ``room`` until the leader takes it."""
        await self._rows.put(self._platform, room, json.dumps(asdict(reply)).encode())

    async def take(self) -> list[tuple[str, Reply]]:
        """Remove and return the oldest replies waiting (room, reply), in order."""
        return [(room, _reply(plain)) for room, plain in await self._rows.take(self._platform)]


def _reply(plain: bytes) -> Reply:
    data = json.loads(plain)
    buttons = tuple(Button(**b) for b in data.pop("buttons"))
    return Reply(buttons=buttons, **data)
