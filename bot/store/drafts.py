"""Guided drafts: the answers a user gave so far to /mail's questions, one draft per user."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from bot.store.engine import Database
from bot.store.vault import SecretBox


@dataclass(frozen=True, slots=True)
class Draft:
    """A mail being written question by question."""

    user_key: str
    room: str
    step: str  # the question waiting for its answer: "to", "subject" or "body"
    to: str = ""  # the recipients token, as /mail takes it
    subject: str = ""
    body: str = ""
    updated_at: float = 0.0
    # The chat events of the answers taken (the last few): a redelivery after a restart is not
    # another answer, even when a newer message was handled before it.
    answered: tuple[str, ...] = ()


class Drafts:
    """The drafts table; its answers (recipients, subject, body) are sealed at rest."""

    def __init__(self, db: Database, box: SecretBox) -> None:
        self._db = db
        self._box = box
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, user_key: str) -> asyncio.Lock:
        """Return the lock that keeps one user's answers in order, one at a time."""
        return self._locks.setdefault(user_key, asyncio.Lock())

    async def get(self, user_key: str) -> Draft | None:
        """Return the user's draft, if one is open (expired or not)."""
        rows = list(
            await self._db.fetchall(
                "SELECT room, step, sealed, updated_at FROM drafts WHERE user_key = ?",
                (user_key,),
            )
        )
        if not rows:
            return None
        room, step, sealed, updated_at = rows[0]
        parts = json.loads(self._box.open(bytes(sealed)))
        return Draft(
            user_key,
            str(room),
            str(step),
            parts["to"],
            parts["subject"],
            parts["body"],
            float(updated_at),
            _answered(parts.get("answered")),
        )

    async def put(self, draft: Draft) -> None:
        """Store ``draft``, replacing the user's earlier one."""
        parts = {"to": draft.to, "subject": draft.subject, "body": draft.body}
        plain = json.dumps(parts | {"answered": list(draft.answered)})
        await self._db.execute(
            "INSERT INTO drafts (user_key, room, step, sealed, updated_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (user_key) DO UPDATE SET room = excluded.room, step = excluded.step,"
            " sealed = excluded.sealed, updated_at = excluded.updated_at",
            (
                draft.user_key,
                draft.room,
                draft.step,
                self._box.seal(plain.encode()),
                draft.updated_at,
            ),
        )

    async def drop(self, user_key: str) -> bool:
        """Delete the user's draft; return whether there was one."""
        changed = await self._db.execute("DELETE FROM drafts WHERE user_key = ?", (user_key,))
        if not self.lock(user_key).locked():
            del self._locks[user_key]
        return changed == 1


def _answered(value: object) -> tuple[str, ...]:
    """Read the answered events (a draft stored before this was one event key, or none)."""
    if isinstance(value, str):
        return (value,) if value else ()
    return tuple(str(v) for v in value) if isinstance(value, list) else ()
