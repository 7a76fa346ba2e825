"""What a check finds, and the one way it asks a service."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from bot.google.token_endpoint import EndpointDown


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing checked: whether it holds, and a sentence (with the fix when it does not)."""

    ok: bool
    service: str
    text: str

    def line(self) -> str:
        """Return the finding as one printable line."""
        return f"{'ok  ' if self.ok else 'FAIL'} {self.service}: {self.text}"


async def get_json(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    """Return the status and JSON object of an answer; raise EndpointDown if none came."""
    try:
        async with http.request(method, url, allow_redirects=False, **kwargs) as r:
            status, body = r.status, await r.read()
    except (TimeoutError, aiohttp.ClientError) as exc:
        # The exception's text may hold the URL, and Telegram's URLs hold the bot token.
        raise EndpointDown(type(exc).__name__) from None
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    return status, data if isinstance(data, dict) else {}
