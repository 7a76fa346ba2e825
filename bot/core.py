"""The core: turns chat messages into answers, whatever network they came from."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import aiosqlite

from bot import commands
from bot.backends import MailBackend
from bot.chat import ChatAdapter, Message, Reply
from bot.config import Config
from bot.errors import BotError, NotAllowedError
from bot.grammar import parse_command
from bot.outbox import Outbox, OutboxRow, Outcome
from bot.policy import check_allowed
from bot.vault import SecretBox
from bot.wording import APOLOGY, outcome_text, prefix

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Attached:
    """A chat network the core can answer on."""

    adapter: ChatAdapter
    bot_username: str | None  # Telegram: commands may be addressed "/mail@bot_username"


class Core:
    """Dispatches commands, applies policy, and reports mail outcomes to their owners."""

    def __init__(
        self, config: Config, db: aiosqlite.Connection, box: SecretBox, backend: MailBackend
    ) -> None:
        self.config = config
        self.db = db
        self.box = box
        self.backend = backend
        self.outbox = Outbox(db, box, backend, self._tell_outcome)
        self._networks: dict[str, Attached] = {}

    def attach(self, adapter: ChatAdapter, bot_username: str | None = None) -> None:
        """Let the core answer on ``adapter``'s network."""
        self._networks[adapter.platform] = Attached(adapter, bot_username)

    async def handle(self, message: Message) -> None:
        """Answer one incoming message; never raises for the message's sake."""
        try:
            reply = await self._answer(message)
        except BotError as exc:
            reply = Reply(str(exc))
        except Exception:
            log.exception("error while handling a %s message", message.platform)
            reply = Reply(APOLOGY)
        if reply is not None:
            await self.say(
                message.platform, message.room, replace(reply, reply_to=message.event_key)
            )

    async def say(self, platform: str, room: str, reply: Reply) -> None:
        """Send ``reply`` to ``room`` on ``platform``."""
        network = self._networks.get(platform)
        if network is None:
            log.error("no %s adapter attached; a reply was not delivered", platform)
            return
        await network.adapter.send(room, reply)

    async def _answer(self, message: Message) -> Reply | None:
        network = self._networks.get(message.platform)
        command = parse_command(message.text, network.bot_username if network else None)
        if command is None:
            if not message.is_direct:
                return None  # chatter in a group is not for us
            check_allowed(message.user_key, self.config.bot.allowed_users)
            p = prefix(message.platform)
            return Reply(f"I only understand commands. Type {p}help to see them.")
        handler = commands.HANDLERS.get(command.name)
        try:
            check_allowed(message.user_key, self.config.bot.allowed_users)
        except NotAllowedError:
            log.info("refused a command from a user outside allowed_users (%s)", message.platform)
            raise
        if handler is None:
            p = prefix(message.platform)
            return Reply(f"I don't know {p}{command.name}. Type {p}help for what I can do.")
        return await handler(self, message, command.args)

    async def _tell_outcome(self, row: OutboxRow, outcome: Outcome) -> None:
        platform = row.user_key.partition(":")[0]
        text = outcome_text(row, outcome, platform)
        await self.say(platform, row.room, Reply(text, reply_to=row.event_key.partition(":")[2]))


CommandHandler = Callable[[Core, Message, str], Awaitable[Reply | None]]
