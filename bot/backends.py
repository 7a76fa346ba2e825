"""The mail-backend interface and the outcomes of a send.

A backend raises ``SendRefused`` when the mail certainly was not sent (the user is told why),
``SendUnknown`` when it may or may not have reached the provider (never retried by itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.addresses import EmailAddress


@dataclass(frozen=True, slots=True)
class Receipt:
    """A successful send: the provider's message id and a note for the user."""

    message_id: str
    note: str = ""


class SendRefused(Exception):
    """The mail was not sent; ``str(error)`` tells the user why and what to do."""


class SendUnknown(Exception):
    """The request may have reached the provider, but no answer came."""


class MailBackend(Protocol):
    """Something that sends a composed message on behalf of a chat user."""

    name: str

    async def sender(self, user_key: str) -> EmailAddress:
        """Return the address mail from ``user_key`` is sent from; NotConnectedError if none."""

    async def prepare(self, user_key: str) -> None:
        """Do what must precede a send but sends nothing (e.g. refresh a token); raise
        SendRefused if the send cannot happen. A crash here leaves the mail certainly unsent."""

    async def send(self, user_key: str, raw: bytes) -> Receipt:
        """Send the RFC 5322 message ``raw``; raise SendRefused or SendUnknown on failure."""

    async def close(self) -> None:
        """Release what the backend holds."""
