"""Several ``mailbridge run`` processes on one PostgreSQL database, as an operator runs them:
the same configuration but each its own port, one shared data key file, Telegram in webhook
mode behind a round-robin HTTP proxy (``tests/proxy.py``) whose URL is the bot's public URL, so
Telegram's updates, the login pages and Google's consent callbacks land on any instance. The
Bot API fake, the Google fake and the proxy are child processes too.

Used by the several-instances tier (tests/test_instances.py) and by ``benchmarks``. Every
process the rig starts, it stops (or kills) before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.fernet import Fernet

from tests.botproc import free_port
from tests.stack import (
    Daemon,
    RemoteGoogle,
    RemoteTelegram,
    Stack,
    _child,
    _end,
    config_toml,
    google_section,
    remote_google,
    remote_telegram,
    telegram_section,
    until,
    web,
)

SECRET = "tier-webhook-Secret_1"


def config_text(
    database: str, key_file: Path, port: int, public: str, google: Any, telegram: Any, extra: str
) -> str:
    """One instance's configuration: everything shared but ``[web] listen``."""
    sections = {
        "bot": {"database": database, "data_key_file": str(key_file)},
        "web": web(port, public),
        "google": google_section(google, "client_secret.json"),
        "telegram": telegram_section(telegram, mode="webhook", webhook_secret=SECRET),
    }
    return config_toml(sections, extra)


@dataclass
class Instances:
    """The running system: ``bots[i]`` is instance i, reached directly or through ``public``."""

    google: RemoteGoogle
    telegram: RemoteTelegram
    bots: list[Daemon]
    public: str  # the proxy: the bot's public URL and Telegram's webhook host

    async def connect(self, users: list[int], http: aiohttp.ClientSession) -> None:
        """Connect Telegram users through the proxy, as ``Stack.connect`` does for one bot."""
        await Stack(self.google, self.telegram, self.bots[0]).connect(users, http)

    async def restart(self, i: int) -> None:
        """SIGKILL instance ``i`` (if it runs) and start it again; wait until it answers."""
        await self.bots[i].kill()
        await self.bots[i].start(timeout=60)

    async def ready(self, timeout: float = 60.0) -> None:
        """Wait until every instance says it is ready (``/readyz``: database and Telegram),
        that is past its start, recovery included."""

        async def all_ready() -> bool:
            async with aiohttp.ClientSession() as http:
                for bot in self.bots:
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(f"{bot.base_url}/readyz") as r:
                            if r.status == 200:
                                continue
                    return False
            return True

        await until(all_ready, timeout)

    async def proxy_stats(self) -> dict[str, int]:
        """What the proxy did, by backend and answer: ``{"8001 200": 9, "8002 refused": 1}``."""
        async with aiohttp.ClientSession() as http, http.get(f"{self.public}/_proxy/stats") as r:
            stats: dict[str, int] = await r.json()
            return stats

    async def stop(self) -> list[int]:
        """SIGTERM every instance; return their exit statuses."""
        return list(await asyncio.gather(*(bot.stop() for bot in self.bots)))

    def logs(self) -> str:
        return "\n".join(f"--- instance {i}\n{bot.logs()}" for i, bot in enumerate(self.bots))


@contextlib.asynccontextmanager
async def instances(
    tmp_path: Path, database: str, n: int = 3, extra_config: str = ""
) -> AsyncIterator[Instances]:
    """The fakes, the proxy and ``n`` instances on ``database``, all started."""
    async with remote_google() as google, remote_telegram() as telegram:
        # Chosen once the fakes listen (on ports of their own choosing), just before use.
        ports = [free_port() for _ in range(n)]
        proxy, public = await _child("tests.proxy", "--backends", ",".join(map(str, ports)))
        bots: list[Daemon] = []
        try:
            key_file = tmp_path / "data.key"  # shared by the instances, as the docs ask
            key_file.write_bytes(Fernet.generate_key() + b"\n")
            key_file.chmod(0o600)
            await google.set(redirect_uris=[f"{public}/oauth/callback"])
            for i, port in enumerate(ports):
                folder = tmp_path / f"instance{i}"
                folder.mkdir()
                secrets = json.dumps(google.client_secrets_json())
                (folder / "client_secret.json").write_text(secrets)
                config = folder / "config.toml"
                config.write_text(
                    config_text(database, key_file, port, public, google, telegram, extra_config)
                )
                bots.append(Daemon(config, f"http://127.0.0.1:{port}"))
            await bots[0].start(timeout=60)  # the first one alone: it applies the migrations
            await asyncio.gather(*(bot.start(timeout=60) for bot in bots[1:]))
            yield Instances(google, telegram, bots, public)
        finally:
            await asyncio.gather(*(bot.stop() for bot in bots), return_exceptions=True)
            await _end(proxy)
