"""mailbridge running in the test's event loop, exactly as ``mailbridge run`` wires it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from bot import app
from bot.config import Config
from tests.botproc import free_port
from tests.conftest import make_config


def web_section() -> dict[str, str]:
    """A [web] section on a free loopback port."""
    port = free_port()
    return {"listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}"}


def bot_config(tmp_path: Path, **sections: dict[str, Any]) -> Config:
    """A configuration in ``tmp_path`` with a web server on a free port."""
    sections.setdefault("web", web_section())
    return make_config(tmp_path, **sections)


@contextlib.asynccontextmanager
async def running(config: Config, timeout: float = 30.0) -> AsyncIterator[str]:
    """Run the bot until the block ends; yield its web server's base URL once it answers."""
    task = asyncio.create_task(app.run(config, console=False))
    base = f"http://{config.web.listen}"
    try:
        async with aiohttp.ClientSession() as http, asyncio.timeout(timeout):
            while True:
                if task.done():
                    task.result()  # it stopped: raise why
                    raise AssertionError("mailbridge stopped before its web server answered")
                try:
                    async with http.get(f"{base}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)
        yield base
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
