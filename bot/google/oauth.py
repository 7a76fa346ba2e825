"""The consent flow: login links, the authorization URL, and finishing at the callback.

The authorization request is a URL (RFC 6749 4.1.1 with PKCE S256, RFC 7636 4.3); the code
exchange goes through ``bot.google.tokens``, as one form POST on the event loop.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from bot.google.client import GMAIL_SEND, SCOPES, GoogleClient
from bot.google.id_token import address_from
from bot.google.token_endpoint import EndpointDown, OAuthRefused
from bot.google.tokens import Tokens
from bot.store.accounts import Account, Accounts, PendingLogin

log = logging.getLogger(__name__)


class LoginFailed(Exception):
    """The callback could not link an account: an HTTP status, a page, and a chat message."""

    def __init__(
        self, status: int, title: str, page: str, chat: str, login: PendingLogin | None = None
    ) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.page = page
        self.chat = chat
        self.login = login


@dataclass(frozen=True, slots=True)
class Linked:
    """A finished login: whose it was, and the Google address now linked."""

    login: PendingLogin
    address: str


class OAuth:
    """Hands out login links and completes them."""

    def __init__(
        self, client: GoogleClient, public_url: str, accounts: Accounts, tokens: Tokens
    ) -> None:
        self.client = client
        self.public_url = public_url.rstrip("/")
        self.redirect_uri = f"{self.public_url}/oauth/callback"
        self._accounts = accounts
        self._tokens = tokens

    async def new_link(self, user_key: str, display_name: str, room: str) -> str:
        """Store a pending login and return the link to our connect page."""
        verifier = secrets.token_urlsafe(64)  # PKCE: 86 characters of 43..128 allowed
        login = await self._accounts.new_login(user_key, display_name, room, verifier)
        return f"{self.public_url}/connect/{login.state}"

    async def check_link(self, state: str) -> PendingLogin:
        """Return the pending login for a connect page, or raise LoginFailed."""
        login = await self._accounts.find_login(state)
        if login is None:
            raise LoginFailed(
                404,
                "This link is not valid",
                "This login link is unknown. Send /connect to the bot for a new one.",
                "",
            )
        if login.used:
            raise LoginFailed(
                409,
                "This link was already used",
                "Each login link works once. Send /connect to the bot for a new one.",
                "",
                login,
            )
        if login.expires_at < time.time():
            raise LoginFailed(
                410,
                "This link has expired",
                "Login links work for 10 minutes. Send /connect to the bot for a new one.",
                "",
                login,
            )
        return login

    def authorization_url(self, login: PendingLogin) -> str:
        """Return Google's consent URL for ``login`` (PKCE S256, offline, same state)."""
        digest = hashlib.sha256(login.verifier.encode("ascii")).digest()
        query = {
            "response_type": "code",
            "client_id": self.client.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": " ".join(SCOPES),
            "state": login.state,
            "code_challenge": base64.urlsafe_b64encode(digest).decode().rstrip("="),
            "code_challenge_method": "S256",
            "access_type": "offline",  # Google's: give a refresh token
            "prompt": "consent",  # Google's: a refresh token every time, not only the first
            "include_granted_scopes": "true",
        }
        return f"{self.client.auth_uri}?{urlencode(query)}"

    async def finish(self, query: Mapping[str, str]) -> Linked:
        """Complete the callback: consume the state, exchange the code, check and store."""
        state = query.get("state", "")
        login = await self.check_link(state)
        if not await self._accounts.consume_login(state):  # lost a race with another callback
            raise LoginFailed(
                409,
                "This link was already used",
                "Each login link works once. Send /connect to the bot for a new one.",
                "",
                login,
            )
        if query.get("error"):
            why = (
                "you did not allow access on Google's page"
                if query["error"] == "access_denied"
                else "Google reported an error"
            )
            raise LoginFailed(  # the error= parameter is whatever the browser brought: a 4xx
                400,
                "Gmail was not connected",
                f"Nothing was linked: {why}. Send /connect to the bot to try again.",
                f"Gmail was not connected: {why}. Send /connect to try again.",
                login,
            )
        token = await self._exchange(login, query.get("code", ""))
        # RFC 6749 5.1: scope may be left out when it is what was asked for.
        granted = _scopes(token["scope"]) if "scope" in token else set(SCOPES)
        if GMAIL_SEND not in granted:
            raise LoginFailed(
                403,
                "Sending was not allowed",
                "On Google's page the box 'Send email on your behalf' was not ticked, so this "
                "bot could not send mail for you and nothing was linked. Send /connect to the "
                "bot and tick that box.",
                "Gmail was not connected: the box 'Send email on your behalf' was not ticked on "
                "Google's page. Send /connect and tick it.",
                login,
            )
        address = address_from(token.get("id_token"), self.client.client_id)
        refresh_token, access_token = token.get("refresh_token"), token.get("access_token")
        if not address or not isinstance(refresh_token, str) or not refresh_token:
            raise LoginFailed(
                502,
                "Google's answer was incomplete",
                "Google did not send what the bot needs, so nothing was linked. "
                "Send /connect to the bot to try again.",
                "Gmail was not connected: Google's answer was incomplete. Send /connect again.",
                login,
            )
        old = await self._accounts.get(login.user_key)
        await self._accounts.save(login.user_key, address, refresh_token, tuple(sorted(granted)))
        log.info("linked a Google account for a %s user", login.user_key.partition(":")[0])
        expires_in = token.get("expires_in")
        if isinstance(access_token, str) and isinstance(expires_in, int | float):
            self._tokens.prime(login.user_key, address, access_token, float(expires_in))
        else:
            self._tokens.forget(login.user_key)
        if old is not None:
            await self._retire(old, address)
        return Linked(login, address)

    async def unlink(self, account: Account) -> bool:
        """Revoke ``account``'s token at Google and forget the link; return whether Google
        confirmed the revocation."""
        revoked = await self._tokens.revoke(account.refresh_token)
        await self._accounts.delete(account.user_key)
        self._tokens.forget(account.user_key)
        return revoked

    async def _retire(self, old: Account, address: str) -> None:
        """Revoke the refresh token a reconnect replaced, now that the new one is stored.

        Google ends an app's whole grant for an account at any revocation: if the same account
        connected again, revoking its old token would end the new link too, so it is left to
        lapse (Google drops a user's oldest tokens beyond its per-client limit)."""
        if old.address.lower() == address.lower():
            return
        if not await self._tokens.revoke(old.refresh_token):
            log.warning("the link a reconnect replaced was not revoked at Google")

    async def _exchange(self, login: PendingLogin, code: str) -> dict[str, object]:
        try:
            return await self._tokens.exchange(code, login.verifier, self.redirect_uri)
        except OAuthRefused as exc:
            log.warning("code exchange refused: %s", exc)
            if exc.client_fault:
                raise LoginFailed(
                    502,
                    "The bot's Google setup is broken",
                    "Google refused this bot's own credentials, so nothing was linked; this is "
                    "not your account's fault. The bot's operator must fix its Google setup.",
                    "Gmail was not connected: Google refused this bot's own credentials; the "
                    "bot's operator must fix its Google setup.",
                    login,
                ) from None
            raise LoginFailed(
                400,
                "Google did not confirm the login",
                "Google refused to complete this login, so nothing was linked. "
                "Send /connect to the bot for a new link.",
                "Gmail was not connected: Google refused to complete the login. "
                "Send /connect for a new link.",
                login,
            ) from None
        except EndpointDown as exc:
            log.warning("code exchange failed: %s", exc)
            raise LoginFailed(
                502,
                "Google could not be reached",
                "Google's sign-in service did not answer, so nothing was linked. "
                "Send /connect to the bot for a new link and try again.",
                "Gmail was not connected: Google's sign-in service did not answer. "
                "Send /connect for a new link.",
                login,
            ) from None


def _scopes(value: object) -> set[str]:
    if isinstance(value, str):
        return set(value.split())
    if isinstance(value, list | tuple):
        return {str(v) for v in value}
    return set()
