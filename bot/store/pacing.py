"""Send slots shared by the instances of one bot account, so the network's limits hold for the
account, not for each process (Telegram: about one message a second to a chat, 20 a minute to
a group, 30 a second in all; https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this).

Each message to a chat takes the chat's next slot in one statement: the row's time moves on by
the gap, from now or from the slot before, whichever is later, and the slot taken comes back.
Two instances asking at once get two slots a gap apart (the row is locked by the first update
until it commits). The overall rate is split among the live instances (bot.store.instances).
"""

from __future__ import annotations

import time

from bot.store.engine import Database
from bot.store.instances import Instances

SHARE_EVERY = 5.0  # seconds between looks at how many instances share the account
PRUNE_EVERY = 3600.0  # seconds between clean-ups of chats quiet for an hour


class SharedPacer:
    """The send_slots table, and the count of live instances."""

    def __init__(self, db: Database, instances: Instances) -> None:
        self._db = db
        self._instances = instances
        self._share = 1
        self._counted = 0.0
        self._pruned = time.time()

    async def slot(self, chat: str, gap: float) -> float:
        """Reserve ``chat``'s next send slot, ``gap`` after the one before; return its time."""
        now = time.time()
        if now - self._counted > SHARE_EVERY:
            self._counted = now
            self._share = max(1, len(await self._instances.live()))
        if now - self._pruned > PRUNE_EVERY:
            self._pruned = now
            await self._db.execute("DELETE FROM send_slots WHERE next_at < ?", (now - 3600,))
        rows = await self._db.fetchall(
            "INSERT INTO send_slots (chat, next_at) VALUES (?, ?) ON CONFLICT (chat) DO UPDATE"
            " SET next_at = CASE WHEN send_slots.next_at > ? THEN send_slots.next_at + ?"
            " ELSE excluded.next_at END RETURNING next_at",
            (chat, now + gap, now, gap),
        )
        return float(rows[0][0]) - gap

    def share(self) -> int:
        """Return among how many live instances the overall rate is split."""
        return self._share
