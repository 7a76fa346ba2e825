"""A fake Telegram Bot API: a real aiohttp server that python-telegram-bot talks to over HTTP.

It speaks the documented wire format (``{"ok": true, "result": ...}`` or ``{"ok": false,
"error_code": N, "description": "...", "parameters": {...}}``), reads query strings, JSON,
url-encoded and multipart bodies, long-polls and delivers webhooks, parses HTML the way Telegram
does, marks ``bot_command`` entities, and lets tests play users, inject 429s and errors, and read
back exactly what each chat was shown (``fake.sent``). It serves the methods mailbridge calls
(getMe, getUpdates, sendMessage, answerCallbackQuery, getFile and file downloads, setMyCommands,
setWebhook, deleteWebhook) and getWebhookInfo, which ``mailbridge check`` reads; any other method
answers 404 "Not Found", as Telegram answers a method it does not know.

Deliberate differences from Telegram: webhooks may be plain ``http`` on any port; a bare ``&``
that starts no entity is refused while ``strict_ampersand`` is on (Telegram shows it as typed,
which hides a missing escape); Markdown parse modes are stored unparsed.

Alone: ``python -m tests.telegram_fake --port 8081`` prints its URL, then serves until SIGTERM;
``POST /_fake/send``, ``GET /_fake/sent`` and ``POST /_fake/inject`` drive it from elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import re
import signal
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

JSON = dict[str, Any]
SEND_METHODS = frozenset({"sendmessage"})
DEFAULT_UPDATES = frozenset({"message", "edited_message", "callback_query", "my_chat_member"})
MAX_TEXT = 4096  # Telegram counts characters (code points) here; entity offsets are UTF-16
LIMIT_SLACK = 0.1  # seconds of network jitter forgiven by enforce_limits (Telegram's are loose)
SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
START_PAYLOAD = re.compile(r"[A-Za-z0-9_-]{1,64}")
COMMAND_NAME = re.compile(r"[a-z0-9_]{1,32}")
# TDLib marks a /command not glued to a word, slash, angle bracket or backslash on either side.
BOT_COMMAND = re.compile(r"(?<![\w/<>\\])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![\w/<>\\])")
HTML_ENTITY = re.compile(r"&(?:#x([0-9a-fA-F]+)|#([0-9]+)|([a-zA-Z]+));?")
TAGS = (  # HTML tag -> entity type
    dict.fromkeys(("b", "strong"), "bold")
    | dict.fromkeys(("i", "em"), "italic")
    | dict.fromkeys(("u", "ins"), "underline")
    | dict.fromkeys(("s", "strike", "del"), "strikethrough")
    | dict.fromkeys(("span", "tg-spoiler"), "spoiler")
    | dict.fromkeys(("code", "pre", "blockquote"))
    | {"a": "text_link", "tg-emoji": "custom_emoji"}
)


class ApiError(Exception):
    """A Bot API error answer."""

    def __init__(self, status: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status, self.description, self.retry_after = status, description, retry_after

    def response(self) -> web.Response:
        body: JSON = {"ok": False, "error_code": self.status, "description": self.description}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return web.json_response(body, status=self.status)


class HtmlError(ValueError):
    """Telegram could not parse the entities of a text."""


def utf16_len(text: str) -> int:
    """Return the length of ``text`` in UTF-16 code units, as Telegram's offsets count."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8", "surrogatepass"))


def _decode_entity(m: re.Match[str]) -> str | None:
    hex_code, dec_code, name = m.groups()
    if name is not None:
        return {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}.get(name)
    code = int(hex_code, 16) if hex_code is not None else int(dec_code)
    return chr(code) if 0 < code < 0x10FFFF and m.end() - m.start() <= 10 else None


