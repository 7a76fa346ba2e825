"""Telegram through python-telegram-bot's Bot, run inside our own event loop.

Updates come by long polling (our own loop, so the offset is confirmed only after each update was
handled and recorded) or by webhook on the bot's web server. Replies go out in HTML parse mode,
escaped, split at Telegram's 4096-character limit, and spaced to Telegram's rate limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

# python-telegram-bot warns on every RetryAfter unless retry_after is a timedelta (its future).
os.environ.setdefault("PTB_TIMEDELTA", "true")

from aiohttp import web
from telegram import (
    Bot,
    BotCommand,
    ForceReply,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    ReplyParameters,
    Update,
)
from telegram.error import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.request import HTTPXRequest

from adapters.link import Link
from adapters.ratelimit import Backoff, SendLimiter
from adapters.telegram.poller import ALLOWED_UPDATES, MAX_BACKOFF, POLL_TIMEOUT, poll, seconds
from adapters.telegram.shape import BadUpdate, clean_update
from adapters.telegram.translate import attachment_ref, keyboard, message_id, split, to_message
from bot.chat import Attachment, AttachmentRefused, Handler, NetworkMetrics, Reply
from bot.config import TelegramConfig
from bot.errors import ConfigError

log = logging.getLogger(__name__)

MAX_DOWNLOAD = 20 * 1024 * 1024  # the Bot API's limit for bots downloading files
GIVE_UP_AFTER = 300.0  # seconds a reply keeps being retried before the caller hears it failed
WEBHOOK_PATH = "/telegram/webhook"
PROBE_TIMEOUT = 3.0  # seconds a readiness check may wait for Telegram


class LinkedRequest(HTTPXRequest):
    """PTB's HTTP layer, telling the adapter's link how each Bot API request went."""

    def __init__(self, link: Link, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._link = link

    async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        """Send one request (see ``BaseRequest.do_request``) and record its answer."""
        try:
            status, payload = await super().do_request(*args, **kwargs)
        except NetworkError:  # PTB's name for no answer: connection refused, reset, timeout
            self._link.failed()
            raise
        self._link.answered(status)
        return status, payload


class TelegramAdapter:
    """The bot on Telegram, in private chats and groups."""

    platform = "telegram"

    def __init__(
        self,
        config: TelegramConfig,
        public_url: str = "",
        metrics: NetworkMetrics | None = None,
        menu: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._config = config
        # Webhook mode: every instance serves the webhook; polling: one consumer of updates.
        self.single_consumer = config.mode == "polling"
        self.menu = [BotCommand(name, summary) for name, summary in menu]  # the core's words
        self._public_url = public_url.rstrip("/")
        file_url = config.base_url.removesuffix("/bot") + "/file/bot"
        self.link = Link(self.platform, metrics)
        self.bot = Bot(
            config.token,
            base_url=config.base_url,
            base_file_url=file_url,
            request=LinkedRequest(self.link, connection_pool_size=64, read_timeout=20.0),
            get_updates_request=LinkedRequest(self.link, read_timeout=POLL_TIMEOUT + 10.0),
        )
        self.limiter = SendLimiter()
        self._handler: Handler | None = None
        self._ready = asyncio.Event()
        self.username: str | None = None

    async def connected(self) -> bool:
        """Whether the bot is set up at Telegram and Telegram answers (getMe, if in doubt)."""
        if self._ready.is_set() and not self.link.connected:
            with contextlib.suppress(TelegramError, TimeoutError):
                async with asyncio.timeout(PROBE_TIMEOUT):
                    await self.bot.get_me()  # its answer, through the link, marks it connected
        return self._ready.is_set() and self.link.connected

    async def start(self) -> str:
        """Log in (getMe, retried while Telegram is unreachable) and register the command menu."""
        try:
            await self._call(self.bot.initialize, forever=True)
        except InvalidToken:
            raise ConfigError(
                "[telegram] token: Telegram rejected the bot token; copy it again from @BotFather"
            ) from None
        self.username = self.bot.username
        await self._call(self.bot.set_my_commands, self.menu, forever=True)
        return self.username

    async def run(self, handler: Handler) -> None:
        """Receive updates until cancelled."""
        self._handler = handler
        try:
            if self.username is None:
                await self.start()
            if self._config.mode == "webhook":
                await self._call(
                    self.bot.set_webhook,
                    url=self._public_url + WEBHOOK_PATH,
                    secret_token=self._config.webhook_secret,
                    allowed_updates=ALLOWED_UPDATES,
                    forever=True,
                )
                self._ready.set()
                await asyncio.Event().wait()  # updates arrive through webhook()
            else:
                await self._call(self.bot.delete_webhook, forever=True)
                self._ready.set()
                await poll(self.bot, self._dispatch)
        finally:
            self._ready.clear()
            await self.bot.shutdown()

    async def webhook(self, request: web.Request) -> web.Response:
        """The webhook route: check the secret header, then handle the update before answering."""
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if not hmac.compare_digest(given.encode(), self._config.webhook_secret.encode()):
            log.warning("refused a webhook request without the right secret token")
            return web.Response(status=403, text="forbidden")
        if request.content_type != "application/json":
            return web.Response(status=415, text="expected application/json")
        try:
            # RFC 8259 section 8.1: JSON between systems is UTF-8, whatever a charset says.
            update = clean_update(json.loads((await request.read()).decode("utf-8")))
        except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
            log.info("refused a webhook body that is not an update (%s)", _why(exc))
            return web.Response(status=400, text="not an update object")
        if not self._ready.is_set():
            return web.Response(status=503, text="starting")  # Telegram delivers it again
        await self._dispatch(Update.de_json(update, self.bot))
        return web.Response(text="ok")

    def start_link(self, payload: str) -> str | None:
        """Return the deep link that opens a private chat with the bot and sends /start."""
        return f"https://t.me/{self.username}?start={payload}" if self.username else None

    async def send(self, room: str, reply: Reply) -> None:
        """Send ``reply`` to chat ``room``: escaped, split, rate-limited, retried on 429."""
        chunks = split(reply.text)
        markup = keyboard(reply)
        reply_to = message_id(reply.reply_to, room)
        lock = self.limiter.chat_lock(room)
        async with lock:
            for i, chunk in enumerate(chunks):
                last = i == len(chunks) - 1
                await self._send_one(
                    room,
                    html.escape(chunk, quote=False),
                    markup if last else None,
                    reply_to if i == 0 else None,
                    reply.no_preview,
                )

    async def _send_one(
        self,
        room: str,
        text: str,
        markup: InlineKeyboardMarkup | ForceReply | None,
        reply_to: int | None,
        no_preview: bool,
    ) -> None:
        is_group = room.startswith("-")
        started = time.monotonic()
        backoff = Backoff(MAX_BACKOFF)
        while True:
            with self.link.metrics.waiting_on_rate_limit(self.platform):
                await self.limiter.acquire(room, is_group)
            try:
                await self.bot.send_message(
                    chat_id=int(room),
                    text=text,
                    parse_mode="HTML",
                    reply_markup=markup,
                    reply_parameters=ReplyParameters(reply_to, allow_sending_without_reply=True)
                    if reply_to
                    else None,
                    link_preview_options=LinkPreviewOptions(is_disabled=True)
                    if no_preview
                    else None,
                )
                self.limiter.sent(room, is_group)
                return
            except RetryAfter as exc:
                wait = seconds(exc.retry_after)
                log.info("Telegram asked to wait %.0f s before sending more", wait)
                self.limiter.back_off(room, wait)
            except BadRequest as exc:
                if markup is not None:  # e.g. a button URL Telegram does not accept: text alone
                    log.warning("Telegram refused a reply's buttons (%s); sending it without", exc)
                    markup = None
                    continue
                log.warning("Telegram refused a message to a chat: %s", exc.message)
                return
            except Forbidden as exc:  # the user blocked the bot, or left the group
                log.warning("Telegram refused a message to a chat: %s", exc.message)
                return
            except NetworkError as exc:
                if time.monotonic() - started > GIVE_UP_AFTER:
                    log.error(
                        "giving up on a reply after %d network errors: %s", backoff.failures, exc
                    )
                    raise  # the caller decides: an outcome is told again later
                await asyncio.sleep(backoff.failed())
            if time.monotonic() - started > GIVE_UP_AFTER:
                raise NetworkError("Telegram kept asking to wait; the reply was not sent")

    async def _dispatch(self, update: Update) -> None:
        message = to_message(update)
        if update.callback_query is not None:
            # Answer at once so the button stops spinning; the reply follows as a message.
            with contextlib.suppress(TelegramError):
                await update.callback_query.answer()
        if message is None or self._handler is None:
            return
        try:
            await self._handler(message)
        except Exception:
            log.exception("handling a Telegram update failed")

    async def fetch_attachment(self, ref: str, limit: int) -> Attachment:
        """Download a file the command replied to (bots may download up to 20 MB)."""
        file_id, size, name, mime = attachment_ref(ref)
        if size and size > min(limit, MAX_DOWNLOAD):
            raise AttachmentRefused(
                "too_large",
                self.platform,
                size=size,
                limit=min(limit, MAX_DOWNLOAD),
                by_network=limit > MAX_DOWNLOAD,
            )
        try:
            tg_file = await self.bot.get_file(file_id)
            data = bytes(await tg_file.download_as_bytearray())
        except BadRequest as exc:
            raise AttachmentRefused("refused", self.platform, detail=exc.message) from None
        except NetworkError:
            raise AttachmentRefused("unreachable", self.platform) from None
        return Attachment(name, mime, data)

    async def _call(self, method: Any, *args: Any, forever: bool = False, **kwargs: Any) -> Any:
        backoff = Backoff(MAX_BACKOFF)
        while True:
            try:
                return await method(*args, **kwargs)
            except RetryAfter as exc:
                await asyncio.sleep(seconds(exc.retry_after))
            except (InvalidToken, BadRequest):
                raise  # BadRequest is a NetworkError to PTB, but trying again cannot help
            except (NetworkError, Conflict) as exc:
                if backoff.failures >= 4 and not forever:
                    raise  # the fifth failure
                delay = backoff.failed()
                log.warning("Telegram call failed (%s); trying again in %.0f s", exc, delay)
                await asyncio.sleep(delay)


def _why(exc: BaseException) -> str:
    # Only our own description: a JSON error quotes the body, which may hold a mail's text.
    return str(exc) if isinstance(exc, BadUpdate) else type(exc).__name__
