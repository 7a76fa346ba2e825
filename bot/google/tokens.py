"""Access tokens: the cache, refreshing, revoking, and the consent flow's code exchange.

Everything that talks to Google's token and revocation endpoints is here, as single form POSTs
on one aiohttp session on the event loop (no thread, no library). A refresh sends nothing, so
whatever did not give a token may be tried again; the answers that mean something else are
``invalid_grant`` (this link is dead) and ``invalid_client`` / ``unauthorized_client`` (the
operator's client id or secret is wrong: no retry helps).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from bot.backends import SendRefused
from bot.google.client import GoogleClient
from bot.google.token_endpoint import (
    CLIENT_ERRORS,
    EndpointDown,
    NotSent,
    OAuthRefused,
    basic_auth,
    post_form,
)
from bot.metrics import Metrics
from bot.store.accounts import Account, Accounts
from bot.store.link_health import LinkHealth

log = logging.getLogger(__name__)

TESTING_MODE_NOTE = (
    "If this bot's Google app is still in Testing mode, Google ends every link after 7 days."
)
CLIENT_REFUSED = (
    "Google refused this bot's own sign-in credentials (its Google setup is wrong, not your "
    "account), so nothing was sent; the bot's operator must fix it."
)
OPERATOR_FIX = (
    "Google's token endpoint refused this bot's OAuth client (%s): the client id or secret in "
    "[google] (or its client_secrets_file) does not match a client of Google Cloud Console > "
    "APIs & Services > Credentials; fix it and restart mailbridge. Every mail fails until then."
)


class LinkEnded(SendRefused):
    """Google no longer accepts the link (``invalid_grant``); it was removed."""

    def __init__(self, text: str, address: str) -> None:
        super().__init__(text)
        self.address = address


NOT_LINKED = "Your Gmail is not connected any more; send /connect to link it."


@dataclass(slots=True)
class _Token:
    value: str
    expires_at: float
    address: str
    link: float = 0.0  # the link it was got for (accounts.connected_at)


class Tokens:
    """Keep each user's access token until a minute before it expires; refresh, revoke."""

    backoff_base = 1.0  # seconds; doubled each time, with jitter
    max_retries = 3

    def __init__(
        self,
        client: GoogleClient,
        accounts: Accounts,
        timeout: float = 30.0,
        metrics: Metrics | None = None,
        health: LinkHealth | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._metrics = metrics or Metrics()
        self._health = health
        self._clock = clock
        self._client = client
        self._accounts = accounts
        self._auth = basic_auth(client.client_id, client.client_secret)
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(10.0, timeout))
        self._http: aiohttp.ClientSession | None = None
        self._cache: dict[str, _Token] = {}
        self._refreshing: dict[str, asyncio.Lock] = {}
        self._client_refused = False  # told the operator; again only after a success

    async def access_token(self, user_key: str) -> str:
        """Return a valid access token for ``user_key``; SendRefused says why there is none."""
        # Instances sharing the database: another may have unlinked or relinked this user
        # meanwhile, so the stored link decides whether the cached token is still its own.
        link = await self._accounts.get(user_key) if self._accounts.shared else None
        if self._accounts.shared and link is None:
            raise SendRefused(NOT_LINKED)
        cached = self._valid(user_key, link)
        if cached is not None:
            return cached.value
        async with self._refreshing.setdefault(user_key, asyncio.Lock()):
            cached = self._valid(user_key, link)
            if cached is not None:
                return cached.value
            account = await self._accounts.get(user_key)
            if account is None:
                raise SendRefused(NOT_LINKED)
            token = await self._refresh(account)
            self._cache[user_key] = token
            return token.value

    async def renew(self, account: Account) -> None:
        """Refresh ``account``'s access token once, cached or not, so Google says whether it
        still accepts the link; raise ``LinkEnded`` if not, ``SendRefused`` if it is unknown."""
        async with self._refreshing.setdefault(account.user_key, asyncio.Lock()):
            current = await self._accounts.get(account.user_key)
            if current is None or current.connected_at != account.connected_at:
                return  # ended or replaced meanwhile: nothing of this link to check
            # One request, no retry: the next check asks again, and the pace stays as set.
            self._cache[account.user_key] = await self._refresh(current, retries=0)

    async def record(self, account: Account, answer: dict[str, object]) -> None:
        """Note that Google accepted ``account``'s link now, and when it ends if it said."""
        if self._health is None:
            return
        now = self._clock()
        left = answer.get("refresh_token_expires_in")
        ends = now + float(left) if isinstance(left, int | float) and left > 0 else None
        await self._health.confirmed(account.user_key, account.connected_at, now, ends)

    def address(self, user_key: str) -> str | None:
        """Return the address of the cached token of ``user_key``, if any."""
        cached = self._cache.get(user_key)
        return cached.address if cached else None

    def cached(self, user_key: str) -> str | None:
        """Return the cached access token of ``user_key`` (benchmarks compare against it)."""
        cached = self._valid(user_key)
        return cached.value if cached else None

    def prime(
        self, user_key: str, address: str, access_token: str, expires_in: float, link: float = 0
    ) -> None:
        """Keep the access token the consent flow just got, so the first send needs no refresh
        (``link``: the new link's ``connected_at``)."""
        self._cache[user_key] = _Token(access_token, self._clock() + expires_in, address, link)

    def forget(self, user_key: str) -> None:
        """Drop the cached access token of ``user_key`` (Gmail said 401, or the link ended)."""
        self._cache.pop(user_key, None)

    async def revoke(self, refresh_token: str) -> bool:
        """Revoke a refresh token at Google (RFC 7009); return whether Google confirmed."""
        form = {"token": refresh_token, "token_type_hint": "refresh_token"}
        try:
            await post_form(
                self._session(), self._client.revoke_uri, form, self._auth, body_matters=False
            )
        except OAuthRefused as exc:
            log.warning("Google did not revoke a token: %s", exc)
            if exc.client_fault:
                self._alarm(exc.code)
            return False
        except EndpointDown as exc:
            log.warning("Google's revocation endpoint could not be reached (%s)", exc)
            return False
        return True

    async def exchange(self, code: str, verifier: str, redirect_uri: str) -> dict[str, object]:
        """Trade an authorization code for tokens (RFC 6749 4.1.3 with PKCE, RFC 7636 4.5).

        Raise ``OAuthRefused`` or ``EndpointDown``; a code is single use, so only a request
        that certainly never left is tried again."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        for attempt in range(1, self.max_retries + 2):
            try:
                answer = await post_form(self._session(), self._client.token_uri, form, self._auth)
            except NotSent:
                if attempt > self.max_retries:
                    raise
                await asyncio.sleep(self._backoff(attempt))
                continue
            except OAuthRefused as exc:
                if exc.client_fault:
                    self._alarm(exc.code)
                raise
            self._client_refused = False
            return answer
        raise AssertionError("unreachable")

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _valid(self, user_key: str, link: Account | None = None) -> _Token | None:
        cached = self._cache.get(user_key)
        if cached is not None and link is not None and cached.link != link.connected_at:
            return None  # got for a link replaced since (on another instance)
        # A minute early: a token that expires in flight gets a needless 401.
        return cached if cached and cached.expires_at - 60 > self._clock() else None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:  # made on the loop, at first use
            self._http = aiohttp.ClientSession(timeout=self._timeout)
        return self._http

    async def _refresh(self, account: Account, retries: int | None = None) -> _Token:
        form = {"grant_type": "refresh_token", "refresh_token": account.refresh_token}
        retries = self.max_retries if retries is None else retries
        for attempt in range(1, retries + 2):
            try:
                answer = await post_form(self._session(), self._client.token_uri, form, self._auth)
                value, expires_in = answer["access_token"], answer.get("expires_in", 3600)
                if not isinstance(value, str) or not isinstance(expires_in, int | float):
                    raise EndpointDown("not a token response")
            except (EndpointDown, KeyError) as exc:
                self._metrics.token_refresh("unreachable")
                if attempt > retries:
                    log.warning("refreshing an access token failed %d times (%s)", attempt, exc)
                    break
                await asyncio.sleep(self._backoff(attempt))
                continue
            except OAuthRefused as exc:
                known = exc.code in ("invalid_grant", *CLIENT_ERRORS)
                other = "invalid_client" if exc.client_fault else "refused"  # deleted_client
                self._metrics.token_refresh(exc.code if known else other)
                raise await self._refused(account, exc) from None
            self._metrics.token_refresh()
            self._client_refused = False
            rotated = answer.get("refresh_token")
            # RFC 6749 section 6: a new refresh token replaces the old one, which may be dead
            # already; keep it before the access token is used.
            if isinstance(rotated, str) and rotated and rotated != account.refresh_token:
                await self._accounts.replace_refresh_token(account, rotated)
                log.info("Google rotated a refresh token; the new one is stored")
            await self.record(account, answer)
            expires_at = self._clock() + float(expires_in)
            return _Token(value, expires_at, account.address, account.connected_at)
        raise SendRefused(
            "Google's sign-in service could not be reached, so nothing was sent. Try again later."
        )

    async def _refused(self, account: Account, exc: OAuthRefused) -> SendRefused:
        if exc.code == "invalid_grant":
            self.forget(account.user_key)
            await self._accounts.delete(account.user_key)
            log.warning("a refresh token was refused (invalid_grant); link removed")
            return LinkEnded(
                f"Google no longer accepts the link to {account.address} (it was revoked, "
                "expired, or the password changed), so nothing was sent. Send /connect "
                f"to link it again. {TESTING_MODE_NOTE}",
                account.address,
            )
        if exc.client_fault:
            self._alarm(exc.code)
            return SendRefused(CLIENT_REFUSED)
        log.error("Google's token endpoint refused a refresh: %s", exc)
        return SendRefused(
            "Google's sign-in service refused to renew this bot's access, so nothing was sent. "
            "Try again later; if it keeps happening, tell the bot's operator."
        )

    def _alarm(self, code: str) -> None:
        if not self._client_refused:
            self._client_refused = True
            log.error(OPERATOR_FIX, code)

    def _backoff(self, attempt: int) -> float:
        return float(self.backoff_base * 2 ** (attempt - 1) * random.uniform(0.8, 1.2))
