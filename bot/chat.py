"""The contract between the core and the chat adapters: one message type, one reply type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Quoted:
    """The text message a command replies to, as the network showed it (for /mail to forward)."""

    author: str  # display name of who wrote it
    sent_at: float  # POSIX seconds, when it was sent
    text: str


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
    joined: bool = False  # the bot just joined ``room`` on this user's invite: text is empty
    quoted: Quoted | None = None  # the text message this one replies to, if any

    @property
    def user_key(self) -> str:
        """Return the platform-qualified user id used for storage and the allow-list."""
        return f"{self.platform}:{self.user_id}"


@dataclass(frozen=True, slots=True)
class Invite:
    """A user invited the bot into a room; the core decides whether the bot joins."""

    platform: str
    user_id: str  # the inviter
    room: str

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
    ask: bool = False  # a question: Telegram opens the reply box (ForceReply); Matrix answers
    # every message as a reply to it already, so the answer to the question is a reply there


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file from chat, downloaded, to attach to a mail."""

    filename: str
    content_type: str
    data: bytes


class AttachmentRefused(Exception):
    """A file could not be had from the network: the facts, which bot/wording.py phrases."""

    def __init__(
        self,
        reason: Literal["too_large", "refused", "unreachable", "undecryptable"],
        network: str,
        *,
        size: int | None = None,  # bytes, when the network told us
        limit: int | None = None,  # bytes: the limit the file is over
        by_network: bool = False,  # the limit is the network's own (Telegram's 20 MB for bots)
        detail: str | None = None,  # the network's own words, e.g. a homeserver's error
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.network = network
        self.size = size
        self.limit = limit
        self.by_network = by_network
        self.detail = detail


Handler = Callable[[Message], Awaitable[None]]
Admit = Callable[[Invite], bool]  # the core's answer to an invite: join, or decline


class NetworkMetrics(Protocol):
    """What an adapter counts about its network (bot/metrics.Metrics is one)."""

    def network(self, network: str) -> None:
        """Start the network's series at zero."""

    def chat_call(self, network: str, ok: bool) -> None:
        """Count one request to the network's API."""

    def waiting_on_rate_limit(self, network: str) -> AbstractContextManager[None]:
        """Count a reply as held back by rate limits while the block runs."""


@runtime_checkable
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


# Capabilities some networks have: the core asks with isinstance(adapter, Capability), never by
# probing for an attribute, so mypy checks every call it then makes.


@runtime_checkable
class Addressed(Protocol):
    """A network where group commands may name the bot: Telegram's "/mail@username"."""

    username: str | None  # None until the network told us (Telegram: after getMe)


class Pacer(Protocol):
    """Send slots shared by the instances that speak for one bot account (bot.store.pacing):
    a network's limits are the account's, not one process's."""

    async def slot(self, chat: str, gap: float) -> float:
        """Reserve the next send to ``chat``, ``gap`` seconds after the one before it by any
        instance; return the wall-clock time it may go."""

    def share(self) -> int:
        """Return among how many instances the account's overall rate is split."""


class SharedLimits(Protocol):
    """An adapter's send limiter, which may keep to limits shared with other instances."""

    def pace_with(self, pacer: Pacer) -> None:
        """Keep to ``pacer``'s slots and share besides this process's own limits."""


@runtime_checkable
class Paced(Protocol):
    """A network whose send limits hold for the bot account across instances (Telegram)."""

    limiter: SharedLimits


@runtime_checkable
class SingleConsumer(Protocol):
    """A network whose intake must have one consumer across instances (a Matrix device's
    /sync, Telegram's getUpdates): when ``single_consumer`` is true, only the instance leading
    it runs ``run`` (bot.leader); the others still send its replies."""

    single_consumer: bool


@runtime_checkable
class DeepLinks(Protocol):
    """A network with links that open a direct chat with the bot and send it a payload."""

    def start_link(self, payload: str) -> str | None:
        """Return the link that opens a direct chat and sends ``/start payload``, if known yet."""


@runtime_checkable
class DirectChats(Protocol):
    """A network where the bot finds (or opens) a user's direct chat itself: Matrix, where a
    room once direct may have gained members."""

    async def open_direct(self, user_id: str) -> str | None:
        """Return the room id of a direct chat with ``user_id``, opening one if needed."""


@runtime_checkable
class Attachments(Protocol):
    """A network whose messages may carry (or reply to) a file the bot can download."""

    async def fetch_attachment(self, ref: str, limit: int) -> Attachment:
        """Download the file ``Message.attachment`` refers to, if at most ``limit`` bytes (the
        core's limit; the network may have a lower one); AttachmentRefused says why not."""


class Relay(Protocol):
    """Replies handed between instances: one that cannot speak on a network (a Matrix
    standby: the device's E2EE store belongs to the leader) puts them, the leader takes them
    and sends them (bot.relay)."""

    async def put(self, room: str, reply: Reply) -> None:
        """Keep ``reply`` for ``room`` until the leader takes it."""

    async def take(self) -> list[tuple[str, Reply]]:
        """Remove and return the oldest replies waiting (room, reply), in order."""
