"""matrix-nio's client, counting each homeserver request on the adapter's link."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import ClientError, ClientResponse
from nio import AsyncClient

from adapters.link import Link


class LinkedClient(AsyncClient):  # type: ignore[misc]
    """An ``AsyncClient`` that tells ``link`` how each request went."""

    def __init__(self, *args: Any, link: Link, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.link = link

    async def send(self, *args: Any, **kwargs: Any) -> ClientResponse:
        """Send one request (see ``AsyncClient.send``) and record its answer."""
        try:
            response: ClientResponse = await super().send(*args, **kwargs)
        except (ClientError, TimeoutError):
            self.link.failed()
            raise
        self.link.answered(response.status)
        return response

    async def probe(self, seconds: float) -> None:
        """Ask the homeserver for its versions (no login needed); the answer marks the link."""
        with contextlib.suppress(ClientError, TimeoutError):
            async with asyncio.timeout(seconds):
                response = await self.send("GET", "/_matrix/client/versions", timeout=seconds)
                response.release()
