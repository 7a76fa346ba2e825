"""A fake of Google's OAuth 2.0 endpoints and Gmail's ``users.messages.send``, on 127.0.0.1.

It speaks the documented wire formats, so the real client libraries (google-auth-oauthlib for the
authorization URL and code exchange, google-auth for refreshes, google-api-python-client for
sends) work against it unchanged, only pointed at its URLs. Test controls: which account logs in,
what the user does on the consent page, and faults to inject.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from html import escape
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web

GMAIL_SEND = "https://www.googleapis.com/auth/gmail.send"
EMAIL_SCOPE = "https://www.googleapis.com/auth/userinfo.email"
MAX_MESSAGE = 35 * 1024 * 1024


@dataclass
class Fault:
    """One injected answer: an HTTP error, a slow answer, or a dropped connection."""

    status: int | None = None
    reason: str | None = None  # errors[].reason, e.g. "rateLimitExceeded"
    retry_after: float | None = None
    delay: float = 0.0  # seconds before answering
    drop: str | None = None  # "before": drop, mail not taken; "after": mail taken, then drop


@dataclass
class SentMail:
    """A message Gmail accepted (or took before the connection dropped)."""

    account: str
    raw: bytes
    message: EmailMessage
    id: str

    @property
    def to(self) -> list[str]:
        return _addresses(self.message, "To")

    @property
    def cc(self) -> list[str]:
        return _addresses(self.message, "Cc")

    @property
    def bcc(self) -> list[str]:
        return _addresses(self.message, "Bcc")

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    @property
    def sender(self) -> str:
        return _addresses(self.message, "From")[0]

    def text(self) -> str:
        body = self.message.get_body(("plain",))
        assert body is not None
        return str(body.get_content()).replace("\r\n", "\n").removesuffix("\n")


@dataclass
class _Grant:
    account: str
    scopes: list[str]
    refresh_token: str
    revoked: bool = False


@dataclass
class _Code:
    account: str
    scopes: list[str]
    redirect_uri: str
    challenge: str
    used: bool = False


@dataclass
class _Access:
    grant: _Grant
    expires_at: float


@dataclass
class GoogleFake:
    """Google's consent screen, token and revoke endpoints and Gmail send, for tests."""

    client_id: str = "1234-fake.apps.googleusercontent.com"
    client_secret: str = "fake-client-secret"
    next_account: str = "alice@gmail.com"
    auto_consent: str | None = None  # None: show the page; "allow" | "deny" | "untick"
    access_token_lifetime: int = 3599
    gmail_latency: float = 0.0
    gmail_faults: list[Fault] = field(default_factory=list)
    token_faults: list[Fault | str] = field(default_factory=list)  # or "invalid_grant"
    sent: list[SentMail] = field(default_factory=list)
    auth_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[str] = field(default_factory=list)  # grant types, in order
    gmail_requests: int = 0
    revoked: list[str] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self.accounts: set[str] = {self.next_account}
        self.redirect_uris: list[str] = []
        self._codes: dict[str, _Code] = {}
        self._pending: dict[str, dict[str, str]] = {}
        self._grants: dict[str, _Grant] = {}
        self._access: dict[str, _Access] = {}
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()
        self.requested = asyncio.Event()  # set by every Gmail send request

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> GoogleFake:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/o/oauth2/auth", self._authorize)
        app.router.add_post("/o/oauth2/decide", self._decide)
        app.router.add_post("/token", self._token)
        app.router.add_post("/revoke", self._revoke)
        app.router.add_post("/gmail/v1/users/me/messages/send", self._send)
        app.router.add_post("/upload/gmail/v1/users/me/messages/send", self._send)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
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

    # -- test controls ---------------------------------------------------------------------

    def add_account(self, email: str) -> None:
        self.accounts.add(email)

    def revoke_all(self, email: str) -> None:
        """The user removed the app's access (or changed their password)."""
        for grant in self._grants.values():
            if grant.account == email:
                grant.revoked = True

    def expire_access_tokens(self) -> None:
        for access in self._access.values():
            access.expires_at = 0.0

    async def wait_for_mail(self, count: int = 1, timeout: float = 15.0) -> list[SentMail]:
        """Wait until at least ``count`` mails were taken; return them all."""
        async with asyncio.timeout(timeout):
            while len(self.sent) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.sent

    # -- OAuth -----------------------------------------------------------------------------

    async def _authorize(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        self.auth_requests.append(q)
        problems = [
            name
            for name, ok in [
                ("client_id", q.get("client_id") == self.client_id),
                ("redirect_uri", bool(q.get("redirect_uri"))
                 and (not self.redirect_uris or q["redirect_uri"] in self.redirect_uris)),
                ("response_type", q.get("response_type") == "code"),
                ("scope", bool(q.get("scope"))),
                ("code_challenge_method", q.get("code_challenge_method") == "S256"),
                ("code_challenge", bool(q.get("code_challenge"))),
            ]
            if not ok
        ]  # fmt: skip
        if problems:
            text = f"Error 400: invalid_request ({', '.join(problems)})"
            return web.Response(status=400, text=text)
        if self.auto_consent is not None:
            return self._redirect(q, self.auto_consent)
        request_id = secrets.token_urlsafe(8)
        self._pending[request_id] = q
        scopes = q["scope"].split()
        boxes = "".join(
            f'<label><input type="checkbox" name="scope" value="{escape(s)}" checked> '
            f"{'Send email on your behalf' if s == GMAIL_SEND else escape(s)}</label><br>"
            for s in scopes
        )
        page = (
            "<!doctype html><title>Sign in - Google Accounts</title>"
            f"<h1>{escape(self.next_account)}</h1><p>mailbridge wants to access your account</p>"
            f'<form method="post" action="/o/oauth2/decide">'
            f'<input type="hidden" name="request" value="{request_id}">{boxes}'
            '<button name="decision" value="deny">Cancel</button>'
            '<button name="decision" value="allow">Continue</button></form>'
        )
        return web.Response(text=page, content_type="text/html")

    async def _decide(self, request: web.Request) -> web.Response:
        form = await request.post()
        q = self._pending.pop(str(form.get("request", "")), None)
        if q is None:
            return web.Response(status=400, text="unknown request")
        if form.get("decision") != "allow":
            return self._redirect(q, "deny")
        ticked = {str(v) for v in form.getall("scope", [])}
        return self._redirect(q, "allow" if GMAIL_SEND in ticked else "untick")

    def _redirect(self, q: dict[str, str], decision: str) -> web.Response:
        params: dict[str, str] = {"state": q.get("state", "")}
        if decision == "deny":
            params["error"] = "access_denied"
        else:
            scopes = ["openid", EMAIL_SCOPE]
            if decision == "allow":
                scopes.append(GMAIL_SEND)
            code = "4/0A" + secrets.token_urlsafe(24)
            self._codes[code] = _Code(
                self.next_account, scopes, q["redirect_uri"], q["code_challenge"]
            )
            params |= {
                "code": code,
                "scope": " ".join(scopes),
                "authuser": "0",
                "prompt": "consent",
            }
        raise web.HTTPFound(f"{q['redirect_uri']}?{urlencode(params)}")

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        grant_type = form.get("grant_type", "")
        self.token_requests.append(grant_type)
        if self.token_faults:
            fault = self.token_faults.pop(0)
            if fault == "invalid_grant":
                return _oauth_error("invalid_grant", "Token has been expired or revoked.")
            assert isinstance(fault, Fault)
            await asyncio.sleep(fault.delay)
            if fault.status:
                return web.json_response({"error": "internal_failure"}, status=fault.status)
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if "Authorization" in request.headers:
            decoded = base64.b64decode(request.headers["Authorization"].split()[-1]).decode()
            client_id, _, secret = decoded.partition(":")
        if client_id != self.client_id or secret != self.client_secret:
            return _oauth_error("invalid_client", "The OAuth client was not found.", 401)
        if grant_type == "authorization_code":
            return self._exchange(form)
        if grant_type == "refresh_token":
            grant = self._grants.get(form.get("refresh_token", ""))
            if grant is None or grant.revoked:
                return _oauth_error("invalid_grant", "Token has been expired or revoked.")
            return web.json_response(self._access_token(grant))
        return _oauth_error("unsupported_grant_type", f"Invalid grant_type: {grant_type}")

    def _exchange(self, form: dict[str, str]) -> web.Response:
        code = self._codes.get(form.get("code", ""))
        if code is None or code.used:
            return _oauth_error("invalid_grant", "Malformed auth code.")
        code.used = True
        if form.get("redirect_uri") != code.redirect_uri:
            return _oauth_error("redirect_uri_mismatch", "Bad Request")
        verifier = form.get("code_verifier", "")
        digest = hashlib.sha256(verifier.encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).decode().rstrip("=")
        if not verifier or not hmac.compare_digest(challenge, code.challenge):
            return _oauth_error("invalid_grant", "Invalid code verifier.")
        grant = _Grant(code.account, code.scopes, "1//0g" + secrets.token_urlsafe(32))
        self._grants[grant.refresh_token] = grant
        body = self._access_token(grant)
        body["refresh_token"] = grant.refresh_token
        body["id_token"] = self._id_token(code.account)
        return web.json_response(body)

    def _access_token(self, grant: _Grant) -> dict[str, Any]:
        token = "ya29.a0" + secrets.token_urlsafe(32)
        self._access[token] = _Access(grant, time.time() + self.access_token_lifetime)
        return {
            "access_token": token,
            "expires_in": self.access_token_lifetime,
            "scope": " ".join(grant.scopes),
            "token_type": "Bearer",
        }

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
        parts = [{"alg": "RS256", "kid": "fake", "typ": "JWT"}, claims]
        encoded = [_b64(json.dumps(p).encode()) for p in parts]
        return ".".join([*encoded, _b64(secrets.token_bytes(256))])

    async def _revoke(self, request: web.Request) -> web.Response:
        token = request.query.get("token") or str((await request.post()).get("token", ""))
        grant = self._grants.get(token)
        if grant is None and token in self._access:
            grant = self._access[token].grant
        if grant is None:
            return web.json_response({"error": "invalid_token"}, status=400)
        grant.revoked = True
        self.revoked.append(grant.account)
        return web.json_response({})

    # -- Gmail -----------------------------------------------------------------------------

    async def _send(self, request: web.Request) -> web.StreamResponse:
        self.gmail_requests += 1
        self.requested.set()
        body = await request.read()
        fault = self.gmail_faults.pop(0) if self.gmail_faults else Fault()
        if fault.drop == "before":
            return _drop(request)
        access = self._authorized(request)
        if isinstance(access, web.Response):
            return access
        raw = _raw_message(request, body)
        if raw is None:
            return _gmail_error(400, "Invalid raw message", "invalidArgument", "INVALID_ARGUMENT")
        if fault.status is None and fault.drop is None:
            problem = _check_message(raw)
            if problem:
                return _gmail_error(400, problem, "invalidArgument", "INVALID_ARGUMENT")
        if fault.status is not None:
            await asyncio.sleep(self.gmail_latency + fault.delay)
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
            reason = fault.reason or {429: "rateLimitExceeded", 401: "authError"}.get(
                fault.status, "backendError"
            )
            return _gmail_error(fault.status, f"fault {fault.status}", reason, None, headers)
        # Google takes the mail first; a slow answer comes after (so a client that dies while
        # waiting has sent it all the same).
        mail = self._take(access.grant.account, raw)
        await asyncio.sleep(self.gmail_latency + fault.delay)
        if fault.drop == "after":
            return _drop(request)
        return web.json_response({"id": mail.id, "threadId": mail.id, "labelIds": ["SENT"]})

    def _authorized(self, request: web.Request) -> _Access | web.Response:
        header = request.headers.get("Authorization", "")
        access = self._access.get(header.removeprefix("Bearer ").strip())
        if access is None or access.expires_at < time.time() or access.grant.revoked:
            return _gmail_error(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                "login cookie or other valid authentication credential.",
                "authError",
                "UNAUTHENTICATED",
            )
        if GMAIL_SEND not in access.grant.scopes:
            return _gmail_error(
                403,
                "Request had insufficient authentication scopes.",
                "insufficientPermissions",
                "PERMISSION_DENIED",
            )
        return access

    def _take(self, account: str, raw: bytes) -> SentMail:
        msg = message_from_bytes(raw, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        # Gmail sends from the authenticated account whatever the From header says.
        display = msg["From"].addresses[0].display_name if msg["From"] else ""
        del msg["From"]
        msg["From"] = f"{display} <{account}>" if display else account
        mail = SentMail(account, raw, msg, secrets.token_hex(8))
        self.sent.append(mail)
        self._changed.set()
        return mail


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _addresses(msg: EmailMessage, name: str) -> list[str]:
    header = msg[name]
    return [a.addr_spec for a in header.addresses] if header is not None else []


def _raw_message(request: web.Request, body: bytes) -> bytes | None:
    upload = request.query.get("uploadType")
    try:
        if upload is None:
            raw = json.loads(body)["raw"]
            return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        if upload == "media":
            return body
        if upload == "multipart":  # multipart/related: JSON metadata, then the message
            head = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode()
            container = message_from_bytes(head + body, policy=policy.compat32)
            parts = container.get_payload()
            assert isinstance(parts, list)
            payload = parts[-1].get_payload(decode=True)
            if payload is None:  # message/rfc822 parts come back parsed
                inner = parts[-1].get_payload()
                payload = (inner[0] if isinstance(inner, list) else inner).as_bytes()
            return bytes(payload)
    except (ValueError, KeyError, IndexError, AssertionError, TypeError):
        return None
    return None


def _check_message(raw: bytes) -> str | None:
    if len(raw) > MAX_MESSAGE:
        return "Message too large"
    msg = message_from_bytes(raw, policy=policy.default)
    if not any(msg[h] for h in ("To", "Cc", "Bcc")):
        return "Recipient address required"
    return None


def _oauth_error(error: str, description: str, status: int = 400) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)


def _gmail_error(
    status: int,
    message: str,
    reason: str,
    state: str | None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    domain = "usageLimits" if "imit" in reason else "global"
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "errors": [{"message": message, "domain": domain, "reason": reason}],
    }
    if state:
        error["status"] = state
    return web.json_response({"error": error}, status=status, headers=headers)


def _drop(request: web.Request) -> web.Response:
    """Close the connection without an answer (the client sees it drop)."""
    assert request.transport is not None
    request.transport.abort()
    return web.Response(status=500)


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
