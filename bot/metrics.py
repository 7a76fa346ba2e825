"""Prometheus metrics: one registry per bot, so several bots in one process keep their own counts.

Counters start from zero with each process (Prometheus's model); gauges that describe stored
state (the outbox, linked accounts) are read from the database when scraped. No label carries a
user id, an address or a subject: labels are outcomes, command names, networks and routes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from bot import __version__
from bot.store.db import tally
from bot.store.engine import Database

# The outbox states (bot/outbox.py), always all exported so a state at zero is still a series.
OUTBOX_STATES = ("held", "queued", "sending", "sent", "failed", "unknown", "cancelled")
CONTENT_TYPE = CONTENT_TYPE_LATEST
# Gmail answers in well under a second normally; the long tail is rate-limit waits and timeouts.
SEND_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """The bot's metrics and the few calls that move them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.mails = Counter(
            "mailbridge_mails", "Mails whose delivery ended, by outcome.", ["outcome"], registry=r
        )
        for outcome in ("sent", "failed", "unknown", "cancelled"):
            self.mails.labels(outcome)  # every outcome is a series from the start, at zero
        self.send_seconds = Histogram(
            "mailbridge_send_duration_seconds",
            "Time a send took at the mail provider, retries included.",
            buckets=SEND_BUCKETS,
            registry=r,
        )
        self.outbox = Gauge(
            "mailbridge_outbox_mails", "Mails in the outbox by state.", ["state"], registry=r
        )
        self.commands = Counter(
            "mailbridge_commands",
            "Chat commands handled, by command and result (ok, refused, error).",
            ["command", "result"],
            registry=r,
        )
        self.chat_calls = Counter(
            "mailbridge_chat_api_calls",
            "Requests to a chat network's API.",
            ["network"],
            registry=r,
        )
        self.chat_failures = Counter(
            "mailbridge_chat_api_failures",
            "Requests to a chat network's API that got no answer or an error status.",
            ["network"],
            registry=r,
        )
        self.waiting = Gauge(
            "mailbridge_replies_waiting_on_rate_limit",
            "Replies held back by a chat network's rate limits right now.",
            ["network"],
            registry=r,
        )
        self.linked = Gauge(
            "mailbridge_linked_accounts", "Chat users with a linked Google account.", registry=r
        )
        self.refreshes = Counter(
            "mailbridge_token_refreshes", "Access-token refreshes asked of Google.", registry=r
        )
        self.refresh_failures = Counter(
            "mailbridge_token_refresh_failures",
            "Access-token refreshes that failed, by reason (invalid_grant, invalid_client,"
            " unauthorized_client, refused, unreachable).",
            ["reason"],
            registry=r,
        )
        self.web = Counter(
            "mailbridge_web_requests",
            "Web requests answered, by route template and status.",
            ["route", "status"],
            registry=r,
        )
        Info("mailbridge_build", "The running mailbridge.", registry=r).info(
            {"version": __version__}
        )
        self._read_state: Callable[[], Awaitable[None]] | None = None

    def read_state_from(self, db: Database) -> None:
        """Read the stored-state gauges from ``db`` at each scrape."""

        async def read() -> None:
            counts, linked = await tally(db)
            for state in OUTBOX_STATES:
                self.outbox.labels(state).set(counts.get(state, 0))
            self.linked.set(linked)

        self._read_state = read

    async def exposition(self) -> bytes:
        """Return the metrics in Prometheus's text format, stored state read just now."""
        if self._read_state is not None:
            await self._read_state()
        return generate_latest(self.registry)

    def mail_ended(self, outcome: str) -> None:
        """Count a mail whose delivery ended: sent, failed, unknown or cancelled."""
        self.mails.labels(outcome).inc()

    def command(self, name: str, result: str) -> None:
        """Count a command (a known name or "unknown") and how it ended."""
        self.commands.labels(name, result).inc()

    def network(self, network: str) -> None:
        """Start a chat network's series at zero, so rates and alerts work from the start."""
        for family in (self.chat_calls, self.chat_failures, self.waiting):
            family.labels(network)

    def chat_call(self, network: str, ok: bool) -> None:
        """Count one request to a chat network's API."""
        self.chat_calls.labels(network).inc()
        if not ok:
            self.chat_failures.labels(network).inc()

    @contextlib.contextmanager
    def waiting_on_rate_limit(self, network: str) -> Iterator[None]:
        """Count a reply as held back by rate limits while the block runs."""
        gauge = self.waiting.labels(network)
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()

    def token_refresh(self, failure: str | None = None) -> None:
        """Count a token refresh; ``failure`` names why it failed, if it did."""
        self.refreshes.inc()
        if failure is not None:
            self.refresh_failures.labels(failure).inc()

    @contextlib.contextmanager
    def timing_send(self) -> Iterator[None]:
        """Observe how long the block (one send to the provider) takes."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.send_seconds.observe(time.monotonic() - started)

    def web_request(self, route: str, status: int) -> None:
        """Count a web request by its route template (never the raw path) and status."""
        self.web.labels(route, str(status)).inc()
