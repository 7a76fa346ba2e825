"""What an adapter knows of its network: did the last request get an answer (readiness), and
the counts of requests and failures (metrics)."""

from __future__ import annotations

from bot.metrics import Metrics


class Link:
    """The state of one chat network's API as the adapter last saw it."""

    def __init__(self, network: str, metrics: Metrics | None = None) -> None:
        self.network = network
        self.metrics = metrics or Metrics()
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
