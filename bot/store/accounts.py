"""Linked Google accounts, pending logins and direct rooms, with their SQL beside them."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from bot.store.engine import Database
from bot.store.people import People
from bot.store.vault import SecretBox

LOGIN_TTL = 600.0  # a login link lives 10 minutes
ROOMS_KEPT = 10_000  # direct rooms remembered in memory


@dataclass(frozen=True, slots=True)
class Account:
    """A chat user's linked Google account."""

    user_key: str
    address: str
    refresh_token: str
    scopes: tuple[str, ...]
    connected_at: float
    made_by: str = ""  # the chat account that made it, when a person holds it ('': user_key)

    @property
    def maker(self) -> str:
        """Return the chat account that made this link (it keeps it on /unlink)."""
        return self.made_by or self.user_key


@dataclass(frozen=True, slots=True)
class PendingLogin:
    """A login link handed out by ``/connect``, not yet used."""

    state: str
    user_key: str
    display_name: str
    room: str
    verifier: str
    expires_at: float
    used: bool


class Accounts:
    """The accounts, pending_logins and direct_rooms tables."""

    def __init__(self, db: Database, box: SecretBox) -> None:
        self._db = db
        self._box = box
        self._rooms: dict[str, str] = {}  # direct rooms known to be stored, to skip the write
        self._people = People(db)

    @property
    def shared(self) -> bool:
        """Whether other instances write these tables too (bot.store.instances)."""
        return self._db.shared

    async def owner(self, user_key: str) -> str:
        """Return the person whose link a login by ``user_key`` makes (bot.store.people)."""
        return await self._people.person(user_key)

    async def get(self, user_key: str) -> Account | None:
        """Return the account linked to ``user_key``, if any."""
        rows = await self._db.fetchall(
            "SELECT user_key, address, refresh_token, scopes, connected_at, made_by"
            " FROM accounts WHERE user_key = ?",
            (user_key,),
        )
        row = next(iter(rows), None)
        if row is None:
            return None
        return Account(
            user_key=row[0],
            address=row[1],
            refresh_token=self._box.open(row[2]).decode(),
            scopes=tuple(str(row[3]).split()),
            connected_at=row[4],
            made_by=row[5],
        )

    async def address(self, user_key: str) -> str | None:
        """Return the address linked to ``user_key``, if any, without opening its token."""
        rows = await self._db.fetchall(
            "SELECT address FROM accounts WHERE user_key = ?", (user_key,)
        )
        return next((str(r[0]) for r in rows), None)

    async def save(
        self,
        user_key: str,
        address: str,
        refresh_token: str,
        scopes: tuple[str, ...],
        made_by: str = "",
    ) -> None:
        """Link (or re-link) ``user_key`` (a person) to a Google account; ``made_by``: the
        chat account that made the link, when it is not ``user_key`` itself."""
        await self._db.execute(
            "INSERT INTO accounts (user_key, address, refresh_token, scopes, connected_at,"
            " made_by) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_key) DO UPDATE SET"
            " address = excluded.address, refresh_token = excluded.refresh_token,"
            " scopes = excluded.scopes, connected_at = excluded.connected_at,"
            " made_by = excluded.made_by",
            (
                user_key,
                address,
                self._box.seal(refresh_token.encode()),
                " ".join(scopes),
                time.time(),
                "" if made_by == user_key else made_by,
            ),
        )

    async def replace_refresh_token(self, account: Account, refresh_token: str) -> bool:
        """Store the refresh token Google rotated ``account``'s into; False if the link was
        replaced (or ended) meanwhile, which the newer link's token outranks."""
        changed = await self._db.execute(
            "UPDATE accounts SET refresh_token = ? WHERE user_key = ? AND connected_at = ?",
            (self._box.seal(refresh_token.encode()), account.user_key, account.connected_at),
        )
        return changed == 1

    async def delete(self, user_key: str) -> bool:
        """Forget the link; return whether there was one."""
        changed = await self._db.execute("DELETE FROM accounts WHERE user_key = ?", (user_key,))
        return changed == 1

    async def new_login(
        self, user_key: str, display_name: str, room: str, verifier: str
    ) -> PendingLogin:
        """Store a pending login with a fresh 256-bit state."""
        state = secrets.token_urlsafe(32)
        expires_at = time.time() + LOGIN_TTL
        # Old, dead links are of no use to anyone.
        await self._db.execute("DELETE FROM pending_logins WHERE expires_at < ?", (time.time(),))
        await self._db.execute(
            "INSERT INTO pending_logins"
            " (state, user_key, display_name, room, verifier, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (state, user_key, display_name, room, self._box.seal(verifier.encode()), expires_at),
        )
        return PendingLogin(state, user_key, display_name, room, verifier, expires_at, False)

    async def find_login(self, state: str) -> PendingLogin | None:
        """Return a pending login by state, used or not, expired or not."""
        rows = await self._db.fetchall(
            "SELECT state, user_key, display_name, room, verifier, expires_at, used"
            " FROM pending_logins WHERE state = ?",
            (state,),
        )
        row = next(iter(rows), None)
        if row is None:
            return None
        return PendingLogin(
            row[0], row[1], row[2], row[3], self._box.open(row[4]).decode(), row[5], bool(row[6])
        )

    async def consume_login(self, state: str) -> bool:
        """Mark a login used, atomically; False if it was used already or has expired."""
        changed = await self._db.execute(
            "UPDATE pending_logins SET used = 1 WHERE state = ? AND used = 0 AND expires_at >= ?",
            (state, time.time()),
        )
        return changed == 1

    async def direct_room(self, user_key: str) -> str | None:
        """Return the user's known direct chat with the bot."""
        rows = await self._db.fetchall(
            "SELECT room FROM direct_rooms WHERE user_key = ?", (user_key,)
        )
        return next((str(r[0]) for r in rows), None)

    async def remember_direct_room(self, user_key: str, room: str) -> None:
        """Record the user's direct chat (called for every direct message); written only when
        it changes."""
        if self._rooms.get(user_key) == room and not self._db.shared:
            return  # one process: nobody else changed it (instances: another may have)
        await self._db.execute(
            "INSERT INTO direct_rooms (user_key, room) VALUES (?, ?)"
            " ON CONFLICT (user_key) DO UPDATE SET room = excluded.room"
            " WHERE direct_rooms.room != excluded.room",
            (user_key, room),
        )
        if len(self._rooms) >= ROOMS_KEPT:  # memory must not grow with the number of users
            self._rooms.clear()
        self._rooms[user_key] = room
