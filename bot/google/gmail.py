"""The Gmail backend: sends through the Gmail API as each connected user.

Each send is built by Google's client library and exchanged on the event loop
(``bot.google.gmail_send``), with no retries inside a library (a blind retry of a send can send
twice).
Retries happen here, and only where Google certainly did not process the request. Access tokens
come from ``bot.google.tokens``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random

from googleapiclient.errors import HttpError

from bot.addresses import EmailAddress
from bot.backends import Receipt, SendRefused, SendUnknown
from bot.errors import NotConnectedError
from bot.google.client import GoogleClient
from bot.google.gmail_send import GmailSender, MaybeSent, NotSent
from bot.google.tokens import Tokens
from bot.store.accounts import Accounts

log = logging.getLogger(__name__)

RATE_LIMIT_REASONS = {"rateLimitExceeded", "userRateLimitExceeded"}
DAILY_LIMIT_REASONS = {"dailyLimitExceeded", "quotaExceeded"}


class GmailBackend:
    """Send mail through ``users.messages.send`` with each user's own Google account."""

    name = "gmail"
    backoff_base = 1.0  # seconds; doubled each time, with jitter
    max_rate_retries = 5
    max_connect_retries = 3

    def __init__(
        self,
        client: GoogleClient,
        accounts: Accounts,
        tokens: Tokens,
        timeout: float = 30.0,
    ) -> None:
        self._client = client
        self._accounts = accounts
        self._sender = GmailSender(client.api_endpoint, timeout)
        self._tokens = tokens

    async def sender(self, user_key: str) -> EmailAddress:
        """Return the connected address, or explain how to connect."""
        address = await self._accounts.address(user_key)  # its token stays sealed
        if address is None:
            raise NotConnectedError(
                "Your Gmail is not connected yet. Send /connect in a direct chat with me "
                "to link it (once)."
            )
        local, _, domain = address.rpartition("@")
        return EmailAddress(local, domain)

    async def prepare(self, user_key: str) -> None:
        """Have a fresh access token before the mail is marked as leaving."""
        await self._tokens.access_token(user_key)

    async def send(self, user_key: str, raw: bytes) -> Receipt:
        """Send ``raw`` as ``user_key``; retry only what Google certainly did not process."""
        rate_retries = connect_retries = 0
        refreshed = False
        while True:
            token = await self._tokens.access_token(user_key)
            try:
                result = await self._sender.send(token, raw)
            except NotSent:
                connect_retries += 1
                if connect_retries > self.max_connect_retries:
                    raise SendRefused(
                        "Gmail could not be reached, so nothing was sent. Try again later."
                    ) from None
                await asyncio.sleep(self._backoff(connect_retries))
                continue
            except MaybeSent as exc:
                log.warning("the connection to Gmail broke mid-send (%s)", exc)
                raise SendUnknown("The connection to Gmail broke before it answered") from None
            except HttpError as exc:
                status, reasons, message = _error_details(exc)
                if status == 401 and not refreshed:
                    refreshed = True
                    self._tokens.forget(user_key)
                    continue
                if status == 429 or (status == 403 and reasons & RATE_LIMIT_REASONS):
                    rate_retries += 1
                    if rate_retries > self.max_rate_retries:
                        raise SendRefused(
                            "Gmail is limiting how fast your account may send; nothing was "
                            "sent. Wait a few minutes and try again."
                        ) from None
                    await asyncio.sleep(max(_retry_after(exc), self._backoff(rate_retries)))
                    continue
                raise _refusal(status, reasons, message) from None
            address = self._tokens.address(user_key) or "Gmail"
            return Receipt(str(result.get("id", "")), f"sent from {address}")

    async def close(self) -> None:
        """Close the connections to Gmail and to Google's token endpoint."""
        await self._sender.close()
        await self._tokens.close()

    def _backoff(self, attempt: int) -> float:
        return float(self.backoff_base * 2 ** (attempt - 1) * random.uniform(0.8, 1.2))


def _error_details(exc: HttpError) -> tuple[int, set[str], str]:
    status = int(exc.resp.status)
    reasons: set[str] = set()
    message = ""
    try:
        error = json.loads(exc.content.decode("utf-8"))["error"]
        message = str(error.get("message", ""))
        reasons = {str(e.get("reason")) for e in error.get("errors", []) if isinstance(e, dict)}
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return status, reasons, message


def _retry_after(exc: HttpError) -> float:
    try:
        return min(float(exc.resp.get("retry-after", 0)), 300.0)
    except (TypeError, ValueError):
        return 0.0


def _refusal(status: int, reasons: set[str], message: str) -> SendRefused | SendUnknown:
    if status >= 500:
        return SendUnknown(f"Gmail answered with an error of its own ({status})")
    if reasons & DAILY_LIMIT_REASONS:
        return SendRefused(
            "Your Gmail account has reached its daily sending limit; nothing was sent. "
            "Try again tomorrow."
        )
    if status == 401:
        return SendRefused(
            "Google did not accept this bot's access to your Gmail; nothing was sent. "
            "Send /connect to link it again."
        )
    if status == 403:
        return SendRefused(
            "Google says this bot may not send mail for you; nothing was sent. Send /connect "
            "and tick 'Send email on your behalf' on Google's consent screen."
        )
    shown = f": {message}" if message else ""
    return SendRefused(f"Gmail refused the message{shown}.")
