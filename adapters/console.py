"""The console: stdin lines are messages from one local user in a direct chat; replies to stdout.

A line ending in a backslash continues on the next line, so a multi-line body can be typed.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
import threading
import time
from typing import TextIO

from bot.chat import Handler, Message, Reply

ROOM = "console"


class ConsoleAdapter:
    """Chat from a terminal (or a pipe)."""

    platform = "console"

    def __init__(self, stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        self._stdin = stdin or sys.stdin
        self._stdout = stdout or sys.stdout
        self._user = _local_user()
        # Event keys must stay unique across runs that share a database.
        self._run_id = f"{time.time_ns():x}"

    async def connected(self) -> bool:
        """The terminal is always there."""
        return True

    async def run(self, handler: Handler) -> None:
        """Hand each (joined) input line to ``handler``; return at end of input."""
        lines = self._start_reader()
        n = 0
        while True:
            text = await self._next_message(lines)
            if text is None:
                return
            if not text.strip():
                continue
            n += 1
            await handler(
                Message(
                    platform=self.platform,
                    user_id=self._user,
                    display_name=self._user,
                    room=ROOM,
                    is_direct=True,
                    text=text,
                    event_key=f"{self._run_id}-{n}",
                )
            )

    async def send(self, room: str, reply: Reply) -> None:
        """Print ``reply`` and its buttons."""
        text = reply.text
        for button in reply.buttons:
            text += f"\n  [{button.label}] {button.url or button.data or ''}"
        self._stdout.write(text + "\n")
        self._stdout.flush()

    async def _next_message(self, lines: asyncio.Queue[str | None]) -> str | None:
        parts: list[str] = []
        while True:
            line = await lines.get()
            if line is None:  # end of input; an unfinished continuation still counts
                return "\n".join(parts) if parts else None
            line = line.rstrip("\r\n")
            if line.endswith("\\"):
                parts.append(line[:-1])
                continue
            parts.append(line)
            return "\n".join(parts)

    def _start_reader(self) -> asyncio.Queue[str | None]:
        # A daemon thread, not the default executor: a read blocked on a terminal must not keep
        # the process alive at exit.
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()

        def read() -> None:
            try:
                for line in self._stdin:
                    loop.call_soon_threadsafe(queue.put_nowait, line)
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except RuntimeError:
                pass  # the loop closed while we were reading: nobody is listening any more

        threading.Thread(target=read, name="console-stdin", daemon=True).start()
        return queue


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "local"
