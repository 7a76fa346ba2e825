"""Each user's settings: named text values, such as a time zone or a mail signature."""

from __future__ import annotations

from bot.store.engine import Database

TIMEZONE, SIGNATURE = "timezone", "signature"


class Settings:
    """The user_settings table: (user, name) -> value."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, user_key: str, name: str) -> str | None:
        """Return the user's value of ``name``, or None if unset."""
        rows = await self._db.fetchall(
            "SELECT value FROM user_settings WHERE user_key = ? AND name = ?", (user_key, name)
        )
        return next((str(r[0]) for r in rows), None)

    async def all(self, user_key: str) -> dict[str, str]:
        """Return every setting of the user, name -> value."""
        rows = await self._db.fetchall(
            "SELECT name, value FROM user_settings WHERE user_key = ?", (user_key,)
        )
        return {str(name): str(value) for name, value in rows}

    async def put(self, user_key: str, name: str, value: str | None) -> None:
        """Set ``name`` for the user to ``value``; None removes it."""
        if value is None:
            await self._db.execute(
                "DELETE FROM user_settings WHERE user_key = ? AND name = ?", (user_key, name)
            )
            return
        await self._db.execute(
            "INSERT INTO user_settings (user_key, name, value) VALUES (?, ?, ?)"
            " ON CONFLICT (user_key, name) DO UPDATE SET value = excluded.value",
            (user_key, name, value),
        )
