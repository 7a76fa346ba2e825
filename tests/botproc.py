"""mailbridge as a separate process, driven through its console like an operator would."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
from pathlib import Path

from tests import runtime


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BotProcess:
    """``mailbridge run --console --config PATH`` with stdin and stdout in the test's hands."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.env = runtime.env(env)
        self.log_path = config.parent / "mailbridge.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []

    async def start(self) -> BotProcess:
        command = runtime.mailbridge()  # as a user installs it; fails if missing or stale
        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            command,
            "run",
            "--console",
            "--config",
            str(self.config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env=self.env,
        )
        log.close()
        return self

    async def say(self, text: str) -> None:
        """Type one line into the bot's console."""
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()

    async def expect(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """Wait for an output line matching ``pattern`` (searching lines read before, too)."""
        regex = re.compile(pattern)
        for line in self.lines:
            if m := regex.search(line):
                self.lines.remove(line)
                return m
        assert self.proc is not None
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(f"mailbridge exited; log:\n{self.logs()[-3000:]}")
                line = raw.decode().rstrip("\n")
                if m := regex.search(line):
                    return m
                self.lines.append(line)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def kill(self) -> None:
        """SIGKILL: no chance to clean up, like a power cut."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> int:
        """Close its input and wait for it to finish (it drains pending sends)."""
        assert self.proc is not None
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                async with asyncio.timeout(30):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return int(self.proc.returncode or 0)
