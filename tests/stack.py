"""The whole system as separate processes, as in production: the Telegram Bot API fake, the
Google fake and ``mailbridge run``, each a child process on 127.0.0.1, driven over HTTP.

Used by the reliability tier (crash, faults, load) and by ``benchmarks``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests import runtime
from tests.botproc import free_port
from tests.chatkit import LOGIN_LINK

ROOT = Path(__file__).resolve().parent.parent
JSON = dict[str, Any]


async def _child(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    """Start ``python -m <args>``; return it and the URL it prints once listening."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", *args, stdout=asyncio.subprocess.PIPE, cwd=ROOT
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
    if not line:
        await proc.wait()
        raise AssertionError(f"python -m {args[0]} exited with {proc.returncode}")
    return proc, line.split()[-1]


async def _end(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    """Poll ``check`` until it holds; fail after ``timeout`` seconds."""
    for _ in range(int(timeout / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{check.__name__} did not hold within {timeout} s")


class RemoteGoogle:
    """The Google fake in a process of its own (``python -m tests.google_fake``), as Google is
    on other machines: its CPU time and memory stay out of our figures, and a bot that blocks
    its event loop cannot block the fake with it."""

    def __init__(self, base_url: str, secrets: JSON, http: aiohttp.ClientSession) -> None:
        self.base_url = base_url
        self.auth_uri = f"{base_url}/o/oauth2/auth"
        self.token_uri = f"{base_url}/token"
        self.revoke_uri = f"{base_url}/revoke"
        self.api_endpoint = base_url
        self._secrets = secrets
        self._http = http

    def client_secrets_json(self) -> JSON:
        return self._secrets

    async def set(self, **settings: Any) -> JSON:
        """Change the fake's settings: ``gmail_latency``, ``next_account``, ``add_account``,
        ``gmail_faults``, ``token_faults``, ``revoke_all``, ``redirect_uris``,
        ``rotate_refresh_tokens``, ``omit_scope``, ``refuse_client``..."""
        async with self._http.post(f"{self.base_url}/_fake/control", json=settings) as r:
            assert r.status == 200, await r.text()
            state: JSON = await r.json()
            return state

    async def state(self) -> JSON:
        async with self._http.get(f"{self.base_url}/_fake/state") as r:
            state: JSON = await r.json()
            return state

    async def sent(self) -> list[JSON]:
        """Every mail Gmail took, oldest first (``subject``, ``to``, ``from``, ``raw``...)."""
        async with self._http.get(f"{self.base_url}/_fake/sent") as r:
            sent: list[JSON] = await r.json()
            return sent


@contextlib.asynccontextmanager
async def remote_google() -> AsyncIterator[RemoteGoogle]:
    proc, base = await _child("tests.google_fake")
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/_fake/state") as r:
                state = await r.json()
            yield RemoteGoogle(base, state["client_secrets"], http)
    finally:
        await _end(proc)


class RemoteTelegram:
    """The Bot API fake in a process of its own (``python -m tests.telegram_fake``)."""

    token = "123456:ABC-test"

    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url = url
        self._http = http

    async def user_sends(self, user_id: int, text: str, chat_id: int | None = None) -> None:
        """User ``user_id`` writes ``text`` in their private chat (or in group ``chat_id``)."""
        body: JSON = {"user_id": user_id, "text": text}
        if chat_id is not None:
            body["chat_id"] = chat_id
        async with self._http.post(f"{self.url}/_fake/send", json=body) as r:
            assert r.status == 200, await r.text()

    async def sent(self, chat_id: int | None = None) -> list[JSON]:
        """What the bot sent, oldest first: ``chat_id``, ``text``, ``sent_at``..."""
        query = "" if chat_id is None else f"?chat_id={chat_id}"
        async with self._http.get(f"{self.url}/_fake/sent{query}") as r:
            sent: list[JSON] = await r.json()
            return sent

    async def inject(self, **fault: Any) -> None:
        """``status``/``count``/``retry_after``/``methods``, or ``offline=True|False``."""
        async with self._http.post(f"{self.url}/_fake/inject", json=fault) as r:
            assert r.status == 200, await r.text()

    async def calls(self) -> dict[str, int]:
        """Bot API calls answered so far, by method and status: ``{"sendMessage 429": 2}``."""
        async with self._http.get(f"{self.url}/_fake/calls") as r:
            counts: dict[str, int] = await r.json()
            return counts

    async def wait_for(
        self, chat_id: int, pattern: str, after: int = 0, timeout: float = 30.0
    ) -> JSON:
        """Wait until the bot has sent ``chat_id`` a message matching ``pattern``, not
        counting the first ``after`` messages of that chat."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            sent = await self.sent(chat_id)
            for message in sent[after:]:
                if regex.search(message["text"]):
                    return message
            if time.monotonic() > deadline:
                shown = "\n".join(m["text"] for m in sent[after:])
                raise AssertionError(f"no {pattern!r} in chat {chat_id}; it got:\n{shown}")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def remote_telegram() -> AsyncIterator[RemoteTelegram]:
    proc, url = await _child("tests.telegram_fake", "--token", RemoteTelegram.token)
    try:
        async with aiohttp.ClientSession() as http:
            yield RemoteTelegram(url, http)
    finally:
        await _end(proc)


@dataclass
class Daemon:
    """``mailbridge run --config PATH`` as an operator runs it: no console, stopped by a signal
    (or killed)."""

    config: Path
    base_url: str
    env: dict[str, str] = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None
    starts: int = 0
    log_name: str = "mailbridge.log"

    @property
    def log_path(self) -> Path:
        return self.config.parent / self.log_name

    async def start(self, timeout: float = 30.0) -> None:
        """Start it and wait until its web server answers."""
        await self.spawn()
        await self.ready(timeout)

    async def spawn(self) -> None:
        """Start it; do not wait."""
        command = runtime.mailbridge()  # as a user installs it; fails if missing or stale
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                command,
                "run",
                "--config",
                str(self.config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=runtime.env(self.env),
            )
        self.starts += 1

    async def ready(self, timeout: float = 30.0) -> None:
        """Wait until its web server answers; fail if it exits first."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                if self.proc.returncode is not None:
                    raise AssertionError(f"mailbridge exited; log:\n{self.logs()[-3000:]}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{self.base_url}/healthz") as r:
                        if r.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise AssertionError("mailbridge did not answer /healthz in time")
                await asyncio.sleep(0.05)

    async def kill(self) -> None:
        """SIGKILL: no chance to clean up, like a power cut."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def stop(self) -> int:
        """SIGTERM, as systemd stops it; return its exit status."""
        if self.proc is None:
            return 0
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return int(self.proc.returncode or 0)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


Section = dict[str, str | int]
GOOGLE_URLS = ("auth_uri", "token_uri", "revoke_uri", "api_endpoint")


def config_toml(sections: dict[str, Section], bot_lines: str = "") -> str:
    """The TOML text of ``sections`` (``bot_lines``: more lines of [bot], as typed), with what
    every rig's bot has: its own port and public URL given in ``sections["web"]``, no previews
    and no undo window unless ``sections["mail"]`` says otherwise."""
    mail: Section = {"confirm": "never", "undo_seconds": 0, **sections.get("mail", {})}
    text = []
    for name, values in {**sections, "mail": mail}.items():
        text.append(f"[{name}]")
        # A JSON string is a TOML basic string (the same escapes).
        text += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
        if name == "bot" and bot_lines:
            text.append(bot_lines)
    return "\n".join(text) + "\n"


def web(port: int, public: str = "") -> Section:
    """[web] for a bot on ``port`` (its public URL its own unless ``public``)."""
    return {"listen": f"127.0.0.1:{port}", "public_url": public or f"http://127.0.0.1:{port}"}


def google_section(
    google: Any, secrets: str | Path, urls: tuple[str, ...] = GOOGLE_URLS
) -> Section:
    """[google] against the fake ``google`` (in this process or not)."""
    return {"client_secrets_file": str(secrets), **{url: getattr(google, url) for url in urls}}


def telegram_section(telegram: Any, **more: str) -> Section:
    """[telegram] against the Bot API fake ``telegram``."""
    return {"token": telegram.token, "base_url": f"{telegram.url}/bot", **more}


def write_config(
    tmp_path: Path, google: Any, telegram: RemoteTelegram | None = None, extra: str = ""
) -> tuple[Path, str]:
    """A config for the bot against ``google`` (the fake, in this process or not) and, if
    given, ``telegram``; ``extra`` goes into [bot]. Return its path and the bot's public URL."""
    port = free_port()
    secrets = google.client_secrets_json()
    (tmp_path / "client_secret.json").write_text(json.dumps(secrets))
    sections = {
        "bot": {"database": "bot.db"},
        "web": web(port),
        "google": google_section(google, "client_secret.json"),
    }
    if telegram is not None:
        sections["telegram"] = telegram_section(telegram)
    config = tmp_path / "config.toml"
    config.write_text(config_toml(sections, extra))
    return config, str(sections["web"]["public_url"])


@dataclass
class Stack:
    google: RemoteGoogle
    telegram: RemoteTelegram
    bot: Daemon

    async def connect(self, users: list[int], http: aiohttp.ClientSession) -> None:
        """Connect Telegram users as people do: /connect in the private chat, open the link,
        press the button (Google's page consents by itself); user N becomes userN@gmail.com.
        The chats run side by side; the consents one at a time (the fake's next account is
        global)."""
        before = {user: len(await self.telegram.sent(user)) for user in users}
        await asyncio.gather(*(self.telegram.user_sends(user, "/connect") for user in users))
        said = await asyncio.gather(
            *(self.telegram.wait_for(user, "/connect/", before[user]) for user in users)
        )
        for user, message in zip(users, said, strict=True):
            email = f"user{user}@gmail.com"
            await self.google.set(add_account=email, next_account=email, auto_consent="allow")
            link = LOGIN_LINK.search(message["text"])
            assert link, message["text"]
            async with http.post(link.group(0)) as r:  # the page's button: a form POST
                assert r.status == 200, await r.text()
        await asyncio.gather(
            *(
                self.telegram.wait_for(user, f"Gmail connected as user{user}@gmail.com", n)
                for user, n in before.items()
            )
        )


@contextlib.asynccontextmanager
async def stack(tmp_path: Path, extra_config: str = "") -> AsyncIterator[Stack]:
    """The fakes and the bot, each in its own process; the bot is started."""
    async with remote_google() as google, remote_telegram() as telegram:
        config, public = write_config(tmp_path, google, telegram, extra_config)
        await google.set(redirect_uris=[f"{public}/oauth/callback"])
        bot = Daemon(config, public)
        await bot.start()
        try:
            yield Stack(google, telegram, bot)
        finally:
            await bot.stop()
