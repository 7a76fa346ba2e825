"""Wiring: build the core and its adapters from a configuration and run them in one loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from bot.backends import MailBackend
from bot.chat import ChatAdapter
from bot.config import Config
from bot.core import Core
from bot.errors import ConfigError
from bot.local_outbox import LocalOutbox
from bot.store import MEMORY, open_database
from bot.vault import SecretBox, load_key

log = logging.getLogger(__name__)


def build_backend(config: Config) -> MailBackend:
    """Return the mail backend the configuration asks for."""
    if config.mail_backend == "outbox":
        return LocalOutbox(config.mail.outbox_dir)
    raise ConfigError("[mail] backend: gmail is not available in this version yet")


def key_file(config: Config) -> Path | None:
    """Return where the data key lives: configured, or beside the database."""
    if str(config.bot.database) == MEMORY:
        return None
    return config.bot.data_key_file or config.bot.database.with_name(
        config.bot.database.name + ".key"
    )


def chat_adapters(config: Config, console: bool) -> list[ChatAdapter]:
    """Return the chat adapters to run."""
    adapters: list[ChatAdapter] = []
    if console:
        from adapters.console import ConsoleAdapter

        adapters.append(ConsoleAdapter())
    return adapters


async def run(config: Config, *, console: bool) -> int:
    """Run mailbridge until its input ends (console) or it is told to stop; return exit code."""
    adapters = chat_adapters(config, console)
    if not adapters:
        raise ConfigError(
            "[telegram] / [matrix]: no chat network is configured; add one of the sections, "
            "or pass --console"
        )
    db = await open_database(config.bot.database)
    backend = build_backend(config)
    core = Core(config, db, SecretBox(load_key(key_file(config))), backend)
    try:
        for adapter in adapters:
            core.attach(adapter)
        await core.outbox.recover()
        await _run_adapters(core, adapters)
        await core.outbox.drain()
    finally:
        await backend.close()
        await db.close()
    return 0


async def _run_adapters(core: Core, adapters: list[ChatAdapter]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(a.run(core.handle), name=a.platform) for a in adapters]
    stopper = asyncio.create_task(stop.wait())
    try:
        # The console ends with its input; the others run until a signal.
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for task in [*tasks, stopper]:
            task.cancel()
        await asyncio.gather(*tasks, stopper, return_exceptions=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
