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
from typing import Literal
from urllib.parse import urlencode

from bot.google.client import GMAIL_SEND, SCOPES, GoogleClient
from bot.google.id_token import address_from
from bot.google.token_endpoint import EndpointDown, OAuthRefused
from bot.google.tokens import Tokens
from bot.store.accounts import Account, Accounts, PendingLogin

log = logging.getLogger(__name__)


# Why a login did not link an account; web.py shows each as a page, wording.py tells the chat.
LoginReason = Literal[
    "unknown", "used", "expired", "declined", "not_allowed", "incomplete", "broken_client",
    "refused", "unreachable",
]  # fmt: skip


class LoginFailed(Exception):
    """The callback could not link an account, for ``reason`` (``error``: Google's error=)."""

    def __init__(
        self, reason: LoginReason, login: PendingLogin | None = None, error: str = ""
    ) -> None:
        super().__init__(reason)
        self.reason: LoginReason = reason
        self.login = login
        self.error = error


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
            raise LoginFailed("unknown")
        if login.used:
            raise LoginFailed("used", login)
        if login.expires_at < time.time():
            raise LoginFailed("expired", login)
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
            raise LoginFailed("used", login)
        if query.get("error"):  # whatever the browser brought: a 4xx
            raise LoginFailed("declined", login, query["error"])
        token = await self._exchange(login, query.get("code", ""))
        # RFC 6749 5.1: scope may be left out when it is what was asked for.
        granted = _scopes(token["scope"]) if "scope" in token else set(SCOPES)
        if GMAIL_SEND not in granted:
            raise LoginFailed("not_allowed", login)
        address = address_from(token.get("id_token"), self.client.client_id)
        refresh_token, access_token = token.get("refresh_token"), token.get("access_token")
        if not address or not isinstance(refresh_token, str) or not refresh_token:
            raise LoginFailed("incomplete", login)
        # The link is the person's: the chat account may be joined with another network's.
        owner = await self._accounts.owner(login.user_key)
        old = await self._accounts.get(owner)
        granted_scopes = tuple(sorted(granted))
        await self._accounts.save(owner, address, refresh_token, granted_scopes, login.user_key)
        log.info("linked a Google account for a %s user", login.user_key.partition(":")[0])
        account = await self._accounts.get(owner)
        if account is not None:  # its health starts now, with its end if Google said
            await self._tokens.record(account, token)
        expires_in = token.get("expires_in")
        if isinstance(access_token, str) and isinstance(expires_in, int | float):
            link = account.connected_at if account is not None else 0.0
            self._tokens.prime(owner, address, access_token, float(expires_in), link)
        else:
            self._tokens.forget(owner)
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

    async def revoke(self, account: Account) -> bool:
        """Revoke ``account``'s token at Google (a link retired by a join); return whether
        Google confirmed it."""
        revoked = await self._tokens.revoke(account.refresh_token)
        if not revoked:
            log.warning("a link retired by a join was not revoked at Google")
        return revoked

    def forget(self, user_key: str) -> None:
        """Drop the cached access token of ``user_key`` (its link moved to another person)."""
        self._tokens.forget(user_key)

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
                raise LoginFailed("broken_client", login) from None
            raise LoginFailed("refused", login) from None
        except EndpointDown as exc:
            log.warning("code exchange failed: %s", exc)
            raise LoginFailed("unreachable", login) from None


def _scopes(value: object) -> set[str]:
    if isinstance(value, str):
        return set(value.split())
    if isinstance(value, list | tuple):
        return {str(v) for v in value}
    return set()
