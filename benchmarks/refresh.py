"""``python -m benchmarks.refresh [--users N]``: an access-token refresh two ways, same run.

1. What the bot does: one form POST (RFC 6749 section 6) on a shared aiohttp session, on the
   event loop (``bot.google.token_endpoint.post_form``).
2. What it did before: google-auth's ``Credentials.refresh`` over urllib3, in a thread pool.

Against the Google fake in its own process. Reports the median of sequential refreshes, the wall
time of N refreshes at once, and the longest the event loop was held up meanwhile (a 1 ms
ticker); prints one JSON line. It asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import urllib3
from google.auth.transport.urllib3 import Request
from google.oauth2.credentials import Credentials

from bot.google.token_endpoint import basic_auth, post_form
from tests.stack import RemoteGoogle, remote_google

REDIRECT = "http://127.0.0.1:9/oauth/callback"
SCOPE = "openid email https://www.googleapis.com/auth/gmail.send"


async def refresh_tokens(google: RemoteGoogle, http: aiohttp.ClientSession, n: int) -> list[str]:
    """Consent ``n`` times through the fake; return the refresh tokens."""
    web = google.client_secrets_json()["web"]
    auth = basic_auth(web["client_id"], web["client_secret"])
    await google.set(auto_consent="allow", redirect_uris=[REDIRECT], client_secret_post=True)
    tokens = []
    for _ in range(n):
        verifier = secrets.token_urlsafe(64)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        query = {
            "response_type": "code",
            "client_id": web["client_id"],
            "redirect_uri": REDIRECT,
            "scope": SCOPE,
            "state": secrets.token_urlsafe(16),
            "code_challenge": challenge.decode().rstrip("="),
            "code_challenge_method": "S256",
            "access_type": "offline",
        }
        url = f"{google.auth_uri}?{urlencode(query)}"
        async with http.get(url, allow_redirects=False) as r:
            code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        }
        tokens.append(str((await post_form(http, google.token_uri, form, auth))["refresh_token"]))
    return tokens


async def measure(
    refresh: Callable[[str], Awaitable[Any]], tokens: list[str], sequential: int
) -> dict[str, float]:
    times = []
    for i in range(sequential):
        t0 = time.perf_counter()
        await refresh(tokens[i % len(tokens)])
        times.append(time.perf_counter() - t0)
    lag = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal lag
        while not stop.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(0.001)
            lag = max(lag, time.perf_counter() - t0 - 0.001)

    tick = asyncio.create_task(ticker())
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(refresh(t) for t in tokens))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    stop.set()
    await tick
    return {
        "median_ms": statistics.median(times) * 1000,
        "burst_wall_s": wall,
        "burst_cpu_s": cpu,
        "burst_loop_lag_max_ms": lag * 1000,
    }


async def run(users: int, sequential: int, pool_size: int) -> dict[str, Any]:
    async with remote_google() as google, aiohttp.ClientSession() as http:
        tokens = await refresh_tokens(google, http, users)
        web = google.client_secrets_json()["web"]
        auth = basic_auth(web["client_id"], web["client_secret"])

        async def by_aiohttp(token: str) -> None:
            form = {"grant_type": "refresh_token", "refresh_token": token}
            await post_form(http, google.token_uri, form, auth)

        pool = ThreadPoolExecutor(pool_size)
        manager = urllib3.PoolManager(maxsize=pool_size, retries=False)

        def refresh_sync(token: str) -> None:
            creds = Credentials(  # type: ignore[no-untyped-call]
                token=None,
                refresh_token=token,
                token_uri=google.token_uri,
                client_id=web["client_id"],
                client_secret=web["client_secret"],
            )
            creds.refresh(Request(manager))  # type: ignore[no-untyped-call]

        async def by_google_auth(token: str) -> None:
            await asyncio.get_running_loop().run_in_executor(pool, refresh_sync, token)

        result: dict[str, Any] = {"users": users, "pool_threads": pool_size}
        for name, fn in (("aiohttp", by_aiohttp), ("google_auth_pool", by_google_auth)):
            for key, value in (await measure(fn, tokens, sequential)).items():
                result[f"{name}_{key}"] = round(value, 3)
        pool.shutdown()
        return result


def main() -> None:
    """Measure and print the figures as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.refresh", description=__doc__)
    parser.add_argument("--users", type=int, default=200, help="refreshes at once")
    parser.add_argument("--sequential", type=int, default=300, help="refreshes one by one")
    parser.add_argument("--pool", type=int, default=8, help="threads for google-auth")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.users, args.sequential, args.pool))))


if __name__ == "__main__":
    main()
