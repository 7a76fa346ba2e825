"""The contract between the core and the chat adapters: one message type, one reply type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Message:
    """One incoming chat message, as an adapter hands it to the core."""

    platform: str  # "telegram", "matrix" or "console"
    user_id: str  # Telegram numeric id, Matrix user id, local user name
    display_name: str
    room: str  # where replies go
    is_direct: bool  # a direct chat between the user and the bot
    text: str
    event_key: str  # stable per platform: Telegram "chat_id:message_id", Matrix event id
    attachment: str | None = None  # a file the command replies to; fetched by the adapter

    @property
    def user_key(self) -> str:
        """Return the platform-qualified user id used for storage and the allow-list."""
        return f"{self.platform}:{self.user_id}"


@dataclass(frozen=True, slots=True)
class Button:
    """A button under a reply: a link to open, or callback data to send back."""

    label: str
    url: str | None = None
    data: str | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """What the bot says: plain text, optional buttons, optionally in reply to an event."""

    text: str
    buttons: tuple[Button, ...] = field(default=())
    reply_to: str | None = None  # event key of the message answered
    no_preview: bool = False  # ask the platform not to fetch link previews


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file from chat, downloaded, to attach to a mail."""

    filename: str
    content_type: str
    data: bytes


Handler = Callable[[Message], Awaitable[None]]


class ChatAdapter(Protocol):
    """A chat network: delivers messages to the core and sends its replies."""

    platform: str

    async def connected(self) -> bool:
        """Whether the network answers: its last request was answered, or a quick check is now
        (long polls report only when they end). For readiness; never raises."""

    async def run(self, handler: Handler) -> None:
        """Deliver incoming messages to ``handler`` until cancelled (or input ends)."""

    async def send(self, room: str, reply: Reply) -> None:
        """Send ``reply`` into ``room``."""
