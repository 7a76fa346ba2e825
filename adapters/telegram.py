"""Telegram through python-telegram-bot's Bot, run inside our own event loop.

Updates come by long polling (our own loop, so the offset is confirmed only after each update was
handled and recorded) or by webhook on the bot's web server. Replies go out in HTML parse mode,
escaped, split at Telegram's 4096-character limit, and spaced to Telegram's rate limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import html
import itertools
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
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    ReplyParameters,
    Update,
    User,
)
from telegram import Message as TgMessage
from telegram.error import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)

from adapters.link import Link
from adapters.ratelimit import SendLimiter
from adapters.telegram_request import LinkedRequest
from adapters.telegram_update import BadUpdate, clean_update
from bot.chat import Attachment, AttachmentRefused, Handler, Message, Reply
from bot.config import TelegramConfig
from bot.errors import ConfigError
from bot.metrics import Metrics

log = logging.getLogger(__name__)

MAX_DOWNLOAD = 20 * 1024 * 1024  # the Bot API's limit for bots downloading files
MAX_TEXT = 4096  # characters (UTF-16 code units) per message
POLL_TIMEOUT = 25  # seconds a getUpdates long poll may wait
BUSY_POLL = 0.5  # seconds between getUpdates calls while updates are being handled
MAX_BACKOFF = 5.0  # seconds between tries while Telegram is unreachable: back soon after
GIVE_UP_AFTER = 300.0  # seconds a reply keeps being retried before the caller hears it failed
WEBHOOK_PATH = "/telegram/webhook"
PROBE_TIMEOUT = 3.0  # seconds a readiness check may wait for Telegram


class TelegramAdapter:
    """The bot on Telegram, in private chats and groups."""

    platform = "telegram"

    def __init__(
        self,
        config: TelegramConfig,
        public_url: str = "",
        metrics: Metrics | None = None,
        menu: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._config = config
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
        self._limiter = SendLimiter()
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
                    allowed_updates=["message", "callback_query"],
                    forever=True,
                )
                self._ready.set()
                await asyncio.Event().wait()  # updates arrive through webhook()
            else:
                await self._call(self.bot.delete_webhook, forever=True)
                self._ready.set()
                await self._poll()
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
        chunks = _split(reply.text)
        markup = _keyboard(reply)
        reply_to = _message_id(reply.reply_to, room)
        lock = self._limiter.chat_lock(room)
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
        markup: InlineKeyboardMarkup | None,
        reply_to: int | None,
        no_preview: bool,
    ) -> None:
        is_group = room.startswith("-")
        started = time.monotonic()
        for attempt in itertools.count(1):
            with self.link.metrics.waiting_on_rate_limit(self.platform):
                await self._limiter.acquire(room, is_group)
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
                return
            except RetryAfter as exc:
                wait = _seconds(exc.retry_after)
                log.info("Telegram asked to wait %.0f s before sending more", wait)
                self._limiter.back_off(room, wait)
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
                    log.error("giving up on a reply after %d network errors: %s", attempt, exc)
                    raise  # the caller decides: an outcome is told again later
                await asyncio.sleep(min(2.0**attempt, MAX_BACKOFF))
            if time.monotonic() - started > GIVE_UP_AFTER:
                raise NetworkError("Telegram kept asking to wait; the reply was not sent")

    async def _poll(self) -> None:
        """Fetch updates and handle each as its own task, so one slow reply (a group at its
        limit, a long 429) holds up nobody else. Telegram's offset confirms every update below
        it, so it only moves past an update once that update is handled; meanwhile the updates
        still in flight come back with each call and are skipped."""
        in_flight: dict[int, asyncio.Task[None]] = {}
        next_new: int | None = None  # the lowest update id not yet taken
        failures = 0
        try:
            while True:
                offset = min(in_flight) if in_flight else next_new
                try:
                    updates = await self.bot.get_updates(
                        offset=offset,
                        timeout=0 if in_flight else POLL_TIMEOUT,
                        allowed_updates=["message", "callback_query"],
                    )
                    failures = 0
                except RetryAfter as exc:
                    await asyncio.sleep(_seconds(exc.retry_after))
                    continue
                except InvalidToken:
                    raise
                except (NetworkError, Conflict) as exc:
                    # Conflict: another process polls with this token (or a webhook is set).
                    failures += 1
                    delay = min(2.0**failures, MAX_BACKOFF)
                    log.warning("getUpdates failed (%s); trying again in %.0f s", exc, delay)
                    await asyncio.sleep(delay)
                    continue
                floor = next_new or 0
                fresh = [
                    u for u in updates if u.update_id >= floor and u.update_id not in in_flight
                ]
                for update in fresh:
                    task = asyncio.create_task(self._dispatch(update))
                    in_flight[update.update_id] = task
                    task.add_done_callback(functools.partial(_forget, in_flight, update.update_id))
                if updates:
                    next_new = max(next_new or 0, updates[-1].update_id + 1)
                if in_flight and not fresh:
                    # Updates under way: ask again when they are all done, or in half a second
                    # for new ones (not at every completion: each call returns those under way).
                    await asyncio.wait(list(in_flight.values()), timeout=BUSY_POLL)
        finally:
            for task in in_flight.values():
                task.cancel()  # not confirmed: Telegram delivers them again after a restart
            await asyncio.gather(*in_flight.values(), return_exceptions=True)

    async def _dispatch(self, update: Update) -> None:
        message = self._to_message(update)
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

    def _to_message(self, update: Update) -> Message | None:
        query = update.callback_query
        if query is not None:
            # A button press: its data is the command the button stands for ("/send 12").
            chat = query.message.chat if query.message is not None else None
            if chat is None or not query.data or query.from_user.is_bot:
                return None
            return Message(
                platform=self.platform,
                user_id=str(query.from_user.id),
                display_name=_name(query.from_user),
                room=str(chat.id),
                is_direct=chat.type == "private",
                text=query.data,
                event_key=f"callback:{query.id}",
            )
        msg = update.message
        if msg is None or msg.from_user is None or msg.from_user.is_bot:
            return None  # edits, channel posts, service messages and other bots are not for us
        text = msg.text or msg.caption
        if not text:
            return None
        return Message(
            platform=self.platform,
            user_id=str(msg.from_user.id),
            display_name=_name(msg.from_user),
            room=str(msg.chat.id),
            is_direct=msg.chat.type == "private",
            text=text,
            event_key=f"{msg.chat.id}:{msg.message_id}",
            attachment=_attachment_ref(msg.reply_to_message or msg),
        )

    async def fetch_attachment(self, ref: str, limit: int) -> Attachment:
        """Download a file the command replied to (bots may download up to 20 MB)."""
        file_id, size, name, mime = json.loads(ref)
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
        attempt = 0
        while True:
            attempt += 1
            try:
                return await method(*args, **kwargs)
            except RetryAfter as exc:
                await asyncio.sleep(_seconds(exc.retry_after))
            except (InvalidToken, BadRequest):
                raise  # BadRequest is a NetworkError to PTB, but trying again cannot help
            except (NetworkError, Conflict) as exc:
                if attempt >= 5 and not forever:
                    raise
                delay = min(2.0**attempt, MAX_BACKOFF)
                log.warning("Telegram call failed (%s); trying again in %.0f s", exc, delay)
                await asyncio.sleep(delay)


def _why(exc: BaseException) -> str:
    # Only our own description: a JSON error quotes the body, which may hold a mail's text.
    return str(exc) if isinstance(exc, BadUpdate) else type(exc).__name__


def _forget(in_flight: dict[int, asyncio.Task[None]], update_id: int, _: object) -> None:
    in_flight.pop(update_id, None)


def _name(user: User) -> str:
    return user.full_name + (f" (@{user.username})" if user.username else "")


def _attachment_ref(msg: TgMessage) -> str | None:
    """Describe the document or photo of ``msg`` (the one a /mail replies to, or carries)."""
    if msg.document is not None:
        d = msg.document
        return json.dumps(
            [
                d.file_id,
                d.file_size,
                d.file_name or "file",
                d.mime_type or "application/octet-stream",
            ]
        )
    if msg.photo:
        p = msg.photo[-1]  # the largest size
        return json.dumps([p.file_id, p.file_size, f"photo-{p.file_unique_id}.jpg", "image/jpeg"])
    return None


def _seconds(value: object) -> float:
    seconds = getattr(value, "total_seconds", None)
    return float(seconds()) if callable(seconds) else float(value)  # type: ignore[arg-type]


def _split(text: str) -> list[str]:
    """Split text into pieces of at most MAX_TEXT UTF-16 units, at line breaks if possible."""
    if not text:
        return ["..."]
    chunks: list[str] = []
    while _units(text) > MAX_TEXT:
        cut = _fit(text)
        newline = text.rfind("\n", 0, cut)
        if newline > cut // 2:
            cut = newline + 1
        chunks.append(text[:cut])
        text = text[cut:]
    chunks.append(text)
    return chunks


def _units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _fit(text: str) -> int:
    """Return the longest prefix length of ``text`` within MAX_TEXT UTF-16 units."""
    units = 0
    for i, ch in enumerate(text):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > MAX_TEXT:
            return i
    return len(text)


def _keyboard(reply: Reply) -> InlineKeyboardMarkup | None:
    if not reply.buttons:
        return None
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(b.label, url=b.url)
                if b.url
                else InlineKeyboardButton(b.label, callback_data=b.data or b.label)
            ]
            for b in reply.buttons
        ]
    )


def _message_id(event_key: str | None, room: str) -> int | None:
    if not event_key:
        return None
    chat, _, message_id = event_key.rpartition(":")
    return int(message_id) if chat == room and message_id.isdigit() else None
