"""One-time codes that join two chat accounts: made by /link, typed on the other network.

A code is 8 characters from an alphabet without look-alikes (0/O, 1/I/L), about 40 bits: typed
on a phone in a few seconds, and with 5 wrong tries per account per 10 minutes out of reach of
guessing. Only its SHA-256 is stored; the typed code is compared with every live code in constant
time, so neither the lookup nor the comparison tells how close a guess was.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.errors import BotError
from bot.store.engine import Database

ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
LENGTH = 8
TRIES = 5  # wrong codes an account may type per TRIES_WINDOW
TRIES_WINDOW = 600.0


@dataclass(frozen=True, slots=True)
class LinkCode:
    """A code handed out by /link, and who typed it (once claimed)."""

    code_hash: str
    user_key: str
    display_name: str
    expires_at: float
    claimed_by: str
    claimer_name: str


def normalise(typed: str) -> str:
    """Return a typed code as it was made: upper case, without spaces or dashes."""
    return "".join(c for c in typed.upper() if c not in " -")


def shown(code: str) -> str:
    """Return ``code`` as shown to the user: two groups of four."""
    return f"{code[:4]}-{code[4:]}"


def _hash(code: str) -> str:
    return hashlib.sha256(normalise(code).encode()).hexdigest()


class LinkCodes:
    """The link_codes and link_tries tables."""

    def __init__(self, db: Database, ttl: float, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self.ttl = ttl
        self._clock = clock

    async def new(self, user_key: str, display_name: str) -> str:
        """Make a code for ``user_key`` (replacing its unused one); return it."""
        now = self._clock()
        code = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
        await self._db.execute(
            "DELETE FROM link_codes WHERE expires_at < ? OR (user_key = ? AND claimed_by = '')",
            (now, user_key),
        )
        await self._db.execute(
            "INSERT INTO link_codes (code_hash, user_key, display_name, expires_at)"
            " VALUES (?, ?, ?, ?)",
            (_hash(code), user_key, display_name, now + self.ttl),
        )
        return code

    async def claim(self, typed: str, claimer: str, claimer_name: str) -> LinkCode | None:
        """Claim a live, unused code for ``claimer``; None (a wrong try) if there is none.

        Raises BotError once the claimer has typed too many wrong codes."""
        now = self._clock()
        await self._db.execute("DELETE FROM link_tries WHERE at < ?", (now - TRIES_WINDOW,))
        tries = await self._db.fetchall(
            "SELECT count(*) FROM link_tries WHERE user_key = ?", (claimer,)
        )
        if next((int(r[0]) for r in tries), 0) >= TRIES:
            raise BotError(
                f"Too many wrong codes: wait {int(TRIES_WINDOW // 60)} minutes, then send "
                "/link <code> again with a fresh code."
            )
        wanted = _hash(typed)
        rows = await self._db.fetchall(
            "SELECT code_hash FROM link_codes WHERE claimed_by = '' AND expires_at >= ?", (now,)
        )
        found = [str(r[0]) for r in rows if hmac.compare_digest(str(r[0]), wanted)]
        if found:
            # Single use: of two claims at once, one UPDATE finds the code unclaimed.
            changed = await self._db.execute(
                "UPDATE link_codes SET claimed_by = ?, claimer_name = ?, expires_at = ?"
                " WHERE code_hash = ? AND claimed_by = ''",
                (claimer, claimer_name, now + self.ttl, found[0]),
            )
            if changed == 1:
                return await self.pending(claimer)
        await self._db.execute(
            "INSERT INTO link_tries (user_key, at) VALUES (?, ?)", (claimer, now)
        )
        return None

    async def pending(self, claimer: str) -> LinkCode | None:
        """Return the code ``claimer`` typed and has not yet confirmed or cancelled."""
        rows = await self._db.fetchall(
            "SELECT code_hash, user_key, display_name, expires_at, claimed_by, claimer_name"
            " FROM link_codes WHERE claimed_by = ? AND expires_at >= ?"
            " ORDER BY expires_at DESC LIMIT 1",
            (claimer, self._clock()),
        )
        return next((LinkCode(*r) for r in rows), None)

    async def void(self, typed: str) -> None:
        """Void a code typed where others could read it (a group)."""
        await self._db.execute("DELETE FROM link_codes WHERE code_hash = ?", (_hash(typed),))

    async def finish(self, code: LinkCode) -> bool:
        """Use up a claimed code (joined or cancelled); False if it already was."""
        changed = await self._db.execute(
            "DELETE FROM link_codes WHERE code_hash = ?", (code.code_hash,)
        )
        return changed == 1
