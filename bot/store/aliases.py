"""The per-user address book: short names for frequent recipients."""

from __future__ import annotations

import re

from bot.errors import BotError
from bot.store.engine import Database

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
MAX_ALIASES = 200


class Aliases:
    """The aliases table: (user, name) -> address."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def all(self, user_key: str) -> dict[str, str]:
        """Return the user's aliases, name -> address."""
        rows = await self._db.fetchall(
            "SELECT name, address FROM aliases WHERE user_key = ? ORDER BY name", (user_key,)
        )
        return {str(name): str(address) for name, address in rows}

    async def add(self, user_key: str, name: str, address: str) -> str:
        """Add or change an alias to the checked ``address``; return the normalised name.
        Raises BotError with advice."""
        name = alias_name(name)
        if len(await self.all(user_key)) >= MAX_ALIASES:
            raise BotError(f"You have {MAX_ALIASES} aliases, the most allowed; delete one first.")
        await self._db.execute(
            "INSERT INTO aliases (user_key, name, address) VALUES (?, ?, ?)"
            " ON CONFLICT (user_key, name) DO UPDATE SET address = excluded.address",
            (user_key, name, address),
        )
        return name

    async def delete(self, user_key: str, name: str) -> bool:
        """Delete an alias; return whether it existed."""
        changed = await self._db.execute(
            "DELETE FROM aliases WHERE user_key = ? AND name = ?", (user_key, name.lower())
        )
        return changed == 1


def alias_name(name: str) -> str:
    """Return ``name`` normalised; raise BotError with advice if it cannot be an alias."""
    name = name.lower()
    if not _NAME.fullmatch(name):
        raise BotError(
            "An alias name is 1-32 letters, digits, dots, dashes or underscores, "
            "e.g. /alias add bob bob@example.com."
        )
    return name