def parse_html(markup: str, *, strict_ampersand: bool = False) -> tuple[str, list[JSON]]:
    """Return the plain text and entities of Telegram HTML; raise HtmlError as Telegram would."""
    out: list[str] = []
    pos = 0  # UTF-16 offset into the plain text
    stack: list[tuple[str, int, dict[str, str]]] = []
    entities: list[JSON] = []
    i, n = 0, len(markup)
    while i < n:
        c = markup[i]
        if c == "&":
            m = HTML_ENTITY.match(markup, i)
            decoded = _decode_entity(m) if m else None
            if m and decoded is not None:
                out.append(decoded)
                pos += utf16_len(decoded)
                i = m.end()
                continue
            if strict_ampersand:
                raise HtmlError(f"Unescaped '&' at byte offset {_byte_offset(markup, i)}")
        if c != "<":
            out.append(c)
            pos += utf16_len(c)
            i += 1
            continue
        begin, at = i, _byte_offset(markup, i)
        closing = markup.startswith("</", i)
        if closing and not stack:
            raise HtmlError(f"Unexpected end tag at byte offset {at}")
        j = i + 2 if closing else i + 1
        while j < n and not markup[j].isspace() and markup[j] != ">":
            j += 1
        if closing:
            end_name = markup[begin + 2 : j]
            while j < n and markup[j].isspace():
                j += 1
            if j >= n or markup[j] != ">":
                raise HtmlError(f"Unclosed end tag at byte offset {at}")
            name, start, attrs = stack.pop()
            if end_name and end_name != name:
                raise HtmlError(
                    f'Unmatched end tag at byte offset {at}, expected "</{name}>", '
                    f'found "</{end_name}>"'
                )
            if pos > start:
                entities.extend(_entity(name, start, pos - start, attrs))
            i = j + 1
            continue
        if j >= n:
            raise HtmlError(f"Unclosed start tag at byte offset {at}")
        name = markup[begin + 1 : j].lower()
        if name not in TAGS:
            raise HtmlError(f'Unsupported start tag "{name}" at byte offset {at}')
        attrs, j = _attributes(markup, j, name, at)
        if name == "span" and attrs.get("class") != "tg-spoiler":
            raise HtmlError(f'Tag "span" must have class "tg-spoiler" at byte offset {at}')
        stack.append((name, pos, attrs))
        i = j + 1
    if stack:
        raise HtmlError(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


def _attributes(markup: str, j: int, tag: str, at: int) -> tuple[dict[str, str], int]:
    """Parse a start tag's attributes from ``j``; return them and the index of its ``>``."""
    attrs: dict[str, str] = {}
    n = len(markup)
    while True:
        while j < n and markup[j].isspace():
            j += 1
        if j >= n:
            raise HtmlError(f'Unclosed start tag "{tag}" at byte offset {at}')
        if markup[j] == ">":
            return attrs, j
        k = j
        while k < n and not markup[k].isspace() and markup[k] not in "=>":
            k += 1
        attr = markup[j:k].lower()
        if not attr:
            raise HtmlError(f'Empty attribute name in the tag "{tag}" at byte offset {at}')
        while k < n and markup[k].isspace():
            k += 1
        if k >= n or markup[k] != "=":
            attrs[attr], j = "", k
            continue
        k += 1
        while k < n and markup[k].isspace():
            k += 1
        if k >= n:
            raise HtmlError(f'Unclosed start tag "{tag}" at byte offset {at}')
        if markup[k] in "'\"":
            end = markup.find(markup[k], k + 1)
            if end < 0:
                raise HtmlError(f"Unclosed start tag at byte offset {at}")
            value = HTML_ENTITY.sub(lambda e: _decode_entity(e) or e.group(), markup[k + 1 : end])
            j = end + 1
        else:
            j = k
            while j < n and ((markup[j].isascii() and markup[j].isalnum()) or markup[j] in ".-"):
                j += 1
            if j < n and not markup[j].isspace() and markup[j] != ">":
                raise HtmlError(
                    f"Unexpected end of name token at byte offset {_byte_offset(markup, k)}"
                )
            value = markup[k:j].lower()
        attrs[attr] = value


def _entity(tag: str, offset: int, length: int, attrs: dict[str, str]) -> list[JSON]:
    entity: JSON = {"type": TAGS[tag] or tag, "offset": offset, "length": length}
    if tag == "a":
        if not attrs.get("href"):
            return []  # Telegram links the text only when it is itself a URL; not modelled
        entity["url"] = attrs["href"]
    elif tag == "tg-emoji":
        entity["custom_emoji_id"] = attrs.get("emoji-id", "")
    elif tag == "blockquote" and "expandable" in attrs:
        entity["type"] = "expandable_blockquote"
    return [entity]


def command_entities(text: str) -> list[JSON]:
    """Return the ``bot_command`` entities Telegram marks in a user's ``text``."""
    return [
        {"type": "bot_command", "offset": utf16_len(text[: m.start()]), "length": len(m.group())}
        for m in BOT_COMMAND.finditer(text)
    ]


@dataclass(frozen=True)
class FakeUser:
    """A Telegram user the tests play."""

    id: int
    first_name: str
    username: str | None = None
    last_name: str | None = None
    is_bot: bool = False

    def to_dict(self) -> JSON:
        d: JSON = {"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name}
        d |= {k: v for k in ("last_name", "username") if (v := getattr(self, k))}
        return d


@dataclass
class FakeChat:
    """A private chat with one user, or a group."""

    id: int
    type: str  # "private" or "supergroup"
    title: str | None = None
    user: FakeUser | None = None
    members: set[int] = field(default_factory=set)

    def to_dict(self) -> JSON:
        if self.user is not None:
            d = self.user.to_dict()
            return {"id": self.id, "type": self.type} | {
                k: d[k] for k in ("first_name", "last_name", "username") if k in d
            }
        return {"id": self.id, "type": self.type, "title": self.title}


@dataclass
class FakeFile:
    """A file a user uploaded."""

    file_id: str
    file_unique_id: str
    data: bytes
    file_name: str
    mime_type: str
    file_path: str


@dataclass
class SentMessage:
    """A message the bot sent, as its chat shows it."""

    chat_id: int
    message_id: int
    text: str  # what the user sees: tags stripped, entities decoded
    html: str  # the text parameter exactly as sent
    parse_mode: str | None
    reply_markup: JSON | None
    entities: list[JSON]
    reply_to: int | None
    no_preview: bool
    sent_at: float  # time.monotonic()

    def buttons(self) -> list[JSON]:
        """Return the inline keyboard's buttons, row by row."""
        rows = (self.reply_markup or {}).get("inline_keyboard", [])
        return [b for row in rows for b in row]


@dataclass
class ApiCall:
    """One Bot API request the fake answered."""

    method: str
    params: JSON
    at: float
    status: int = 200


@dataclass
class _Fault:
    status: int
    description: str
    retry_after: int | None
    remaining: int
    methods: frozenset[str] | None  # None: every method


class _Params:
    """Request parameters, typed on read (forms carry every value as a string)."""

    def __init__(self, values: JSON) -> None:
        self.values = values

    def text(self, name: str) -> str | None:
        v = self.values.get(name)
        return None if v is None else str(v)

    def number(self, name: str) -> float | None:
        v = self.values.get(name)
        if v is None or v == "":
            return None
        try:
            return float(v)
        except (TypeError, ValueError):
            raise ApiError(400, f"Bad Request: invalid {name} specified") from None

    def data(self, name: str) -> Any:
        v = self.values.get(name)
        if isinstance(v, str):
            try:
                return json.loads(v)
            except ValueError:
                raise ApiError(400, f"Bad Request: can't parse {name} JSON object") from None
        return v

    def flag(self, name: str) -> bool:
        v = self.data(name)
        return v is True or v == 1


class TelegramFake:
    """The Bot API on 127.0.0.1, with simulated users; ``sent`` holds what chats were shown."""

    def __init__(
        self, token: str = "123456:ABC-test", username: str = "MailBridgeTestBot", port: int = 0
    ) -> None:
        self.token, self.username, self.port = token, username, port
        self.bot = FakeUser(int(token.split(":")[0]), "MailBridge Test", username, is_bot=True)
        self.sent: list[SentMessage] = []
        self.calls: list[ApiCall] = []
        self.commands: dict[str, list[JSON]] = {}
        self.callback_answers: dict[str, JSON] = {}
        self.enforce_limits = False
        self.offline = False
        self.strict_ampersand = True
        self.privacy_mode = True
        # Telegram retries an unanswered update for up to a day, waiting up to 60 s between
        # tries; here without end (``webhook_attempts`` to give up) and at most 2 s apart.
        self.webhook_attempts: int | None = None
        self.webhook_retry_delay, self.webhook_max_delay = 0.2, 2.0
        self.webhook_max_connections = 40  # setWebhook's default max_connections
        # Telegram gives up waiting for a webhook's answer and delivers the update again.
        self.webhook_timeout = 10.0
        self.webhook_errors: list[str] = []
        self.webhook_posts: dict[int, int] = {}  # update_id -> deliveries tried
        self.users: dict[int, FakeUser] = {}
        self.chats: dict[int, FakeChat] = {}
        self.files: dict[str, FakeFile] = {}
        self.started: set[int] = set()  # users who started the bot privately
        self.blocked: set[int] = set()
        self._pending_queries: set[str] = set()
        self._updates: list[JSON] = []
        self._update_ids = itertools.count(1)
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._messages: dict[tuple[int, int], JSON] = {}
        self._ids = itertools.count(1)
        self._faults: list[_Fault] = []
        self._send_times: dict[int, deque[float]] = {}
        self._all_sends: deque[float] = deque()
        self._poll_allowed: frozenset[str] = DEFAULT_UPDATES
        self._poll_seq = 0
        self._webhook: JSON | None = None
        self._last_error: tuple[int, str] | None = None
        self._wakeup = asyncio.Event()
        self._taken: set[tuple[int, int]] = set()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._deliverer: asyncio.Task[None] | None = None
        self._methods: dict[str, Callable[[_Params], Awaitable[Any]]] = {
            name[3:].lower(): getattr(self, name) for name in dir(self) if name.startswith("_m_")
        }

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Return the server's root URL; PTB wants ``{url}/bot`` and ``{url}/file/bot``."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> TelegramFake:
        """Listen on 127.0.0.1 (a free port unless one was given)."""
        app = web.Application(middlewares=[self._gate], client_max_size=60 * 2**20)
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        app.router.add_post("/_fake/send", self._c_send)
        app.router.add_get("/_fake/sent", self._c_sent)
        app.router.add_post("/_fake/inject", self._c_inject)
        app.router.add_get("/_fake/calls", self._c_calls)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._deliverer = asyncio.create_task(self._deliver_webhooks())
        return self

    async def stop(self) -> None:
        """End long polls and webhook deliveries, then close the server."""
        self._closing = True
        self._notify()
        if self._deliverer:
            self._deliverer.cancel()
            await asyncio.gather(self._deliverer, return_exceptions=True)
        if self._session:
            await self._session.close()
        if self._runner:
            await self._runner.cleanup()

    async def __aenter__(self) -> TelegramFake:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- simulated users -------------------------------------------------------------------

    def add_user(
        self, id: int, first_name: str, username: str | None = None, last_name: str | None = None
    ) -> FakeUser:
        """Create a Telegram user."""
        user = FakeUser(id, first_name, username, last_name)
        self.users[id] = user
        return user

    def private_chat(self, user: FakeUser) -> FakeChat:
        """Return the private chat between ``user`` and the bot."""
        return self.chats.setdefault(user.id, FakeChat(user.id, "private", user=user))

    def group(self, title: str, members: Iterable[FakeUser] = ()) -> FakeChat:
        """Create a supergroup with the bot and ``members`` in it."""
        chat_id = -1001000000000 - len(self.chats)
        chat = FakeChat(chat_id, "supergroup", title, members={u.id for u in members})
        self.chats[chat_id] = chat
        return chat

    def add_file(
        self, data: bytes, file_name: str = "file.bin", mime_type: str = "application/octet-stream"
    ) -> str:
        """Store an upload; return its file_id for ``user_sends(document=...)``."""
        n = next(self._ids)
        file_id = f"BQACAgIAAxkB{n:06d}"
        self.files[file_id] = FakeFile(
            file_id, f"AgAD{n:06d}", data, file_name, mime_type, f"documents/file_{n}_{file_name}"
        )
        return file_id

    def user_sends(
        self,
        user: FakeUser,
        chat: FakeChat | None = None,
        text: str = "",
        *,
        reply_to: SentMessage | int | None = None,
        document: str | None = None,
        photo: str | None = None,
    ) -> JSON:
        """Queue (or push to the webhook) a message from ``user``; return the update.

        In groups the bot is in privacy mode: it gets only commands not meant for another bot and
        replies to its own messages. Other messages are returned without an ``update_id``.
        """
        chat = chat or self.private_chat(user)
        if chat.type == "private":
            self.started.add(user.id)  # nobody can write to a bot without pressing Start
        else:
            chat.members.add(user.id)
        reply_id = reply_to.message_id if isinstance(reply_to, SentMessage) else reply_to
        media = document or photo
        msg = self._new_message(chat, user.to_dict(), reply_id)
        key = "caption" if media else "text"
        if text:
            msg[key] = text
            if ents := command_entities(text):
                msg["caption_entities" if media else "entities"] = ents
        if media:
            f = self.files[media]
            info: JSON = {"file_id": f.file_id, "file_unique_id": f.file_unique_id}
            info["file_size"] = len(f.data)
            if document:
                msg["document"] = info | {"file_name": f.file_name, "mime_type": f.mime_type}
            else:
                msg["photo"] = [info | {"width": 640, "height": 480}]
        if chat.type != "private" and self.privacy_mode and not self._for_bot(msg):
            return {"message": msg}
        return self._enqueue({"message": msg})

    def _for_bot(self, msg: JSON) -> bool:
        """Whether a group message passes privacy mode."""
        if msg.get("reply_to_message", {}).get("from", {}).get("id") == self.bot.id:
            return True
        text = msg.get("text") or msg.get("caption") or ""
        first = command_entities(text)[:1]
        if not first or first[0]["offset"] != 0:
            return False
        _, _, addressee = text[: first[0]["length"]].partition("@")
        return addressee.lower() in ("", self.username.lower())

    def user_starts(self, user: FakeUser, payload: str | None = None) -> JSON:
        """Press Start in the private chat (through a ``t.me/bot?start=payload`` link)."""
        if payload is not None and not START_PAYLOAD.fullmatch(payload):
            raise ValueError(f"Telegram drops a start payload like {payload!r}")
        self.blocked.discard(user.id)
        return self.user_sends(user, None, "/start" + (f" {payload}" if payload else ""))

    def redeliver(self, update: JSON) -> None:
        """Deliver ``update`` again, as Telegram does when a confirmation never reached it."""
        self._updates.append(update)
        self._updates.sort(key=lambda u: u["update_id"])
        self._notify()

    def user_blocks(self, user: FakeUser) -> None:
        """Block the bot: sends to the user then fail with 403."""
        self.blocked.add(user.id)

    def user_presses(self, user: FakeUser, message: SentMessage, callback_data: str) -> JSON:
        """Press the inline button carrying ``callback_data`` under ``message``."""
        if callback_data not in {b.get("callback_data") for b in message.buttons()}:
            raise ValueError(f"no button with callback_data {callback_data!r} under the message")
        query_id = str(4_000_000_000_000 + next(self._ids))
        self.callback_answers.pop(query_id, None)
        stored = self._messages[(message.chat_id, message.message_id)]
        query = {
            "id": query_id,
            "from": user.to_dict(),
            "message": stored,
            "chat_instance": str(abs(message.chat_id) * 7),
            "data": callback_data,
        }
        self._pending_queries.add(query_id)
        return self._enqueue({"callback_query": query})

    # -- test helpers ----------------------------------------------------------------------

    async def wait_for_message(
        self,
        chat_id: int | None = None,
        predicate: Callable[[SentMessage], bool] | None = None,
        timeout: float = 10.0,
    ) -> SentMessage:
        """Return the first sent message matching that no earlier call returned, waiting."""
        deadline = time.monotonic() + timeout
        while True:
            event = self._wakeup
            for m in self.sent:
                key = (m.chat_id, m.message_id)
                if key in self._taken or (chat_id is not None and m.chat_id != chat_id):
                    continue
                if predicate is None or predicate(m):
                    self._taken.add(key)
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                shown = [(m.chat_id, m.text) for m in self.sent if chat_id in (None, m.chat_id)]
                raise AssertionError(f"no matching message to {chat_id} in {timeout}s: {shown}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await event.wait()

    async def wait_for_calls(
        self, predicate: Callable[[ApiCall], bool], count: int = 1, timeout: float = 10.0
    ) -> None:
        """Wait until ``count`` of the calls received so far match ``predicate``."""
        async with asyncio.timeout(timeout):
            while sum(map(predicate, self.calls)) < count:
                await self._wakeup.wait()

    def pending(self) -> int:
        """Return how many updates Telegram still holds: not confirmed by an offset, or not
        yet delivered to the webhook with a 2xx answer."""
        return len(self._updates)

    async def wait_confirmed(self, timeout: float = 10.0) -> None:
        """Wait until the bot has confirmed every update (so it finished handling each)."""
        async with asyncio.timeout(timeout):
            while self._updates:
                await self._wakeup.wait()

    def texts(self, chat_id: int) -> list[str]:
        """Return what ``chat_id`` shows: the plain text of each bot message."""
        return [m.text for m in self.sent if m.chat_id == chat_id]

    def inject_429(
        self, count: int = 1, retry_after: int = 3, methods: Iterable[str] | None = None
    ) -> None:
        """Answer the next ``count`` sends (or ``methods``) with 429 and ``retry_after``."""
        desc = f"Too Many Requests: retry after {retry_after}"
        self._faults.append(_Fault(429, desc, retry_after, count, self._method_set(methods)))

    def inject_error(
        self,
        status: int = 502,
        description: str = "Bad Gateway",
        count: int = 1,
        methods: Iterable[str] | None = None,
    ) -> None:
        """Answer the next ``count`` sends (or ``methods``; ``"*"`` is all) with an error."""
        self._faults.append(_Fault(status, description, None, count, self._method_set(methods)))

    @staticmethod
    def _method_set(methods: Iterable[str] | None) -> frozenset[str] | None:
        if methods is None:
            return SEND_METHODS
        names = frozenset(m.lower() for m in methods)
        return None if "*" in names else names

    # -- HTTP ------------------------------------------------------------------------------

    @web.middleware
    async def _gate(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self.offline and not request.path.startswith("/_fake/"):
            if request.transport is not None:
                request.transport.abort()  # the client sees the connection drop
            raise web.HTTPServiceUnavailable()
        return await handler(request)

    async def _api(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return ApiError(401, "Unauthorized").response()
        method = request.match_info["method"]
        handler = self._methods.get(method.lower())
        if handler is None:
            return ApiError(404, "Not Found").response()
        params = _Params(await _read_params(request))
        call = ApiCall(method, params.values, time.monotonic())
        self.calls.append(call)
        self._notify()
        try:
            self._check_faults(method.lower())
            result = await handler(params)
        except ApiError as exc:
            call.status = exc.status
            self._notify()
            return exc.response()
        return web.json_response({"ok": True, "result": result})

    async def _download(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        f = next((f for f in self.files.values() if f.file_path == path), None)
        if request.match_info["token"] != self.token or f is None:
            return ApiError(404, "Not Found").response()
        return web.Response(body=f.data, content_type=f.mime_type)

    def _check_faults(self, method: str) -> None:
        for fault in self._faults:
            if fault.remaining > 0 and (fault.methods is None or method in fault.methods):
                fault.remaining -= 1
                raise ApiError(fault.status, fault.description, fault.retry_after)

    # -- Bot API methods -------------------------------------------------------------------

    async def _m_getMe(self, p: _Params) -> JSON:
        return self.bot.to_dict() | {
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _m_getUpdates(self, p: _Params) -> list[JSON]:
        if self._webhook:
            raise ApiError(409, _WEBHOOK_ACTIVE)
        limit = int(min(max(p.number("limit") or 100, 1), 100))
        deadline = time.monotonic() + max(p.number("timeout") or 0, 0)
        allowed = p.data("allowed_updates")
        if allowed is not None:  # Telegram remembers the last list given
            self._poll_allowed = frozenset(allowed) or DEFAULT_UPDATES
        self._confirm(p.number("offset"))
        self._poll_seq += 1
        me = self._poll_seq
        self._notify()  # an earlier long poll ends with 409
        while True:
            event = self._wakeup
            if me != self._poll_seq:
                raise ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; "
                    "make sure that only one bot instance is running",
                )
            if self._webhook:
                raise ApiError(409, _WEBHOOK_ACTIVE)
            batch = self._deliverable(self._poll_allowed)[:limit]
            left = deadline - time.monotonic()
            if batch or left <= 0 or self._closing:
                return batch
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await event.wait()

    async def _m_sendMessage(self, p: _Params) -> JSON:
        chat = self._chat(p, sending=True)
        raw, mode = p.text("text") or "", p.text("parse_mode")
        plain, entities = self._parse(raw, mode, p.data("entities"))
        markup = self._markup(p)
        reply = p.data("reply_parameters") or {}
        reply_id = int(reply.get("message_id") or p.number("reply_to_message_id") or 0) or None
        if reply_id and (chat.id, reply_id) not in self._messages:
            anyway = reply.get("allow_sending_without_reply")
            if not (anyway or p.flag("allow_sending_without_reply")):
                raise ApiError(400, "Bad Request: message to be replied not found")
            reply_id = None
        preview = p.data("link_preview_options") or {}
        self._check_limits(chat)
        msg = self._new_message(chat, self.bot.to_dict(), reply_id)
        msg["text"] = plain
        if entities:
            msg["entities"] = entities
        if markup and "inline_keyboard" in markup:
            # Bot API, Message.reply_markup: only an inline keyboard is shown in a message.
            msg["reply_markup"] = markup
        self.sent.append(
            SentMessage(
                chat.id,
                msg["message_id"],
                plain,
                raw,
                mode,
                markup,
                entities,
                reply_id,
                bool(preview.get("is_disabled")) or p.flag("disable_web_page_preview"),
                time.monotonic(),
            )
        )
        self._notify()
        return msg

    async def _m_answerCallbackQuery(self, p: _Params) -> bool:
        query_id = p.text("callback_query_id") or ""
        if query_id not in self._pending_queries:
            raise ApiError(400, _QUERY_TOO_OLD)
        self._pending_queries.discard(query_id)
        self.callback_answers[query_id] = {
            "text": p.text("text"),
            "show_alert": p.flag("show_alert"),
            "url": p.text("url"),
        }
        return True

    async def _m_getFile(self, p: _Params) -> JSON:
        f = self.files.get(p.text("file_id") or "")
        if f is None:
            raise ApiError(400, "Bad Request: invalid file_id")
        if len(f.data) > 20 * 2**20:
            raise ApiError(400, "Bad Request: file is too big")
        return {
            "file_id": f.file_id,
            "file_unique_id": f.file_unique_id,
            "file_size": len(f.data),
            "file_path": f.file_path,
        }

    async def _m_setMyCommands(self, p: _Params) -> bool:
        commands = p.data("commands") or []
        for c in commands:
            if not COMMAND_NAME.fullmatch(str(c.get("command", ""))):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(str(c.get("description", ""))) <= 256:
                raise ApiError(400, "Bad Request: command description must be non-empty")
        self.commands[self._scope(p)] = [
            {"command": c["command"], "description": c["description"]} for c in commands
        ]
        return True

    async def _m_setWebhook(self, p: _Params) -> bool:
        url = p.text("url") or ""
        secret = p.text("secret_token")
        if secret is not None and not SECRET_TOKEN.fullmatch(secret):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        if p.flag("drop_pending_updates"):
            self._updates.clear()
        allowed = p.data("allowed_updates")
        self._webhook = {"url": url, "secret": secret, "allowed": allowed} if url else None
        self._last_error = None
        self._notify()
        return True

    async def _m_deleteWebhook(self, p: _Params) -> bool:
        if p.flag("drop_pending_updates"):
            self._updates.clear()
        self._webhook = None
        self._notify()
        return True

    async def _m_getWebhookInfo(self, p: _Params) -> JSON:
        hook = self._webhook or {}
        info: JSON = {
            "url": hook.get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if hook:
            info |= {"max_connections": 40, "ip_address": "127.0.0.1"}
            if hook.get("allowed"):
                info["allowed_updates"] = hook["allowed"]
        if self._last_error:
            info |= {
                "last_error_date": self._last_error[0],
                "last_error_message": self._last_error[1],
            }
        return info

    # -- internals -------------------------------------------------------------------------

    def _notify(self) -> None:
        self._wakeup.set()
        self._wakeup = asyncio.Event()

    def _enqueue(self, payload: JSON) -> JSON:
        update = {"update_id": next(self._update_ids), **payload}
        self._updates.append(update)
        self._notify()
        return update

    def _confirm(self, offset: float | None) -> None:
        if offset is None:
            return
        if offset < 0:
            del self._updates[: max(len(self._updates) + int(offset), 0)]
        else:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]

    def _deliverable(self, allowed: Iterable[str]) -> list[JSON]:
        """Return queued updates of allowed kinds, dropping the others as Telegram does."""
        kinds = frozenset(allowed)
        self._updates = [u for u in self._updates if _kind(u) in kinds]
        return list(self._updates)

    def _new_message(self, chat: FakeChat, sender: JSON, reply_id: int | None) -> JSON:
        counter = self._message_ids.setdefault(chat.id, itertools.count(1))
        msg: JSON = {
            "message_id": next(counter),
            "from": sender,
            "chat": chat.to_dict(),
            "date": int(time.time()),
        }
        if reply_id and (original := self._messages.get((chat.id, reply_id))):
            msg["reply_to_message"] = {
                k: v for k, v in original.items() if k != "reply_to_message"
            }
        self._messages[(chat.id, msg["message_id"])] = msg
        return msg

    def _chat(self, p: _Params, *, sending: bool = False) -> FakeChat:
        chat_id = p.values.get("chat_id")
        try:
            chat = self.chats.get(int(chat_id)) if chat_id is not None else None
        except ValueError:
            chat = None
        if chat is None:
            raise ApiError(400, "Bad Request: chat not found")
        if sending and chat.type == "private":
            if chat.id in self.blocked:
                raise ApiError(403, "Forbidden: bot was blocked by the user")
            if chat.id not in self.started:
                raise ApiError(403, "Forbidden: bot can't initiate conversation with a user")
        return chat

    def _parse(self, raw: str, mode: str | None, entities: Any) -> tuple[str, list[JSON]]:
        if (mode or "").lower() == "html":
            try:
                plain, found = parse_html(raw, strict_ampersand=self.strict_ampersand)
            except HtmlError as exc:
                raise ApiError(400, f"Bad Request: can't parse entities: {exc}") from None
        elif (mode or "").lower() in ("", "markdown", "markdownv2"):
            plain, found = raw, list(entities or [])
        else:
            raise ApiError(400, "Bad Request: unsupported parse_mode")
        if not plain.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if len(plain) > MAX_TEXT:
            raise ApiError(400, "Bad Request: message is too long")
        return plain, found

    def _markup(self, p: _Params) -> JSON | None:
        markup = p.data("reply_markup")
        if isinstance(markup, dict) and "force_reply" in markup:
            # Bot API, ForceReply: force_reply must be True; input_field_placeholder 1-64
            # characters; selective a Boolean.
            placeholder = markup.get("input_field_placeholder")
            if (
                markup["force_reply"] is not True
                or not isinstance(markup.get("selective", False), bool)
                or (placeholder is not None and not 1 <= len(placeholder) <= 64)
                or set(markup) - {"force_reply", "input_field_placeholder", "selective"}
            ):
                raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
            return markup
        if not isinstance(markup, dict) or "inline_keyboard" not in markup:
            return None
        for row in markup["inline_keyboard"]:
            for b in row:
                data = b.get("callback_data")
                if data is not None and not 1 <= len(data.encode()) <= 64:
                    raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
                url = b.get("url")
                if url is not None and not re.match(r"(https?|tg)://\S+$", url):
                    raise ApiError(400, "Bad Request: BUTTON_URL_INVALID")
        return markup

    def _check_limits(self, chat: FakeChat) -> None:
        """Answer 429 past 1 message/s to a chat, 20/min to a group, 30/s overall."""
        if not self.enforce_limits:
            return
        now = time.monotonic()
        times = self._send_times.setdefault(chat.id, deque())
        wait = 0.0
        if times and now - times[-1] < 1.0 - LIMIT_SLACK:
            wait = 1.0 - (now - times[-1])
        if chat.type != "private":
            recent = [t for t in times if t > now - 60.0]
            if len(recent) >= 20:
                wait = max(wait, recent[-20] + 60.0 - now)
        while self._all_sends and self._all_sends[0] <= now - (1.0 - LIMIT_SLACK):
            self._all_sends.popleft()
        if len(self._all_sends) >= 30:
            wait = max(wait, self._all_sends[0] + 1.0 - now)
        if wait > 0:
            after = max(math.ceil(wait), 1)
            raise ApiError(429, f"Too Many Requests: retry after {after}", after)
        times.append(now)
        self._all_sends.append(now)

    @staticmethod
    def _scope(p: _Params) -> str:
        """Key ``commands`` by scope: "default", "all_private_chats", "chat:-100123:de"..."""
        scope = p.data("scope") or {}
        key = [scope.get("type", "default")]
        key += [str(scope[k]) for k in ("chat_id", "user_id") if k in scope]
        return ":".join([*key, lang] if (lang := p.text("language_code")) else key)

    async def _deliver_webhooks(self) -> None:
        """POST queued updates to the webhook as the Bot API server does (tdlib's
        ``WebhookActor``): one update in flight per chat, in order; chats side by side, up to
        ``max_connections``; each update again and again until answered 2xx."""
        flying: dict[Any, asyncio.Task[None]] = {}
        try:
            while True:
                event = self._wakeup
                hook = self._webhook
                allowed = (hook or {}).get("allowed") or DEFAULT_UPDATES
                heads: set[Any] = set()
                for update in self._deliverable(allowed) if hook else []:
                    queue = _queue_id(update)
                    if queue in heads:
                        continue  # a later update of a chat waits for the one before it
                    heads.add(queue)
                    if queue not in flying and len(flying) < self.webhook_max_connections:
                        assert hook is not None
                        flying[queue] = asyncio.create_task(
                            self._deliver(hook, update, queue, flying)
                        )
                await event.wait()
        finally:
            for task in flying.values():
                task.cancel()
            await asyncio.gather(*flying.values(), return_exceptions=True)

    async def _deliver(
        self, hook: JSON, update: JSON, queue: Any, flying: dict[Any, asyncio.Task[None]]
    ) -> None:
        assert self._session is not None
        headers = {"X-Telegram-Bot-Api-Secret-Token": hook["secret"]} if hook["secret"] else {}
        uid = update["update_id"]
        try:
            for attempt in itertools.count():
                if attempt:
                    delay = self.webhook_retry_delay * 2 ** (attempt - 1)
                    await asyncio.sleep(min(delay, self.webhook_max_delay))
                if self._webhook is not hook:
                    return  # changed or deleted meanwhile: the update stays queued
                self.webhook_posts[uid] = self.webhook_posts.get(uid, 0) + 1
                timeout = aiohttp.ClientTimeout(total=self.webhook_timeout)
                try:
                    async with self._session.post(
                        hook["url"], json=update, headers=headers, timeout=timeout
                    ) as r:
                        error = (
                            None
                            if r.status < 300
                            else f"Wrong response from the webhook: {r.status}"
                        )
                except TimeoutError:
                    error = "Read timeout expired"
                except aiohttp.ClientError as exc:
                    error = f"Connection failed: {exc.__class__.__name__}"
                if error is None:
                    break
                self._last_error = (int(time.time()), error)
                self.webhook_errors.append(error)
                if self.webhook_attempts is not None and attempt + 1 >= self.webhook_attempts:
                    break  # given up on, as Telegram does once an update expires
            self._updates = [u for u in self._updates if u is not update]
        finally:
            flying.pop(queue, None)
            self._notify()

    # -- control API (for a fake in another process) ---------------------------------------

    async def _c_send(self, request: web.Request) -> web.Response:
        """``{"user_id", "text", "first_name"?, "chat_id"?, "title"?}``: a user writes."""
        body = await request.json()
        uid = int(body["user_id"])
        user = self.users.get(uid) or self.add_user(uid, body.get("first_name", f"User {uid}"))
        chat_id = int(body.get("chat_id", uid))
        chat = self.chats.get(chat_id)
        if chat is None and chat_id != uid:
            chat = self.chats[chat_id] = FakeChat(
                chat_id, "supergroup", body.get("title", "Group")
            )
        return web.json_response(self.user_sends(user, chat, body.get("text", "")))

    async def _c_sent(self, request: web.Request) -> web.Response:
        chat = request.query.get("chat_id")
        found = [asdict(s) for s in self.sent if chat is None or str(s.chat_id) == chat]
        return web.json_response(found)

    async def _c_inject(self, request: web.Request) -> web.Response:
        """``{"status", "count"?, "retry_after"?, "description"?, "methods"?}``; ``{"offline"}``;
        ``{"enforce_limits"}`` (answer 429 past Telegram's send limits)."""
        body = await request.json()
        if "enforce_limits" in body:
            self.enforce_limits = bool(body["enforce_limits"])
        elif "offline" in body:
            self.offline = bool(body["offline"])
        elif (status := int(body.get("status", 429))) == 429:
            self.inject_429(
                int(body.get("count", 1)), int(body.get("retry_after", 3)), body.get("methods")
            )
        else:
            desc = body.get("description", "Bad Gateway")
            self.inject_error(status, desc, int(body.get("count", 1)), body.get("methods"))
        return web.json_response({"ok": True})

    async def _c_calls(self, request: web.Request) -> web.Response:
        """Bot API calls answered, by method and status: ``{"sendMessage 200": 9}``."""
        counts: dict[str, int] = {}
        for call in self.calls:
            key = f"{call.method} {call.status}"
            counts[key] = counts.get(key, 0) + 1
        return web.json_response(counts)


_WEBHOOK_ACTIVE = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
_QUERY_TOO_OLD = (
    "Bad Request: query is too old and response timeout expired or query ID is invalid"
)


def _kind(update: JSON) -> str:
    return next(k for k in update if k != "update_id")


def _queue_id(update: JSON) -> Any:
    """The Bot API server's webhook queue of an update: its chat (else its kind)."""
    body = update.get(_kind(update)) or {}
    chat = body.get("chat") or (body.get("message") or {}).get("chat") or body.get("from")
    return chat["id"] if isinstance(chat, dict) and "id" in chat else _kind(update)


async def _read_params(request: web.Request) -> JSON:
    """Merge the query string and a JSON, url-encoded or multipart body, as Telegram accepts."""
    values: JSON = dict(request.query)
    if request.content_type == "application/json":
        body = await request.json()
        if isinstance(body, dict):
            values.update(body)
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        for name, value in (await request.post()).items():
            values[name] = value.file.read() if isinstance(value, web.FileField) else value
    return values


@pytest.fixture
async def telegram_fake() -> AsyncIterator[TelegramFake]:
    """A started Bot API fake, stopped after the test."""
    async with TelegramFake() as fake:
        yield fake


async def _serve(port: int, token: str, username: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with TelegramFake(token, username, port) as fake:
        print(fake.url, flush=True)
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A fake Telegram Bot API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default="123456:ABC-test")
    parser.add_argument("--username", default="MailBridgeTestBot")
    args = parser.parse_args()
    asyncio.run(_serve(args.port, args.token, args.username))
