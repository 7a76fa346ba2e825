"""python-telegram-bot's HTTP layer, counting each Bot API request on the adapter's link."""

from __future__ import annotations

from typing import Any

from telegram.error import NetworkError
from telegram.request import HTTPXRequest

from adapters.link import Link


class LinkedRequest(HTTPXRequest):
    """An ``HTTPXRequest`` that tells ``link`` how each request went."""

    def __init__(self, link: Link, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._link = link

    async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        """Send one request (see ``BaseRequest.do_request``) and record its answer."""
        try:
            status, payload = await super().do_request(*args, **kwargs)
        except NetworkError:  # PTB's name for no answer: connection refused, reset, timeout
            self._link.failed()
            raise
        self._link.answered(status)
        return status, payload
