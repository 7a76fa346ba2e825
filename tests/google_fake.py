"""A fake of Google's OAuth 2.0 endpoints and Gmail's ``users.messages.send``, on 127.0.0.1.

It speaks the documented wire formats, so the real client libraries (google-auth-oauthlib for the
authorization URL and code exchange, google-auth for refreshes, google-api-python-client for
sends: simple and media uploads, the two mailbridge makes; it refuses multipart and resumable
ones, which mailbridge avoids) work against it unchanged, only pointed at its URLs.
Where Google is laxer than the standard, it keeps the standard: the token and revocation
endpoints require client authentication by HTTP Basic (RFC 6749 2.3.1, RFC 7009 2.1; the secret
in the body only when ``client_secret_post`` is set), and revoking an unknown token is a 200
(RFC 7009 2.2). It can rotate refresh tokens, leave out ``scope`` and refuse the client.
Test controls: which account logs in, what the user does on the consent page, token lifetimes,
revocations and faults to inject. ``python -m tests.google_fake --port N`` runs it on its own, with
a small JSON control API under ``/_fake/``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import signal
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage, Message
from html import escape
from typing import Any, Literal, NoReturn
from urllib.parse import unquote_plus, urlencode

import pytest
from aiohttp import web

OPENID = "openid"
EMAIL_SCOPE = "https://www.googleapis.com/auth/userinfo.email"
PROFILE_SCOPE = "https://www.googleapis.com/auth/userinfo.profile"
GMAIL_SEND = "https://www.googleapis.com/auth/gmail.send"
MAX_MESSAGE = 35 * 1024 * 1024  # Gmail's limit on a message as sent
SEND_PATH = "/gmail/v1/users/me/messages/send"
UPLOAD_PATH = "/upload" + SEND_PATH

_ALIASES = {"email": EMAIL_SCOPE, "profile": PROFILE_SCOPE}
_SIGN_IN = (OPENID, EMAIL_SCOPE, PROFILE_SCOPE)  # come with the account: no checkbox
_SCOPE_TEXT = {
    OPENID: "Associate you with your personal info on Google",
    EMAIL_SCOPE: "See your primary Google Account email address",
    PROFILE_SCOPE: "See your personal info, including any you've made publicly available",
    GMAIL_SEND: "Send email on your behalf",
}
_UNAUTHENTICATED = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
    "or other valid authentication credential. "
    "See https://developers.google.com/identity/sign-in/web/devconsole-project."
)
# status: (message, default errors[].reason, status name) as Gmail answers them
_GMAIL_ERRORS: dict[int, tuple[str, str, str]] = {
    400: ("Bad Request", "badRequest", "INVALID_ARGUMENT"),
    401: (_UNAUTHENTICATED, "authError", "UNAUTHENTICATED"),
    403: ("Request had insufficient authentication scopes.", "forbidden", "PERMISSION_DENIED"),
    429: ("User-rate limit exceeded.", "rateLimitExceeded", "RESOURCE_EXHAUSTED"),
    500: ("Backend Error", "backendError", "INTERNAL"),
    503: ("The service is currently unavailable.", "backendError", "UNAVAILABLE"),
}
_LIMIT_MESSAGES = {
    "rateLimitExceeded": "Rate Limit Exceeded",
    "userRateLimitExceeded": "User Rate Limit Exceeded",
    "dailyLimitExceeded": "Daily Limit Exceeded",
    "quotaExceeded": "Quota exceeded",
}
_SETTABLE = {
    "auto_consent",
    "next_account",
    "gmail_latency",
    "access_token_lifetime",
    "idle_timeout",
    "client_secret_post",
    "rotate_refresh_tokens",
    "omit_scope",
    "refuse_client",
    "refresh_token_expires_in",
}


@dataclass(frozen=True)
class Fault:
    """One injected answer: an HTTP error, a slow answer, or a dropped connection.

    ``drop="before"``: the request is read, then the connection closes and nothing is sent;
    ``drop="after"``: Google takes the mail, then the connection closes without an answer.
    """

    status: int | None = None
    reason: str | None = None  # errors[].reason, e.g. "rateLimitExceeded"
    retry_after: float | None = None  # seconds, sent as the Retry-After header
    delay: float = 0.0  # seconds before answering (after taking the mail)
    drop: Literal["before", "after"] | None = None
    message: str | None = None

    @classmethod
    def too_many_requests(cls, retry_after: float | None = None) -> Fault:
        return cls(429, "rateLimitExceeded", retry_after)

    @classmethod
    def limit(cls, reason: str = "rateLimitExceeded", retry_after: float | None = None) -> Fault:
        """A 403 usage limit: rateLimitExceeded, userRateLimitExceeded or dailyLimitExceeded."""
        return cls(403, reason, retry_after)

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        return cls(delay=seconds)

    @classmethod
    def dropped(cls, when: Literal["before", "after"] = "after") -> Fault:
        return cls(drop=when)

    @classmethod
    def parse(cls, item: Fault | int | dict[str, Any]) -> Fault:
        """A fault from a status code or a JSON object of the fields (for the control API)."""
        if isinstance(item, Fault):
            return item
        return cls(status=item) if isinstance(item, int) else cls(**item)


TokenFault = Fault | int | str  # str: an OAuth error code such as "invalid_grant"


@dataclass
class SentMail:
    """A message Gmail accepted (or took before the connection dropped)."""

    account: str
    raw: bytes  # as the client sent it
    message: EmailMessage  # as recipients get it: From is the account, no Bcc header
    to: list[str]
    cc: list[str]
    bcc: list[str]
    subject: str
    id: str

    @property
    def thread_id(self) -> str:
        return self.id

    @property
    def sender(self) -> str:
        return _addresses(self.message, "From")[0]

    def text(self) -> str:
        body = self.message.get_body(("plain",))
        assert body is not None
        return str(body.get_content()).replace("\r\n", "\n").removesuffix("\n")

    def as_json(self) -> dict[str, Any]:
        fields = ("account", "to", "cc", "bcc", "subject", "id")
        return {k: getattr(self, k) for k in fields} | {"raw": _b64(self.raw), "from": self.sender}


@dataclass
class _Grant:
    account: str
    scopes: list[str]
    refresh_token: str
    revoked: bool = False
    ends_at: float | None = None  # time-based access: Google ends the grant then


@dataclass
class _Code:
    account: str
    scopes: list[str]
    asked: list[str]
    redirect_uri: str
    challenge: str
    expires_at: float
    used: bool = False


@dataclass
class _Access:
    grant: _Grant
    scopes: list[str]  # a refresh may narrow them
    expires_at: float


@dataclass
class GoogleFake:
    """Google's consent screen, token and revoke endpoints and Gmail send, for tests."""

    client_id: str = "1234-fake.apps.googleusercontent.com"
    client_secret: str = "fake-client-secret"
    app_name: str = "mailbridge"
    next_account: str = "alice@gmail.com"  # who is signed in at the consent screen
    auto_consent: Literal["allow", "deny", "untick"] | None = None  # None: show the page
    access_token_lifetime: int = 3599
    gmail_latency: float = 0.0
    # Seconds a kept-alive connection may sit idle; a request on one idle longer is reset
    # unanswered (None: kept as long as aiohttp's server keeps it).
    idle_timeout: float | None = None
    idle_resets: int = 0  # requests reset that way
    gmail_faults: list[Fault | int] = field(default_factory=list)  # one per Gmail request
    token_faults: list[TokenFault] = field(default_factory=list)  # one per token request
    sent: list[SentMail] = field(default_factory=list)
    auth_requests: list[dict[str, str]] = field(default_factory=list)  # query parameters
    token_requests: list[str] = field(default_factory=list)  # grant types, in order
    token_request_times: list[float] = field(default_factory=list)  # time.monotonic() of each
    gmail_requests: int = 0
    revoked: list[str] = field(default_factory=list)  # accounts revoked over HTTP
    revoked_tokens: list[str] = field(default_factory=list)  # refresh tokens ended over HTTP
    # RFC 6749 2.3.1: HTTP Basic MUST be supported; the secret in the body MAY be (Google does,
    # and google-auth sends it so on refresh). Off: only Basic is accepted.
    client_secret_post: bool = False
    rotate_refresh_tokens: bool = False  # RFC 6749 6: a new refresh token at every refresh
    omit_scope: bool = False  # RFC 6749 5.1: no "scope" when it is what was asked for
    # The client was deleted or its secret rotated ("invalid_client"), or it may not use the
    # grant ("unauthorized_client"): RFC 6749 5.2.
    refuse_client: Literal["invalid_client", "unauthorized_client"] | None = None
    # Seconds a new grant lives, as when the user grants time-based access: Google then sends
    # the remaining lifetime as refresh_token_expires_in and ends the grant after it (None: a
    # grant lives until revoked).
    refresh_token_expires_in: int | None = None
    clock: Callable[[], float] = time.time  # the time grants end by (a test may move it)
    port: int = 0

    def __post_init__(self) -> None:
        self.accounts: set[str] = {self.next_account}
        self.redirect_uris: list[str] = []  # empty: any redirect URI is accepted
        self._consented: dict[str, list[str]] = {}  # account: scopes granted so far
        self._codes: dict[str, _Code] = {}
        self._pending: dict[str, tuple[dict[str, str], str]] = {}
        self._grants: dict[str, _Grant] = {}  # by refresh token
        self._access: dict[str, _Access] = {}  # by access token
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()
        self.requested = asyncio.Event()  # set by every Gmail request
        self._last_used: weakref.WeakKeyDictionary[object, float] = weakref.WeakKeyDictionary()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> GoogleFake:
        """Listen on 127.0.0.1 (a free port unless ``port`` was set)."""
        app = web.Application(client_max_size=2 * MAX_MESSAGE, middlewares=[self._idle])
        app.router.add_get("/o/oauth2/auth", self._authorize)
        app.router.add_post("/o/oauth2/decide", self._decide)
        app.router.add_post("/token", self._token)
        app.router.add_post("/revoke", self._revoke)
        app.router.add_post(SEND_PATH, self._send)
        app.router.add_post(UPLOAD_PATH, self._send)
        app.router.add_get("/_fake/state", self._state)
        app.router.add_get("/_fake/sent", self._sent)
        app.router.add_post("/_fake/control", self._control)
        self._runner = web.AppRunner(app, access_log=None)  # URLs may carry tokens
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> GoogleFake:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth_uri(self) -> str:
        return f"{self.base_url}/o/oauth2/auth"

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    @property
    def revoke_uri(self) -> str:
        return f"{self.base_url}/revoke"

    @property
    def api_endpoint(self) -> str:
        """For ``client_options={"api_endpoint": ...}``: the root that Gmail paths follow."""
        return self.base_url

    def client_secrets_json(self, redirect_uris: list[str] | None = None) -> dict[str, Any]:
        """The JSON Google Cloud Console downloads for a "Web application" client."""
        if redirect_uris is not None:
            self.redirect_uris = list(redirect_uris)
        return {
            "web": {
                "client_id": self.client_id,
                "project_id": "mailbridge-test",
                "auth_uri": self.auth_uri,
                "token_uri": self.token_uri,
                "auth_provider_x509_cert_url": f"{self.base_url}/oauth2/v1/certs",
                "client_secret": self.client_secret,
                "redirect_uris": self.redirect_uris,
            }
        }

    # -- test controls -----------------------------------------------------------------------

    def add_account(self, email: str) -> None:
        """Make ``email`` a known Google account (the consent screen adds its user too)."""
        self.accounts.add(email)

    def revoke_all(self, email: str) -> None:
        """The user removed the app's access (or changed their password)."""
        self._consented.pop(email, None)
        for grant in self._grants.values():
            if grant.account == email:
                grant.revoked = True

    def grant(self, email: str) -> str:
        """Issue a refresh token for ``email`` as a finished consent would; return it (for
        tests that need many links without a browser each)."""
        self.add_account(email)
        grant = _Grant(
            email, [OPENID, EMAIL_SCOPE, GMAIL_SEND], "1//0g" + secrets.token_urlsafe(70)
        )
        self._grants[grant.refresh_token] = grant
        return grant.refresh_token

    def revoke_refresh_token(self, refresh_token: str) -> None:
        """End one grant, as Google does after 6 months unused or 7 days in Testing mode."""
        self._grants[refresh_token].revoked = True

    def expire_access_tokens(self) -> None:
        """Make every access token issued so far expired (Gmail then answers 401)."""
        for access in self._access.values():
            access.expires_at = 0.0

    async def wait_for_mail(self, count: int = 1, timeout: float = 15.0) -> list[SentMail]:
        """Wait until at least ``count`` mails were taken; return them all."""
        async with asyncio.timeout(timeout):
            while len(self.sent) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.sent

    def state(self) -> dict[str, Any]:
        """What an out-of-process test needs to see (no tokens)."""
        return {
            "base_url": self.base_url,
            "client_secrets": self.client_secrets_json(),
            "sent": [m.as_json() for m in self.sent],
            "gmail_requests": self.gmail_requests,
            "idle_resets": self.idle_resets,
            "token_requests": self.token_requests,
            "auth_requests": len(self.auth_requests),
            "revoked": self.revoked,
            "revoked_tokens": len(self.revoked_tokens),
        }

    @web.middleware
    async def _idle(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Reset a request that comes on a connection idle longer than ``idle_timeout``.

        A server or a middlebox may close an idle connection at any time (RFC 9112 section
        9.6); when its close crosses the client's next request, or a NAT forgot the idle flow,
        that request meets a reset and gets no answer. It is modelled here at its worst: the
        close never reaches the client before the request does. The request is not processed,
        but the client cannot know that, and must not resend a POST by itself (RFC 9112
        section 9.3.1; RFC 9110 section 9.2.2)."""
        transport = request.transport
        last = self._last_used.get(transport) if transport is not None else None
        idle = self.idle_timeout
        if (
            idle is not None
            and last is not None
            and time.monotonic() - last > idle
            and not request.path.startswith("/_fake/")
        ):
            self.idle_resets += 1
            return _drop(request)
        try:
            return await handler(request)
        finally:
            if transport is not None:
                self._last_used[transport] = time.monotonic()

    # -- OAuth: consent ----------------------------------------------------------------------

    async def _authorize(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        self.auth_requests.append(q)
        if q.get("client_id") != self.client_id:
            return _error_page(401, "invalid_client", "The OAuth client was not found.")
        redirect = q.get("redirect_uri", "")
        if not redirect or (self.redirect_uris and redirect not in self.redirect_uris):
            return _error_page(400, "redirect_uri_mismatch", "The redirect URI is not registered.")
        problems = [
            name
            for name, ok in [
                ("response_type", q.get("response_type") == "code"),
                ("scope", bool(q.get("scope"))),
                ("state", bool(q.get("state"))),
                ("code_challenge", bool(q.get("code_challenge"))),
                ("code_challenge_method", q.get("code_challenge_method") == "S256"),
            ]
            if not ok
        ]
        if problems:
            return _error_page(400, "invalid_request", f"Missing or bad: {', '.join(problems)}")
        account = self.next_account
        self.accounts.add(account)
        asked = _scopes(q["scope"])
        if self.auto_consent is not None:
            ticked = [] if self.auto_consent == "untick" else asked
            self._answer(q, account, self.auto_consent != "deny", ticked)
        request_id = secrets.token_urlsafe(12)
        self._pending[request_id] = (q, account)
        items = "".join(
            f"<li>{escape(_SCOPE_TEXT.get(s, s))}</li>"
            if s in _SIGN_IN
            else f'<li><label><input type="checkbox" name="scope" value="{escape(s)}" checked> '
            f"{escape(_SCOPE_TEXT.get(s, s))}</label></li>"
            for s in asked
        )
        page = (
            '<!doctype html><meta charset="utf-8"><title>Sign in - Google Accounts</title>'
            f"<h1>{escape(account)}</h1>"
            f"<p>{escape(self.app_name)} wants access to your Google Account</p>"
            '<form method="post" action="/o/oauth2/decide">'
            f'<input type="hidden" name="request" value="{request_id}"><ul>{items}</ul>'
            '<button name="decision" value="deny">Cancel</button> '
            '<button name="decision" value="allow">Continue</button></form>'
        )
        return web.Response(text=page, content_type="text/html")

    async def _decide(self, request: web.Request) -> web.Response:
        form = await request.post()
        pending = self._pending.pop(str(form.get("request", "")), None)
        if pending is None:
            return _error_page(400, "invalid_request", "This consent page has expired.")
        q, account = pending
        ticked = [str(v) for v in form.getall("scope", [])]
        self._answer(q, account, form.get("decision") == "allow", ticked)

    def _answer(
        self, q: dict[str, str], account: str, allowed: bool, ticked: list[str]
    ) -> NoReturn:
        """Redirect back to the app as Google does after the user's choice."""
        params = {"state": q["state"]}
        if not allowed:
            params["error"] = "access_denied"
            raise web.HTTPFound(f"{q['redirect_uri']}?{urlencode(params)}")
        # Sign-in scopes come with the account; the others only if their box stayed ticked.
        granted = [s for s in _scopes(q["scope"]) if s in _SIGN_IN or s in ticked]
        if q.get("include_granted_scopes") == "true":  # incremental authorization
            granted += [s for s in self._consented.get(account, []) if s not in granted]
        self._consented[account] = list(granted)
        code = "4/0A" + secrets.token_urlsafe(40)
        self._codes[code] = _Code(
            account,
            granted,
            _scopes(q["scope"]),
            q["redirect_uri"],
            q["code_challenge"],
            time.time() + 600,
        )
        params |= {"code": code, "scope": " ".join(granted), "authuser": "0", "prompt": "consent"}
        raise web.HTTPFound(f"{q['redirect_uri']}?{urlencode(params)}")

    # -- OAuth: tokens -----------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.StreamResponse:
        form = {k: str(v) for k, v in (await request.post()).items()}
        grant_type = form.get("grant_type", "")
        self.token_requests.append(grant_type)
        self.token_request_times.append(time.monotonic())
        if self.token_faults:
            answer = await _token_fault(request, self.token_faults.pop(0))
            if answer is not None:
                return answer
        refused = self._client_auth(request, form)
        if refused is not None:
            return refused
        if self.refuse_client == "unauthorized_client":
            return _oauth_error("unauthorized_client", "Unauthorized")
        if grant_type == "authorization_code":
            return self._exchange(form)
        if grant_type == "refresh_token":
            return self._refresh(form)
        return _oauth_error("unsupported_grant_type", f"Invalid grant_type: {grant_type}")

    def _client_auth(self, request: web.Request, form: dict[str, str]) -> web.Response | None:
        """Authenticate the client as RFC 6749 2.3.1 says; the refusal, or None."""
        header = request.headers.get("Authorization")
        if header is not None and "client_secret" in form:
            # RFC 6749 2.3: one method per request; 5.2 calls more than one invalid_request.
            text = "More than one client authentication method was used."
            return _oauth_error("invalid_request", text)
        if header is not None:
            scheme, _, credentials = header.partition(" ")
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode()
            except ValueError:
                decoded = ""
            client_id, colon, secret = decoded.partition(":")
            if scheme.lower() != "basic" or not colon:
                # RFC 6749 5.2: a failed Authorization header is a 401 with WWW-Authenticate.
                return _oauth_error("invalid_client", "Unauthorized", 401, basic=True)
            # Appendix B: the id and secret were form-encoded before they were joined.
            client_id, secret = unquote_plus(client_id), unquote_plus(secret)
        elif "client_secret" in form:
            if not self.client_secret_post:
                text = "client_secret_post is not accepted here: use HTTP Basic."
                return _oauth_error("invalid_client", text, 401)
            client_id, secret = form.get("client_id", ""), form["client_secret"]
        else:  # RFC 6749 5.2: "no client authentication included" is invalid_client
            return _oauth_error("invalid_client", "The OAuth client was not found.", 401)
        if form.get("client_id", client_id) != client_id or client_id != self.client_id:
            return _oauth_error("invalid_client", "The OAuth client was not found.", 401)
        if self.refuse_client == "invalid_client" or not hmac.compare_digest(
            secret.encode(), self.client_secret.encode()
        ):
            return _oauth_error("invalid_client", "Unauthorized", 401, basic=header is not None)
        return None

    def _refresh(self, form: dict[str, str]) -> web.Response:
        presented = form.get("refresh_token", "")
        grant = self._grants.get(presented)
        if grant is not None and grant.refresh_token != presented and not grant.revoked:
            # A rotated-out token came back: OAuth 2.0 Security BCP (RFC 9700) 4.14.2 says
            # to end the grant, as one of two parties holding it is not the client.
            grant.revoked = True
        if grant is not None and grant.ends_at is not None and grant.ends_at <= self.clock():
            grant.revoked = True  # its time-based access is over
        if grant is None or grant.revoked:
            return _oauth_error("invalid_grant", "Token has been expired or revoked.")
        wanted = _scopes(form.get("scope", ""))
        invalid = [s for s in wanted if s not in grant.scopes]  # narrow, never widen
        if invalid:
            text = f"Some requested scopes were invalid. {{invalid=[{', '.join(invalid)}]}}"
            return _oauth_error("invalid_scope", text)
        rotate = self.rotate_refresh_tokens
        if rotate:  # RFC 6749 6: the client MUST discard the old token; it is dead here
            grant.refresh_token = "1//0g" + secrets.token_urlsafe(70)
            self._grants[grant.refresh_token] = grant
        # RFC 6749 6: an omitted scope means the scope originally granted.
        scopes = wanted or grant.scopes
        return web.json_response(self._tokens(grant, scopes, scopes, refresh=rotate))

    def _exchange(self, form: dict[str, str]) -> web.Response:
        code = self._codes.get(form.get("code", ""))
        if code is None:
            return _oauth_error("invalid_grant", "Malformed auth code.")
        if code.used or code.expires_at < time.time():
            return _oauth_error("invalid_grant", "Bad Request")
        code.used = True  # single use, even when the exchange below fails
        if form.get("redirect_uri") != code.redirect_uri:
            return _oauth_error("redirect_uri_mismatch", "Bad Request")
        verifier = form.get("code_verifier", "")
        challenge = _b64(hashlib.sha256(verifier.encode()).digest())
        if not verifier or not hmac.compare_digest(challenge, code.challenge):
            return _oauth_error("invalid_grant", "Invalid code verifier.")
        grant = _Grant(code.account, code.scopes, "1//0g" + secrets.token_urlsafe(70))
        if self.refresh_token_expires_in is not None:
            grant.ends_at = self.clock() + self.refresh_token_expires_in
        self._grants[grant.refresh_token] = grant
        return web.json_response(self._tokens(grant, grant.scopes, code.asked, refresh=True))

    def _tokens(
        self, grant: _Grant, scopes: list[str], asked: list[str], refresh: bool = False
    ) -> dict[str, Any]:
        token = "ya29.a0" + secrets.token_urlsafe(100)
        self._access[token] = _Access(grant, scopes, time.time() + self.access_token_lifetime)
        body: dict[str, Any] = {
            "access_token": token,
            "expires_in": self.access_token_lifetime,
            "scope": " ".join(scopes),
            "token_type": "Bearer",
        }
        if self.omit_scope and set(scopes) == set(asked):
            del body["scope"]  # RFC 6749 5.1: OPTIONAL if identical, else REQUIRED
        if refresh:
            body["refresh_token"] = grant.refresh_token
        if grant.ends_at is not None:  # the remaining lifetime of the refresh token
            body["refresh_token_expires_in"] = max(0, int(grant.ends_at - self.clock()))
        if OPENID in scopes:
            body["id_token"] = self._id_token(grant.account)
        return body

    def _id_token(self, account: str) -> str:
        now = int(time.time())
        claims = {
            "iss": "https://accounts.google.com",
            "azp": self.client_id,
            "aud": self.client_id,
            "sub": str(int(hashlib.sha256(account.encode()).hexdigest()[:15], 16)),
            "email": account,
            "email_verified": True,
            "iat": now,
            "exp": now + 3600,
        }
        header = {"alg": "RS256", "kid": "fake-key-1", "typ": "JWT"}
        parts = [_b64(json.dumps(p, separators=(",", ":")).encode()) for p in (header, claims)]
        return ".".join([*parts, _b64(secrets.token_bytes(256))])

    async def _revoke(self, request: web.Request) -> web.Response:
        # RFC 7009 2.1: a form POST, the token in the body, with client authentication.
        form = {k: str(v) for k, v in (await request.post()).items()}
        refused = self._client_auth(request, form)
        if refused is not None:
            return refused
        token = form.get("token", "")
        if not token:
            return _oauth_error("invalid_request", "Missing required parameter: token")
        grant = self._grants.get(token) or getattr(self._access.get(token), "grant", None)
        if grant is None or grant.revoked:
            return web.json_response({})  # RFC 7009 2.2: an invalid token is no error
        # Google drops the app's whole access to the account, every grant of it.
        self.revoked_tokens += [
            t
            for t, g in self._grants.items()
            if g.account == grant.account and not g.revoked and t == g.refresh_token
        ]
        self.revoke_all(grant.account)
        self.revoked.append(grant.account)
        return web.json_response({})

    # -- Gmail -------------------------------------------------------------------------------

    async def _send(self, request: web.Request) -> web.StreamResponse:
        self.gmail_requests += 1
        self.requested.set()
        body = await request.read()
        fault = Fault.parse(self.gmail_faults.pop(0)) if self.gmail_faults else Fault()
        if fault.drop == "before":
            await asyncio.sleep(fault.delay)
            return _drop(request)
        access = self._authorized(request)
        if isinstance(access, web.Response):
            return access
        account = access.grant.account
        if fault.status is not None:
            await asyncio.sleep(self.gmail_latency + fault.delay)
            return _fault_error(fault)
        kind = request.query.get("uploadType")
        if kind not in (None, "media"):
            return _invalid(f"uploadType {kind}: this fake serves simple and media sends only")
        raw = _raw_message(request, body)
        if raw is None:
            return _invalid("Invalid value for ByteString")
        parsed = _parse_message(raw)
        if isinstance(parsed, str):
            return _invalid(parsed)
        # Google takes the mail first; a slow answer comes after (so a client that gives up
        # while waiting has sent it all the same).
        mail = self._take(account, raw, *parsed)
        await asyncio.sleep(self.gmail_latency + fault.delay)
        if fault.drop == "after":
            return _drop(request)
        return web.json_response({"id": mail.id, "threadId": mail.thread_id, "labelIds": ["SENT"]})

    def _authorized(self, request: web.Request) -> _Access | web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        access = self._access.get(token)
        why = "CREDENTIALS_MISSING" if not token else "ACCESS_TOKEN_TYPE_UNSUPPORTED"
        if access is not None and access.expires_at < time.time():
            why = "ACCESS_TOKEN_EXPIRED"
        elif access is not None and not access.grant.revoked:
            if GMAIL_SEND in access.scopes:
                return access
            return _gmail_error(
                403,
                _GMAIL_ERRORS[403][0],
                "insufficientPermissions",
                "PERMISSION_DENIED",
                detail="ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                entry_message="Insufficient Permission",
            )
        return _gmail_error(
            401,
            _UNAUTHENTICATED,
            "authError",
            "UNAUTHENTICATED",
            detail=why,
            entry_message="Invalid Credentials",
            headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
        )

    def _take(
        self,
        account: str,
        raw: bytes,
        msg: EmailMessage,
        to: list[str],
        cc: list[str],
        bcc: list[str],
    ) -> SentMail:
        del msg["Bcc"]  # recipients never see Bcc
        # Gmail sends from the authenticated account, whatever the From header says.
        shown = msg["From"].addresses if msg["From"] else ()
        display = shown[0].display_name if shown else ""
        del msg["From"]
        msg["From"] = Address(display, addr_spec=account)
        mail = SentMail(account, raw, msg, to, cc, bcc, str(msg["Subject"] or ""), _gmail_id())
        self.sent.append(mail)
        self._changed.set()
        return mail

    # -- control API (for a fake in another process) ----------------------------------------

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def _sent(self, request: web.Request) -> web.Response:
        return web.json_response([m.as_json() for m in self.sent])

    async def _control(self, request: web.Request) -> web.Response:
        """Set any of ``_SETTABLE`` (``refuse_client``, ``rotate_refresh_tokens``...) and
        ``redirect_uris``; append ``gmail_faults`` and
        ``token_faults`` (after ``clear_faults``, if given); ``add_account``, ``revoke_all``
        (addresses), ``expire_access_tokens``."""
        data: dict[str, Any] = await request.json()
        if data.get("clear_faults"):
            self.gmail_faults.clear()
            self.token_faults.clear()
        for key in _SETTABLE & data.keys():
            setattr(self, key, data[key])
        if "redirect_uris" in data:
            self.redirect_uris = list(data["redirect_uris"])
        self.gmail_faults += [Fault.parse(f) for f in data.get("gmail_faults", [])]
        self.token_faults += [
            Fault.parse(f) if isinstance(f, dict) else f for f in data.get("token_faults", [])
        ]
        if "add_account" in data:
            self.add_account(data["add_account"])
        if "revoke_all" in data:
            self.revoke_all(data["revoke_all"])
        if data.get("expire_access_tokens"):
            self.expire_access_tokens()
        return web.json_response(self.state())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _gmail_id() -> str:
    return f"{secrets.randbits(60) | 1 << 60:x}"  # 16 hex digits, like Gmail's ids


def _scopes(value: str) -> list[str]:
    return list(dict.fromkeys(_ALIASES.get(s, s) for s in value.split()))


def _addresses(msg: Message, name: str) -> list[str]:
    return [a.addr_spec for a in getattr(msg[name], "addresses", ())]


def _raw_message(request: web.Request, body: bytes) -> bytes | None:
    """The RFC 5322 bytes of a simple (JSON) or media send."""
    if request.query.get("uploadType") == "media":
        return body
    try:
        raw = str(json.loads(body or b"{}").get("raw", ""))
        return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except (ValueError, TypeError, AttributeError):
        return None


class _Registry(HeaderRegistry):
    """The email package's header registry, making each header class once (the stock one
    makes a new class for every header read or set: most of the fake's time per mail)."""

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        made = self._made.get(name.lower())
        if made is None:
            made = self._made[name.lower()] = super().__getitem__(name)
        return made


_POLICY = policy.default.clone(header_factory=_Registry())


def _parse_message(raw: bytes) -> tuple[EmailMessage, list[str], list[str], list[str]] | str:
    """The message and its To, Cc and Bcc addresses, or what is wrong with it.

    Each header is parsed once (the header registry is slow), so the fake's own CPU time per
    mail stays well below the bot's and a benchmark measures the bot."""
    if len(raw) > MAX_MESSAGE:
        return "Message too large"
    msg = message_from_bytes(raw, policy=_POLICY)
    assert isinstance(msg, EmailMessage)
    found: list[list[str]] = []
    for name in ("To", "Cc", "Bcc"):
        try:
            header = msg[name]
            addresses = () if header is None else header.addresses
        except Exception:  # the header parser gives up on some malformed input
            return f"Invalid {name} header"
        if header is not None and (
            header.defects or any("@" not in a.addr_spec for a in addresses)
        ):
            return f"Invalid {name} header"
        found.append([a.addr_spec for a in addresses])
    if not any(found):
        return "Recipient address required"
    return msg, found[0], found[1], found[2]


async def _token_fault(request: web.Request, fault: TokenFault) -> web.StreamResponse | None:
    if isinstance(fault, str):
        text = "Token has been expired or revoked." if fault == "invalid_grant" else "Bad Request"
        # Google answers a deleted client as it does a wrong secret: 401.
        return _oauth_error(
            fault, text, 401 if fault in ("invalid_client", "deleted_client") else 400
        )
    fault = Fault.parse(fault)
    await asyncio.sleep(fault.delay)
    if fault.drop:
        return _drop(request)
    if fault.status is None:
        return None
    headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after else None
    body = {"error": "internal_failure", "error_description": "Backend Error"}
    return web.json_response(body, status=fault.status, headers=headers)


def _oauth_error(
    error: str, description: str, status: int = 400, basic: bool = False
) -> web.Response:
    headers = {"WWW-Authenticate": 'Basic realm="oauth2"'} if basic else None
    body = {"error": error, "error_description": description}
    return web.json_response(body, status=status, headers=headers)


def _error_page(status: int, error: str, text: str) -> web.Response:
    page = (
        '<!doctype html><meta charset="utf-8"><title>Error</title><h1>Access blocked</h1>'
        f"<p>Error {status}: {escape(error)}</p><p>{escape(text)}</p>"
    )
    return web.Response(status=status, text=page, content_type="text/html")


def _invalid(message: str) -> web.Response:
    return _gmail_error(400, message, "invalidArgument", "INVALID_ARGUMENT")


def _fault_error(fault: Fault) -> web.Response:
    assert fault.status is not None
    message, reason, state = _GMAIL_ERRORS.get(fault.status, ("Error", "unknown", "UNKNOWN"))
    if fault.reason:
        reason = fault.reason
    message = fault.message or _LIMIT_MESSAGES.get(reason if fault.status == 403 else "", message)
    headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after else None
    return _gmail_error(fault.status, message, reason, state, headers=headers)


def _gmail_error(
    status: int,
    message: str,
    reason: str,
    state: str,
    *,
    detail: str | None = None,
    entry_message: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """Google's JSON error body: ``{"error": {"code", "message", "errors": [...], "status"}}``."""
    entry = {
        "message": entry_message or message,
        "domain": "usageLimits" if reason in _LIMIT_MESSAGES or status == 429 else "global",
        "reason": reason,
    }
    if status == 401:
        entry |= {"location": "Authorization", "locationType": "header"}
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "errors": [entry],
        "status": state,
    }
    if detail:  # note: googleapiclient's HttpError.error_details prefers these to errors[]
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": detail,
                "domain": "googleapis.com",
                "metadata": {
                    "service": "gmail.googleapis.com",
                    "method": "caribou.api.proto.MailboxService.SendMessage",
                },
            }
        ]
    return web.json_response({"error": error}, status=status, headers=headers)


def _drop(request: web.Request) -> web.Response:
    """Close the connection without an answer (the client sees it drop)."""
    assert request.transport is not None
    request.transport.abort()
    return web.Response(status=500)  # never reaches the client


@pytest.fixture
async def google_fake() -> AsyncIterator[GoogleFake]:
    """A running Google fake; oauthlib is told plain HTTP on 127.0.0.1 is fine (tests only)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    async with GoogleFake() as fake:
        try:
            yield fake
        finally:
            mp.undo()


async def _serve(port: int, redirect_uris: list[str]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with GoogleFake(port=port) as fake:
        fake.redirect_uris = redirect_uris
        print(fake.base_url, flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Run the fake on its own until SIGTERM; print its base URL once listening."""
    parser = argparse.ArgumentParser(prog="python -m tests.google_fake", description=main.__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument("--redirect-uri", action="append", default=[], help="registered URI")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.port, args.redirect_uri))


if __name__ == "__main__":
    main()
