"""Wiring: build the core, its adapters and the web server from a configuration; run them."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.backends import MailBackend
from bot.chat import ChatAdapter, Relay
from bot.config import Config
from bot.core import Core
from bot.errors import ConfigError, InstallError
from bot.google.tokens import Tokens
from bot.health import not_ready
from bot.intake import run_adapters, signals
from bot.leader import Heartbeat, Leadership, bounded, join
from bot.link_check import LinkCheck
from bot.local_outbox import LocalOutbox
from bot.lock import hold
from bot.metrics import Metrics
from bot.relay import StoreRelay
from bot.store.accounts import Accounts
from bot.store.db import MEMORY, open_database
from bot.store.engine import Database
from bot.store.instances import keeper, new_run
from bot.store.link_health import LinkHealth
from bot.store.relayed import RelayedRows
from bot.store.vault import KEY_ENV, SecretBox, load_key
from bot.web import WebServer

log = logging.getLogger(__name__)


def key_file(config: Config, env: Mapping[str, str] | None = None) -> Path | None:
    """Return where the data key lives: configured, or beside the database."""
    database = config.bot.database
    if str(database) == MEMORY:
        return None
    if not isinstance(database, Path):
        # PostgreSQL: every instance must seal and open with the same key, so none is made
        # up beside a URL; a configured file is made by the first instance (O_EXCL).
        env = os.environ if env is None else env
        if config.bot.data_key_file is None and not env.get(KEY_ENV):
            raise ConfigError(
                "[bot] data_key_file: with a PostgreSQL database every instance needs the same"
                f" data key: set data_key_file to a file they all read, or {KEY_ENV}"
            )
        return config.bot.data_key_file
    return config.bot.data_key_file or database.with_name(database.name + ".key")


def preflight(config: Config, *, console: bool = False, read_client: bool = True) -> None:
    """Import what this configuration runs and read its Google client, so that a missing
    library or a broken client file is one line from ``check`` (and ``run``), not a traceback."""
    key_file(config)  # PostgreSQL: no instance may make up a data key of its own
    needs: list[tuple[str, str]] = []
    if config.mail_backend == "gmail":
        needs += [
            ("[google]", m) for m in ("bot.google.gmail", "bot.google.oauth", "bot.google.tokens")
        ]
    if console:
        needs.append(("--console", "adapters.console"))
    else:
        if config.telegram is not None:
            needs.append(("[telegram]", "adapters.telegram"))
        if config.matrix is not None:
            needs.append(("[matrix]", "adapters.matrix"))
    for section, module in needs:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise InstallError.missing(section, exc) from None
    if read_client and config.google is not None and config.mail_backend == "gmail":
        from bot.google.client import load_client

        load_client(config.google)  # a broken client file raises ConfigError naming the key


def build_core(
    config: Config,
    db: Database,
    box: SecretBox,
    clock: Callable[[], float] = time.time,
    run: str = "",
) -> tuple[Core, LinkCheck | None]:
    """Return a core with the mail backend (and consent flow) the configuration asks for,
    and the link check it needs (with Google)."""
    metrics = Metrics()
    if config.mail_backend == "outbox":
        backend = LocalOutbox(config.mail.outbox_dir)
        return Core(config, db, box, backend, metrics=metrics, clock=clock, run=run), None
    from bot.google.client import load_client
    from bot.google.gmail import GmailBackend
    from bot.google.oauth import OAuth

    assert config.google is not None  # checked when the configuration was loaded
    client = load_client(config.google)
    health = LinkHealth(db)
    tokens = Tokens(client, Accounts(db, box), metrics=metrics, health=health, clock=clock)
    gmail = GmailBackend(client, Accounts(db, box), tokens)
    oauth = OAuth(client, config.web.public_url, Accounts(db, box), tokens)
    core = Core(config, db, box, gmail, oauth, metrics=metrics, clock=clock, run=run)
    return core, LinkCheck(core.ctx, tokens, health, clock)


def chat_adapters(
    config: Config,
    console: bool,
    web: WebServer | None,
    metrics: Metrics | None = None,
    relay: Relay | None = None,
) -> list[ChatAdapter]:
    """Return the chat adapters to run: the console alone, or the configured networks
    (``relay``: where a Matrix standby's replies go, with several instances)."""
    if console:
        from adapters.console import ConsoleAdapter

        return [ConsoleAdapter()]
    adapters: list[ChatAdapter] = []
    if config.telegram is not None:
        from adapters.telegram import WEBHOOK_PATH, TelegramAdapter
        from bot.commands.table import MENU

        telegram = TelegramAdapter(config.telegram, config.web.public_url, metrics, MENU)
        if config.telegram.mode == "webhook" and web is not None:
            web.add_post(WEBHOOK_PATH, telegram.webhook)
        adapters.append(telegram)
    if config.matrix is not None:
        from adapters.matrix import MatrixAdapter
        from bot.policy import admits

        allowed = admits(config.bot.allowed_users)
        adapters.append(MatrixAdapter(config.matrix, allowed, metrics, relay))
    return adapters


async def run(config: Config, *, console: bool, serve_web: bool = True) -> int:
    """Run mailbridge until its input ends (console) or it is told to stop; return exit code.

    ``serve_web`` is off in trial mode only: no consent flow, so no web server to start."""
    if not console and config.telegram is None and config.matrix is None:
        raise ConfigError(
            "[telegram] / [matrix]: no chat network is configured; add one of the sections, "
            "or pass --console"
        )
    preflight(config, console=console)
    if not isinstance(config.bot.database, Path) or str(config.bot.database) == MEMORY:
        # PostgreSQL: instances share it (heartbeats tell whose mail is whose).
        return await _serve(config, console=console, serve_web=serve_web)
    # Before the database is opened: a second process must not migrate it or recover its mail.
    with hold(config.bot.database):
        return await _serve(config, console=console, serve_web=serve_web)


@dataclass
class App:
    """A running mailbridge: the core, its chat adapters and its web server (if any)."""

    config: Config
    db: Database
    core: Core
    adapters: list[ChatAdapter]
    web: WebServer | None
    link_check: LinkCheck | None = None
    leadership: Leadership | None = None
    heartbeat: Heartbeat | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        config: Config,
        adapters: Sequence[ChatAdapter] | None = None,
        *,
        console: bool = False,
        serve_web: bool = True,
        env: dict[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> AsyncIterator[App]:
        """Open the database, build the core, attach ``adapters`` (else the configured ones),
        start the web server, recover the outbox and start the link check; close it all on
        leaving. ``clock`` is the time of scheduled mail and of the link check (tests move
        it)."""
        keys = key_file(config, env)  # before the database: a missing key is one sentence
        db = await open_database(config.bot.database)
        backend: MailBackend | None = None
        web: WebServer | None = None
        check: LinkCheck | None = None
        run = new_run()
        leadership = Leadership(keeper(db, run), shared=db.shared)
        heartbeat: Heartbeat | None = None
        try:
            key = SecretBox(load_key(keys, env=env))
            core, check = build_core(config, db, key, clock, run)
            backend = core.backend
            if serve_web:
                notices = core.notices
                web = WebServer(
                    config.web.listen,
                    core.oauth,
                    notices.linked,
                    notices.login_failed,
                    core.metrics,
                    config.web.metrics_listen,
                )
            if adapters is None:
                # Several instances: a Matrix standby's replies go through the database.
                relay = StoreRelay(RelayedRows(db, key), "matrix") if db.shared else None
                adapters = chat_adapters(config, console, web, core.metrics, relay)
            if web is not None:
                web.readiness = functools.partial(not_ready, db, adapters)
            for adapter in adapters:
                core.attach(adapter)
            if web is not None:
                await _start_web(config, web)
            if db.shared:  # live before taking any work over (bot.store.instances)
                heartbeat = await join(db, run, leadership, core.outbox, adapters)
                heartbeat.wake.set()  # its first look now, beside the start: never blocking it
            else:
                await core.outbox.recover()
            if check is not None:
                check.start(leadership)
            yield cls(config, db, core, list(adapters), web, check, leadership, heartbeat)
            # Not after an error: waiting for deliveries could hang; a restart recovers them.
            await core.outbox.close()
            if heartbeat is not None:
                await bounded("the heartbeat", heartbeat.stop())  # others take over at once
        finally:
            if check is not None:
                await bounded("the link check", check.stop())
            if heartbeat is not None:
                await bounded("the heartbeat", heartbeat.pause())
            await bounded("the leases", leadership.close())
            if web is not None:
                await bounded("the web server", web.stop(), 10.0)
            if backend is not None:
                await bounded("the mail backend", backend.close())
            await db.close()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run the chat adapters until the console's input ends or a signal (or ``stop``)
        stops them."""
        await run_adapters(self.core, self.adapters, self.leadership, stop)


async def _serve(config: Config, *, console: bool, serve_web: bool) -> int:
    stop = asyncio.Event()
    with signals(stop):  # from the very start: a SIGTERM while starting is an orderly stop
        async with App.open(config, console=console, serve_web=serve_web) as app:
            await app.run(stop)
    return 0


async def _start_web(config: Config, web: WebServer) -> None:
    try:
        await web.start()
    except OSError as exc:
        raise ConfigError(
            f"[web] listen / metrics_listen: cannot listen on {config.web.listen}"
            f"{' or ' + config.web.metrics_listen if config.web.metrics_listen else ''}:"
            f" {exc.strerror}"
        ) from None
