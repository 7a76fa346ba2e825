"""A chat network for tests: messages go straight into the core, replies are collected."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass

from bot.chat import Handler, Message, Reply

# A login link as the bot posts it, wherever a test or benchmark reads one (its token is URL-safe
# base64).
LOGIN_LINK = re.compile(r"https?://\S+/connect/[\w-]+")


@dataclass(frozen=True)
class Said:
    """One reply the bot sent."""

    room: str
    reply: Reply

    @property
    def text(self) -> str:
        return self.reply.text


class ChatKit:
    """A test adapter: ``say`` sends as a user, ``replies`` holds what the bot answered."""

    def __init__(self, platform: str = "telegram") -> None:
        self.platform = platform
        self.replies: list[Said] = []
        self._changed = asyncio.Event()
        self._ids = itertools.count(1)
        self.handler: Handler | None = None

    async def connected(self) -> bool:
        return True

    async def run(self, handler: Handler) -> None:
        self.handler = handler
        await asyncio.Event().wait()

    async def send(self, room: str, reply: Reply) -> None:
        self.replies.append(Said(room, reply))
        self._changed.set()

    def message(
        self,
        text: str,
        *,
        user: str = "1001",
        name: str = "Alice",
        room: str | None = None,
        direct: bool = True,
        event_key: str | None = None,
    ) -> Message:
        return Message(
            platform=self.platform,
            user_id=user,
            display_name=name,
            room=room or f"dm-{user}",
            is_direct=direct,
            text=text,
            event_key=event_key or f"ev{next(self._ids)}",
        )

    async def wait_for(
        self, predicate: Callable[[Said], bool], timeout: float = 10.0, start: int = 0
    ) -> Said:
        """Return the first reply from index ``start`` on that matches, waiting for it."""
        async with asyncio.timeout(timeout):
            while True:
                for said in self.replies[start:]:
                    if predicate(said):
                        return said
                self._changed.clear()
                await self._changed.wait()
