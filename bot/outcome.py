"""How a mail's delivery ended, as its owner is told."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.backends import Receipt
from bot.store.outbox_rows import OutboxRow


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a delivery ended: the new state and, for the user, the receipt or reason."""

    state: str
    receipt: Receipt | None = None
    reason: str = ""
    after_restart: bool = False
    repeat: bool = False  # a restart cut in while telling it: the owner may have heard it

    def detail(self) -> str | None:
        """Return what the row keeps of it: the provider's message id, or the reason."""
        return self.receipt.message_id if self.receipt else (self.reason or None)


Notify = Callable[[OutboxRow, Outcome], Awaitable[None]]
