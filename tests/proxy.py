"""A small HTTP round-robin load balancer on 127.0.0.1, as an operator puts in front of several
mailbridge instances (nginx ``upstream``, HAProxy in HTTP mode): each request goes to the next
backend in turn.

HTTP level, not TCP: the Bot API server keeps a few connections open and sends many updates
over each (tdlib/telegram-bot-api#651), so a TCP balancer would pin them to one instance.
Like nginx's default ``proxy_next_upstream error timeout``, a backend that refuses the connection
is skipped for the next one (nothing reached it); a backend that dies after the request was sent
is not retried elsewhere (a POST is not idempotent, RFC 9110 section 9.2.2): the caller gets a
502 and decides, as Telegram does by delivering the update again.

Alone: ``python -m tests.proxy --backends 8001,8002`` prints its URL, then serves until SIGTERM;
``GET /_proxy/stats`` answers what each backend was given, how it answered, how many
milliseconds its answers took in all (``"8001 ms"``) and how many requests it holds now
(``"8001 open"``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import time
from collections import Counter

import aiohttp
from aiohttp import web

# RFC 9110 section 7.6.1: connection-specific fields are not forwarded by an intermediary.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


class Proxy:
    """Round-robin over ``backends`` (ports on 127.0.0.1)."""

    def __init__(self, backends: list[int], port: int = 0) -> None:
        self.backends = backends
        self.port = port
        self.stats: Counter[str] = Counter()
        self._turn = itertools.cycle(range(len(backends)))
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> str:
        """Listen; return the base URL."""
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_get("/_proxy/stats", self._stats)
        app.router.add_route("*", "/{path:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = int(self._runner.addresses[0][1])
        # No timeout of its own: the caller's (Telegram gives up after a while) decides.
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None), auto_decompress=False
        )
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(dict(self.stats))

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["X-Forwarded-For"] = request.remote or ""
        for _ in self.backends:
            port = self.backends[next(self._turn)]
            url = f"http://127.0.0.1:{port}{request.rel_url}"
            t0 = time.monotonic()
            self.stats[f"{port} open"] += 1  # requests it holds right now
            try:
                async with self._http.request(
                    request.method, url, data=body, headers=headers, allow_redirects=False
                ) as r:
                    content = await r.read()
                    self.stats[f"{port} {r.status}"] += 1
                    self.stats[f"{port} ms"] += round((time.monotonic() - t0) * 1000)
                    out = {k: v for k, v in r.headers.items() if k.lower() not in HOP_BY_HOP}
                    return web.Response(status=r.status, body=content, headers=out)
            except aiohttp.ClientConnectorError:
                self.stats[f"{port} refused"] += 1  # down: nothing was sent, try the next
            except aiohttp.ClientError:
                self.stats[f"{port} died"] += 1  # it took the request and went away
                return web.Response(status=502, text="backend went away")
            finally:
                self.stats[f"{port} open"] -= 1
        return web.Response(status=502, text="no backend is up")


async def _serve(backends: list[int], port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    proxy = Proxy(backends, port)
    print(await proxy.start(), flush=True)
    try:
        await stop.wait()
    finally:
        await proxy.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A round-robin HTTP proxy on 127.0.0.1.")
    parser.add_argument("--backends", required=True, help="ports, comma-separated")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(_serve([int(p) for p in args.backends.split(",")], args.port))
