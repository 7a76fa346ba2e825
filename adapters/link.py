"""What an adapter knows of its network: did the last request get an answer (readiness), and
the counts of requests and failures (metrics)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from bot.chat import NetworkMetrics


class Link:
    """The state of one chat network's API as the adapter last saw it."""

    def __init__(self, network: str, metrics: NetworkMetrics | None = None) -> None:
        self.network = network
        self.metrics = metrics or Uncounted()
        self.metrics.network(network)
        self.connected = False  # until a first request is answered

    def answered(self, status: int) -> None:
        """Record a request the network answered with HTTP ``status``."""
        # 5xx usually comes from a proxy in front of a network that is down: not connected.
        self.connected = status < 500
        self.metrics.chat_call(self.network, ok=status < 400)

    def failed(self) -> None:
        """Record a request that got no answer (refused, reset, timed out)."""
        self.connected = False
        self.metrics.chat_call(self.network, ok=False)


class Uncounted:
    """Metrics for an adapter run without them (a test of the adapter alone): nothing counted."""

    def network(self, network: str) -> None:
        """Count nothing."""

    def chat_call(self, network: str, ok: bool) -> None:
        """Count nothing."""

    @contextlib.contextmanager
    def waiting_on_rate_limit(self, network: str) -> Iterator[None]:
        """Count nothing."""
        yield
