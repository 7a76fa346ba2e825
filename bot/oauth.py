"""The consent flow: login links, the authorization URL, and finishing at the callback."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import secrets
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from google_auth_oauthlib.flow import Flow
from oauthlib.oauth2.rfc6749.errors import OAuth2Error

from bot.accounts import Accounts, PendingLogin
from bot.google import GMAIL_SEND, SCOPES, GoogleClient

log = logging.getLogger(__name__)
GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")


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
    """A finished login: whose it was, the Google address now linked, and the access token
    Google handed out with it (so the first send needs no refresh)."""

    login: PendingLogin
    address: str
    access_token: str = field(default="", repr=False)
    expires_in: float = 0.0


class OAuth:
    """Hands out login links and completes them."""

    def __init__(
        self, client: GoogleClient, public_url: str, accounts: Accounts, pool: Executor
    ) -> None:
        self.client = client
        self.public_url = public_url.rstrip("/")
        self.redirect_uri = f"{self.public_url}/oauth/callback"
        self._accounts = accounts
        self._pool = pool

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
        flow = self._flow(login.verifier)
        url, _ = flow.authorization_url(
            state=login.state,
            access_type="offline",
            prompt="consent",
            include_granted_scopes="true",
        )
        return str(url)

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
        code = query.get("code", "")
        try:
            token = await asyncio.get_running_loop().run_in_executor(
                self._pool, self._exchange, login.verifier, code
            )
        except (OAuth2Error, ValueError, OSError) as exc:
            log.warning("code exchange failed: %s", type(exc).__name__)
            raise LoginFailed(
                400,
                "Google did not confirm the login",
                "Google refused to complete this login, so nothing was linked. "
                "Send /connect to the bot for a new link.",
                "Gmail was not connected: Google refused to complete the login. "
                "Send /connect for a new link.",
                login,
            ) from None
        granted = _scopes(token.get("scope"))
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
        address = self._address(token.get("id_token"))
        refresh_token = token.get("refresh_token")
        if not address or not refresh_token:
            raise LoginFailed(
                502,
                "Google's answer was incomplete",
                "Google did not send what the bot needs, so nothing was linked. "
                "Send /connect to the bot to try again.",
                "Gmail was not connected: Google's answer was incomplete. Send /connect again.",
                login,
            )
        await self._accounts.save(login.user_key, address, str(refresh_token), tuple(granted))
        log.info("linked a Google account for a %s user", login.user_key.partition(":")[0])
        expires_in = token.get("expires_in")
        return Linked(
            login,
            address,
            str(token.get("access_token") or ""),
            float(expires_in) if isinstance(expires_in, int | float) else 0.0,
        )

    def _flow(self, verifier: str) -> Flow:
        return Flow.from_client_config(
            self.client.flow_config(self.redirect_uri),
            scopes=list(SCOPES),
            redirect_uri=self.redirect_uri,
            code_verifier=verifier,
            autogenerate_code_verifier=False,
        )

    def _exchange(self, verifier: str, code: str) -> dict[str, Any]:
        # Runs in the thread pool: requests-oauthlib is synchronous.
        flow = self._flow(verifier)
        try:
            token = flow.fetch_token(code=code)
        except Warning as w:
            # oauthlib raises a Warning when the granted scopes differ from those asked for
            # (Google expands "email" and lets users untick boxes); we check scopes ourselves.
            token = getattr(w, "token", None)
            if token is None:
                raise
        return dict(token)

    def _address(self, id_token: object) -> str | None:
        """Read the address from the ID token (it came from Google over TLS: check claims)."""
        if not isinstance(id_token, str) or id_token.count(".") != 2:
            return None
        payload = id_token.split(".")[1]
        try:
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (ValueError, binascii.Error):
            return None
        if (
            not isinstance(claims, dict)
            or claims.get("iss") not in GOOGLE_ISSUERS
            or claims.get("aud") != self.client.client_id
            or not isinstance(claims.get("exp"), int | float)
            or claims["exp"] < time.time() - 300
            or not isinstance(claims.get("email"), str)
        ):
            return None
        return str(claims["email"])


def _scopes(value: object) -> set[str]:
    if isinstance(value, str):
        return set(value.split())
    if isinstance(value, list | tuple):
        return {str(v) for v in value}
    return set()
