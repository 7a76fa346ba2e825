"""Link health: when Google last accepted each link, when it ends, and who was told what."""

from __future__ import annotations

from dataclasses import dataclass

from bot.store.engine import Database

TESTING_LIFETIME = 7 * 86400.0  # Google ends a Testing app's links 7 days after consent


@dataclass(frozen=True, slots=True)
class Health:
    """What is known of one link's health."""

    connected_at: float
    confirmed_at: float | None
    expires_at: float | None  # as Google said (refresh_token_expires_in)
    warned: bool

    def ends_at(self, testing_mode: bool) -> float | None:
        """Return when the link ends, if known: Google's word, or 7 days in Testing mode."""
        ends = [t for t in (self.expires_at,) if t is not None]
        if testing_mode:
            ends.append(self.connected_at + TESTING_LIFETIME)
        return min(ends) if ends else None


@dataclass(frozen=True, slots=True)
class EndedLink:
    """A link Google stopped accepting, whose owner is still to be told."""

    user_key: str  # the person whose link it was
    tell: str  # the chat account that made it, told in its direct chat
    address: str
    ended_at: float


class LinkHealth:
    """The link_health and ended_links tables."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def links(self) -> list[str]:
        """Return the user keys of every link, the longest unconfirmed first (so restarts
        never keep the same links from their turn)."""
        rows = await self._db.fetchall(
            "SELECT a.user_key FROM accounts a LEFT JOIN link_health h USING (user_key)"
            " ORDER BY h.confirmed_at IS NOT NULL, h.confirmed_at, a.user_key"
        )
        return [str(r[0]) for r in rows]

    async def get(self, user_key: str, connected_at: float) -> Health:
        """Return the health of ``user_key``'s link made at ``connected_at`` (a reconnect
        starts afresh)."""
        rows = await self._db.fetchall(
            "SELECT confirmed_at, expires_at, warned FROM link_health"
            " WHERE user_key = ? AND connected_at = ?",
            (user_key, connected_at),
        )
        row = next(iter(rows), None)
        if row is None:
            return Health(connected_at, None, None, False)
        return Health(connected_at, row[0], row[1], bool(row[2]))

    async def confirmed(
        self, user_key: str, connected_at: float, at: float, expires_at: float | None
    ) -> None:
        """Record that Google accepted the link at ``at`` (and, if it said, when it ends)."""
        await self._db.execute(
            "INSERT INTO link_health (user_key, connected_at, confirmed_at, expires_at)"
            # The stored row's columns qualified: PostgreSQL finds a bare name ambiguous.
            " VALUES (?, ?, ?, ?) ON CONFLICT (user_key) DO UPDATE SET"
            " warned = CASE WHEN link_health.connected_at = excluded.connected_at"
            "   THEN link_health.warned ELSE 0 END,"
            " expires_at = CASE WHEN excluded.expires_at IS NOT NULL THEN excluded.expires_at"
            "   WHEN link_health.connected_at = excluded.connected_at"
            "   THEN link_health.expires_at END,"
            " connected_at = excluded.connected_at, confirmed_at = excluded.confirmed_at",
            (user_key, connected_at, at, expires_at),
        )
        await self._db.execute("DELETE FROM ended_links WHERE user_key = ?", (user_key,))

    async def mark_warned(self, user_key: str, connected_at: float) -> None:
        """Record that the owner of this link was warned of its end."""
        await self._db.execute(
            "INSERT INTO link_health (user_key, connected_at, warned) VALUES (?, ?, 1)"
            " ON CONFLICT (user_key) DO UPDATE SET warned = 1"
            " WHERE link_health.connected_at = excluded.connected_at",
            (user_key, connected_at),
        )

    async def ended(self, user_key: str, tell: str, address: str, at: float) -> None:
        """Record that Google ended ``user_key``'s link, for ``tell`` to be told."""
        await self._db.execute(
            "INSERT INTO ended_links (user_key, tell, address, ended_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (user_key) DO UPDATE SET tell = excluded.tell,"
            " address = excluded.address, ended_at = excluded.ended_at, told = 0",
            (user_key, tell, address, at),
        )
        await self._db.execute("DELETE FROM link_health WHERE user_key = ?", (user_key,))

    async def untold(self) -> list[EndedLink]:
        """Return the ended links whose owners were not told yet."""
        rows = await self._db.fetchall(
            "SELECT user_key, tell, address, ended_at FROM ended_links WHERE told = 0"
            " ORDER BY ended_at"
        )
        return [EndedLink(str(r[0]), str(r[1]), str(r[2]), float(r[3])) for r in rows]

    async def told(self, user_key: str) -> None:
        """Record that the owner of an ended link was told."""
        await self._db.execute("UPDATE ended_links SET told = 1 WHERE user_key = ?", (user_key,))
