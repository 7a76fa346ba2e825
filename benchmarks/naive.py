"""The naive way, as a reference: Google's quickstart pattern inside an async chat handler.

Most Gmail bots call the synchronous client library right in the handler: build the service and
``execute()`` the send, blocking the event loop for the whole round trip. Every other user's
command waits behind it.
"""

from __future__ import annotations

import base64
from email.message import EmailMessage

import httplib2
from googleapiclient.discovery import build


class NaiveBot:
    """A chat handler that sends through Gmail synchronously, as the quickstart does."""

    def __init__(self, api_endpoint: str, tokens: dict[str, str]) -> None:
        self._api_endpoint = api_endpoint
        self._tokens = tokens  # user -> access token

    async def handle(self, user: str, to: str, subject: str, body: str) -> str:
        """Compose and send in the handler itself; return the confirmation."""
        msg = EmailMessage()
        msg["To"] = to
        msg["Subject"] = subject
        msg.set_content(body)
        raw = base64.urlsafe_b64encode(msg.as_bytes()).decode()
        service = build(
            "gmail",
            "v1",
            http=httplib2.Http(),
            static_discovery=True,
            cache_discovery=False,
            client_options={"api_endpoint": self._api_endpoint},
        )
        request = service.users().messages().send(userId="me", body={"raw": raw})
        request.headers["authorization"] = f"Bearer {self._tokens[user]}"
        result = request.execute()  # blocks the event loop until Gmail answers
        return f"Sent {result['id']}"
