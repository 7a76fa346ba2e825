"""What a command handler is handed: the parts it may use, and nothing of the core itself."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.backends import MailBackend
from bot.chat import ChatAdapter, Message, Reply
from bot.config import Config
from bot.google.oauth import OAuth
from bot.outbox import Outbox
from bot.store.accounts import Accounts
from bot.store.aliases import Aliases
from bot.store.drafts import Drafts
from bot.store.link_codes import LinkCodes
from bot.store.link_health import LinkHealth
from bot.store.people import People
from bot.store.settings import Settings

Say = Callable[[str, str, Reply], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Private:
    """A reply that may name recipients, subjects or bodies, and what a group hears instead."""

    reply: Reply
    note: str


@dataclass(frozen=True, slots=True)
class Ctx:
    """The services a handler works with; ``say(platform, room, reply)`` answers elsewhere.

    ``person`` is the key the message's author's data is stored under (bot.store.people): the
    core resolves it once per message. Gmail links, aliases, history, known recipients and send
    limits are the person's; direct rooms and the allow-list are the chat account's."""

    config: Config
    accounts: Accounts
    aliases: Aliases
    settings: Settings
    outbox: Outbox
    backend: MailBackend
    oauth: OAuth | None
    network: Callable[[str], ChatAdapter | None]
    say: Say
    people: People
    codes: LinkCodes
    link_health: LinkHealth
    drafts: Drafts
    person: str = ""  # set per message by the core


Handler = Callable[[Ctx, Message, str], Awaitable[Reply | Private | None]]
