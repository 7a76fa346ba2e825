"""The pieces the scenarios share: a core on the real Gmail backend against the Google fake, a
chat that timestamps what the bot says, and connecting users through the real consent flow."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bot import config as config_mod
from bot.app import App
from bot.chat import Message, Reply
from bot.core import Core
from tests.botproc import free_port
from tests.chatkit import LOGIN_LINK
from tests.stack import RemoteGoogle


@dataclass
class Said:
    room: str
    text: str
    at: float


@dataclass
class TimedChat:
    """A chat network that records when each reply left the core."""

    platform: str = "telegram"
    said: list[Said] = field(default_factory=list)
    _waiters: list[tuple[Callable[[Said], bool], asyncio.Future[Said]]] = field(
        default_factory=list
    )

    async def run(self, handler: Any) -> None:
        await asyncio.Event().wait()

    async def send(self, room: str, reply: Reply) -> None:
        said = Said(room, reply.text, time.perf_counter())
        self.said.append(said)
        for waiter in list(self._waiters):
            predicate, future = waiter
            if not future.done() and predicate(said):
                future.set_result(said)
                self._waiters.remove(waiter)

    def expect(self, predicate: Callable[[Said], bool]) -> asyncio.Future[Said]:
        future: asyncio.Future[Said] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, future))
        return future


@dataclass
class Rig:
    core: Core
    chat: TimedChat
    fake: RemoteGoogle
    stack: contextlib.AsyncExitStack
    base_url: str
    gmail_seconds: list[float]
    n: int = 0

    def message(self, user: str, text: str, room: str | None = None) -> Message:
        """A message from chat user ``user`` (in their direct chat unless ``room``)."""
        self.n += 1
        return Message(
            platform="telegram",
            user_id=user,
            display_name=f"User {user}",
            room=room or user,
            is_direct=room is None,
            text=text,
            event_key=f"{room or user}:{self.n}",
        )


async def start_rig(tmp: Path, fake: RemoteGoogle) -> Rig:
    port = free_port()
    secrets_file = tmp / "client_secret.json"
    secrets_file.write_text(json.dumps(fake.client_secrets_json()))
    cfg = config_mod.from_dict(
        {
            "bot": {"database": "bench.db", "sends_per_minute": 10**6, "sends_per_day": 10**6},
            "web": {"listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}"},
            "mail": {"confirm": "never", "undo_seconds": 0},
            "google": {
                "client_secrets_file": str(secrets_file),
                "auth_uri": fake.auth_uri,
                "token_uri": fake.token_uri,
                "revoke_uri": fake.revoke_uri,
                "api_endpoint": fake.api_endpoint,
            },
        },
        base=tmp,
        env={},
    )
    chat = TimedChat()
    stack = contextlib.AsyncExitStack()
    app = await stack.enter_async_context(App.open(cfg, [chat], env={}))
    core = app.core
    gmail_seconds: list[float] = []
    send = core.backend.send

    async def timed_send(user_key: str, raw: bytes) -> Any:
        t0 = time.perf_counter()
        try:
            return await send(user_key, raw)
        finally:
            gmail_seconds.append(time.perf_counter() - t0)

    core.backend.send = timed_send  # type: ignore[method-assign]
    return Rig(core, chat, fake, stack, f"http://127.0.0.1:{port}", gmail_seconds)


async def stop_rig(rig: Rig) -> None:
    await rig.stack.aclose()


async def connect(rig: Rig, http: aiohttp.ClientSession, user: str) -> None:
    """Connect ``user`` the way a person does: /connect, open the link, press the button."""
    email = f"user{user}@gmail.com"
    await rig.fake.set(add_account=email, next_account=email, auto_consent="allow")
    linked = rig.chat.expect(lambda s: s.room == user and "Gmail connected" in s.text)
    await rig.core.handle(rig.message(user, "/connect"))
    said = [s for s in rig.chat.said if s.room == user and "/connect/" in s.text]
    link_said = said[-1]
    match = LOGIN_LINK.search(link_said.text)
    assert match, link_said.text
    async with http.post(match.group(0)) as r:  # the page's button: a form POST
        assert r.status == 200, await r.text()
    await asyncio.wait_for(linked, 10)


async def connect_many(rig: Rig, users: list[str]) -> None:
    async with aiohttp.ClientSession() as http:
        for user in users:  # one at a time: the fake's next_account is global
            await connect(rig, http, user)
