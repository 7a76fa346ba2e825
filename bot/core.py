"""The core: turns chat messages into answers, whatever network they came from."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace

from bot import gate
from bot.backends import MailBackend
from bot.chat import Addressed, ChatAdapter, Message, Reply
from bot.commands import draft
from bot.commands.context import Ctx, Private
from bot.commands.private import answer_privately, minimal_in
from bot.commands.table import HANDLERS, localise
from bot.config import Config
from bot.errors import BotError, NotAllowedError
from bot.google.oauth import OAuth
from bot.grammar import Command, parse_command
from bot.metrics import Metrics
from bot.notices import Notices
from bot.outbox import Outbox, Outcome
from bot.policy import check_allowed
from bot.store.accounts import Accounts
from bot.store.aliases import Aliases
from bot.store.drafts import Drafts
from bot.store.engine import Database
from bot.store.instances import new_run
from bot.store.link_codes import LinkCodes
from bot.store.link_health import LinkHealth
from bot.store.outbox_rows import OutboxRow
from bot.store.people import People
from bot.store.seen import Claims
from bot.store.settings import Settings
from bot.store.vault import SecretBox
from bot.wording import APOLOGY, prefix

log = logging.getLogger(__name__)


class Core:
    """Dispatches commands, applies policy, and reports mail outcomes to their owners."""

    def __init__(
        self,
        config: Config,
        db: Database,
        box: SecretBox,
        backend: MailBackend,
        oauth: OAuth | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        run: str = "",
    ) -> None:
        self.run = run or new_run()  # this process run (bot.store.instances)
        self.config = config
        self.db = db
        self.box = box
        self.backend = backend
        self.oauth = oauth
        self.accounts = Accounts(db, box)
        self.aliases = Aliases(db)
        self.link_health = LinkHealth(db)
        self.metrics = metrics or Metrics()
        self.metrics.read_state_from(db)
        self.outbox = Outbox(
            db, box, backend, self._tell_outcome, metrics=self.metrics, clock=clock, run=self.run
        )
        self.claims = Claims(db, self.run)
        self._networks: dict[str, ChatAdapter] = {}
        self._addressed: dict[str, Addressed] = {}  # networks whose commands may name the bot
        self.ctx = Ctx(
            config,
            self.accounts,
            self.aliases,
            Settings(db),
            self.outbox,
            backend,
            oauth,
            self.network,
            self.say,
            People(db),
            LinkCodes(db, config.bot.link_code_seconds),
            self.link_health,
            Drafts(db, box),
        )
        self.notices = Notices(self.ctx)

    def attach(self, adapter: ChatAdapter) -> None:
        """Let the core answer on ``adapter``'s network."""
        self._networks[adapter.platform] = adapter
        self._addressed.pop(adapter.platform, None)
        if isinstance(adapter, Addressed):  # once: a protocol check costs tens of µs
            self._addressed[adapter.platform] = adapter

    def network(self, platform: str) -> ChatAdapter | None:
        """Return the adapter attached for ``platform``."""
        return self._networks.get(platform)

    async def handle(self, message: Message) -> None:
        """Answer one incoming message once; never raises for the message's sake."""
        key = f"{message.platform}:{message.event_key}"
        if message.joined:
            message = replace(message, text="/start")  # greet whoever invited the bot
        # A /mail is bulk work: it waits for a slot of Outbox.busy (bot.gate), so a burst of
        # mail leaves room for commands such as /help.
        command = self._command(message)
        bulk = command is not None and command.name == "mail"
        async with self.outbox.busy.hold(gate.EVENT) if bulk else contextlib.nullcontext():
            claimed = await self.claims.claim(key)
        # Another instance handles it: wait until it is done, or take it over if that one dies
        # (answering now would end the network's redelivery, and the event with the instance).
        if not claimed and not await self.claims.settled(key):
            return  # delivered again: handled, or being handled right now, by this run
        try:
            result = "ok"
            try:
                reply = await self._answer(message, command)
            except BotError as exc:
                reply, result = Reply(str(exc)), "refused"
            except Exception:
                log.exception("error while handling a %s message", message.platform)
                reply, result = Reply(APOLOGY), "error"
            if command is not None:
                known = command.name in HANDLERS
                self.metrics.command(command.name if known else "unknown", result)
            if reply is not None:
                reply = replace(reply, reply_to=reply.reply_to or message.event_key)
                await self.say(message.platform, message.room, reply)
        except BaseException:
            # Cut off (the answer could not be sent, or the task was cancelled): a redelivery
            # may handle it again; /mail stays unique through the outbox's own key.
            with contextlib.suppress(Exception):
                await self.claims.release(key)
            raise
        async with self.outbox.busy.hold(gate.ACCEPT) if bulk else contextlib.nullcontext():
            await self.claims.done(key)

    async def say(self, platform: str, room: str, reply: Reply) -> None:
        """Send ``reply`` to ``room`` on ``platform``, in that network's command spelling."""
        adapter = self._networks.get(platform)
        if adapter is None:
            log.error("no %s adapter attached; a reply was not delivered", platform)
            return
        await adapter.send(room, replace(reply, text=localise(reply.text, platform)))

    def _command(self, message: Message) -> Command | None:
        # Telegram: commands in groups may be addressed "/mail@bot_username".
        network = self._addressed.get(message.platform)
        return parse_command(message.text, None if network is None else network.username)

    async def _answer(self, message: Message, command: Command | None) -> Reply | None:
        if command is None:
            if not message.is_direct:
                return None  # chatter in a group is not for us
            check_allowed(message.user_key, self.config.bot.allowed_users)
            ctx = replace(self.ctx, person=await self.ctx.people.person(message.user_key))
            taken, said = await draft.answer(ctx, message)  # a draft's next answer?
            if taken:
                return said
            p = prefix(message.platform)
            return Reply(f"I only understand commands. Type {p}help to see them.")
        try:
            check_allowed(message.user_key, self.config.bot.allowed_users)
        except NotAllowedError:
            log.info("refused a command from a user outside allowed_users (%s)", message.platform)
            raise
        if message.is_direct:
            await self.accounts.remember_direct_room(message.user_key, message.room)
        handler = HANDLERS.get(command.name)
        log.debug("command /%s in a %s room", command.name, message.platform)  # never its text
        if handler is None:
            p = prefix(message.platform)
            return Reply(f"I don't know {p}{command.name}. Type {p}help for what I can do.")
        # Resolved once: the handler stores and reads under the author's person (bot.store.people).
        ctx = replace(self.ctx, person=await self.ctx.people.person(message.user_key))
        if minimal_in(ctx, message, command):
            return await answer_privately(ctx, message, command, handler)
        answer = await handler(ctx, message, command.args)
        return answer.reply if isinstance(answer, Private) else answer

    async def _tell_outcome(self, row: OutboxRow, outcome: Outcome) -> None:
        await self.notices.outcome(row, outcome)
