"""The Google fake is faithful: the real Google client libraries work against it over HTTP."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import re
import signal
import sys
import time
from datetime import UTC
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import aiohttp
import httplib2
import pytest
import urllib3
from google.auth.exceptions import RefreshError
from google.auth.transport.requests import Request
from google.oauth2.credentials import Credentials
from google_auth_oauthlib.flow import Flow
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import HttpRequest, MediaIoBaseUpload
from oauthlib.oauth2.rfc6749.errors import InvalidGrantError

from tests.google_fake import EMAIL_SCOPE, GMAIL_SEND, UPLOAD_PATH, Fault, GoogleFake

pytestmark = pytest.mark.integration

REDIRECT = "http://127.0.0.1:9/oauth/callback"  # never fetched: tests stop at the redirect
SCOPES = ["openid", "email", GMAIL_SEND]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _oauthlib_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # oauthlib refuses http:// and raises when Google widens "email"; tests only.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    monkeypatch.setenv("OAUTHLIB_RELAX_TOKEN_SCOPE", "1")


def make_flow(fake: GoogleFake) -> Flow:
    return Flow.from_client_config(
        fake.client_secrets_json([REDIRECT]),
        scopes=SCOPES,
        redirect_uri=REDIRECT,
        autogenerate_code_verifier=True,
    )


def consent_url(flow: Flow) -> str:
    url, _ = flow.authorization_url(
        access_type="offline", prompt="consent", include_granted_scopes="true"
    )
    return str(url)


async def redirected(response: aiohttp.ClientResponse) -> dict[str, str]:
    """The query Google sends back to the app (the redirect is not followed)."""
    assert response.status == 302, await response.text()
    location = response.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    return dict(parse_qsl(urlsplit(location).query))


async def consent(flow: Flow) -> dict[str, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(consent_url(flow), allow_redirects=False) as r,
    ):
        return await redirected(r)


async def connect(fake: GoogleFake) -> Credentials:
    """Consent (allowed) and exchange the code; return the credentials google-auth builds."""
    fake.auto_consent = "allow"
    flow = make_flow(fake)
    answer = await consent(flow)
    await asyncio.to_thread(flow.fetch_token, code=answer["code"])
    creds: Credentials = flow.credentials
    return creds


def gmail(fake: GoogleFake, creds: Credentials | None = None, http: Any = None) -> Any:
    return build(
        "gmail",
        "v1",
        credentials=creds,
        http=http,
        static_discovery=True,
        cache_discovery=False,
        client_options={"api_endpoint": fake.api_endpoint},
    )


def message(
    to: str = "Bob <bob@example.com>",
    text: str = "Free on Friday? Ça va.\nFrom the office\n",  # 8bit: raw UTF-8 on the wire
    **headers: str,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Alice Example <someone-else@example.org>"
    msg["To"] = to
    msg["Subject"] = "Lunch?"
    for name, value in headers.items():
        msg[name] = value
    msg.set_content(text)
    return msg.as_bytes()


async def send(fake: GoogleFake, creds: Credentials, raw: bytes) -> dict[str, Any]:
    def call() -> dict[str, Any]:
        body = {"raw": base64.urlsafe_b64encode(raw).decode()}
        with gmail(fake, creds) as service:  # closes its connections
            result: dict[str, Any] = (
                service.users().messages().send(userId="me", body=body).execute(num_retries=0)
            )
        return result

    return await asyncio.to_thread(call)


def claims(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def error_of(exc: HttpError) -> dict[str, Any]:
    error: dict[str, Any] = json.loads(exc.content)["error"]
    return error


# -- OAuth -------------------------------------------------------------------------------------


async def test_consent_and_code_exchange_give_a_refresh_token_and_id_token(
    google_fake: GoogleFake,
) -> None:
    google_fake.auto_consent = "allow"
    flow = make_flow(google_fake)
    answer = await consent(flow)
    [asked] = google_fake.auth_requests
    assert asked["access_type"] == "offline"
    assert asked["prompt"] == "consent"
    assert asked["include_granted_scopes"] == "true"
    assert asked["code_challenge_method"] == "S256"
    verifier_hash = hashlib.sha256(flow.code_verifier.encode()).digest()
    assert asked["code_challenge"] == base64.urlsafe_b64encode(verifier_hash).decode().rstrip("=")
    assert asked["scope"] == " ".join(SCOPES)
    assert answer["state"] == asked["state"]
    assert answer["scope"] == f"openid {EMAIL_SCOPE} {GMAIL_SEND}"  # Google widens "email"
    assert (answer["authuser"], answer["prompt"]) == ("0", "consent")

    token = await asyncio.to_thread(flow.fetch_token, code=answer["code"])
    assert token["refresh_token"]
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 3599
    assert GMAIL_SEND in token["scope"]
    header = json.loads(base64.urlsafe_b64decode(token["id_token"].split(".")[0] + "=="))
    assert header["alg"] == "RS256"
    id_claims = claims(token["id_token"])
    assert id_claims["iss"] == "https://accounts.google.com"
    assert id_claims["aud"] == id_claims["azp"] == google_fake.client_id
    assert id_claims["email"] == "alice@gmail.com"
    assert id_claims["email_verified"] is True
    assert id_claims["exp"] > time.time()
    assert flow.credentials.id_token == token["id_token"]
    assert google_fake.token_requests == ["authorization_code"]

    with pytest.raises(InvalidGrantError):  # a code works once
        await asyncio.to_thread(flow.fetch_token, code=answer["code"])


async def test_a_wrong_code_verifier_is_invalid_grant(google_fake: GoogleFake) -> None:
    google_fake.auto_consent = "allow"
    flow = make_flow(google_fake)
    answer = await consent(flow)
    flow.code_verifier = "x" * 64
    with pytest.raises(InvalidGrantError) as caught:
        await asyncio.to_thread(flow.fetch_token, code=answer["code"])
    assert caught.value.description == "Invalid code verifier."


async def test_unticking_send_on_the_consent_page_grants_no_sending(
    google_fake: GoogleFake,
) -> None:
    google_fake.next_account = "carol@gmail.com"
    flow = make_flow(google_fake)
    async with aiohttp.ClientSession() as http:
        async with http.get(consent_url(flow)) as page:
            html = await page.text()
        assert "carol@gmail.com" in html
        assert "mailbridge wants access" in html
        assert f'value="{GMAIL_SEND}" checked' in html
        assert "Send email on your behalf" in html
        match = re.search(r'name="request" value="([^"]+)"', html)
        assert match
        form = {"request": match.group(1), "decision": "allow"}  # the box is unticked
        decide = f"{google_fake.base_url}/o/oauth2/decide"
        async with http.post(decide, data=form, allow_redirects=False) as r:
            answer = await redirected(r)
    assert GMAIL_SEND not in answer["scope"]
    token = await asyncio.to_thread(flow.fetch_token, code=answer["code"])
    assert GMAIL_SEND not in token["scope"]
    assert claims(token["id_token"])["email"] == "carol@gmail.com"
    with pytest.raises(HttpError) as caught:
        await send(google_fake, flow.credentials, message())
    assert caught.value.status_code == 403
    assert error_of(caught.value)["errors"][0]["reason"] == "insufficientPermissions"
    assert google_fake.sent == []


async def test_deny_and_a_foreign_redirect_uri(google_fake: GoogleFake) -> None:
    flow = make_flow(google_fake)
    async with aiohttp.ClientSession() as http:
        async with http.get(consent_url(flow)) as page:
            request_id = re.findall(r'name="request" value="([^"]+)"', await page.text())[0]
        form = {"request": request_id, "decision": "deny", "scope": GMAIL_SEND}
        decide = f"{google_fake.base_url}/o/oauth2/decide"
        async with http.post(decide, data=form, allow_redirects=False) as r:
            answer = await redirected(r)
        assert answer["error"] == "access_denied"
        assert answer["state"] == google_fake.auth_requests[0]["state"]
        assert "code" not in answer
        google_fake.auto_consent = "deny"
        async with http.get(consent_url(make_flow(google_fake)), allow_redirects=False) as r:
            assert (await redirected(r))["error"] == "access_denied"
        flow = make_flow(google_fake)
        google_fake.redirect_uris = ["https://other.example/cb"]  # ours is not registered
        async with http.get(consent_url(flow), allow_redirects=False) as r:
            assert r.status == 400
            assert "redirect_uri_mismatch" in await r.text()


async def test_refresh_works_until_revoked(google_fake: GoogleFake) -> None:
    google_fake.client_secret_post = True  # google-auth sends the secret in the body
    creds = await connect(google_fake)
    first = creds.token
    google_fake.access_token_lifetime = 600
    await asyncio.to_thread(creds.refresh, Request())
    assert creds.token != first
    assert creds.valid
    assert creds.expiry is not None  # naive UTC, from expires_in
    assert 590 < creds.expiry.replace(tzinfo=UTC).timestamp() - time.time() <= 601
    assert google_fake.token_requests == ["authorization_code", "refresh_token"]
    async with aiohttp.ClientSession(headers=client_auth(google_fake)) as http:
        async with http.post(google_fake.revoke_uri, data={"token": creds.token}) as r:
            assert (r.status, await r.json()) == (200, {})  # an access token revokes the grant
        with pytest.raises(RefreshError, match="invalid_grant"):
            await asyncio.to_thread(creds.refresh, Request())
        async with http.post(google_fake.revoke_uri, data={"token": creds.refresh_token}) as r:
            assert r.status == 200  # RFC 7009 2.2: a token no longer valid is no error
    assert google_fake.revoked == ["alice@gmail.com"]
    assert google_fake.revoked_tokens == [creds.refresh_token]


async def test_token_faults(google_fake: GoogleFake) -> None:
    google_fake.client_secret_post = True  # google-auth sends the secret in the body
    creds = await connect(google_fake)
    google_fake.token_faults.append(503)
    await asyncio.to_thread(creds.refresh, Request())  # google-auth retries a 503 by itself
    assert google_fake.token_requests.count("refresh_token") == 2
    google_fake.token_faults.append("invalid_grant")
    with pytest.raises(RefreshError, match="invalid_grant"):
        await asyncio.to_thread(creds.refresh, Request())
    google_fake.revoke_all("alice@gmail.com")
    with pytest.raises(RefreshError, match="Token has been expired or revoked"):
        await asyncio.to_thread(creds.refresh, Request())


def basic(client_id: str, secret: str) -> dict[str, str]:
    """An Authorization header of the two strings as given (no form-encoding)."""
    return {
        "Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    }


def client_auth(fake: GoogleFake) -> dict[str, str]:
    return basic(fake.client_id, fake.client_secret)


async def token_post(
    fake: GoogleFake, form: dict[str, str], url: str | None = None, **kw: Any
) -> tuple[int, dict[str, Any], aiohttp.typedefs.LooseHeaders]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url or fake.token_uri, data=form, **kw) as r,
    ):
        return r.status, await r.json(), r.headers


async def test_the_token_endpoint_requires_client_authentication(google_fake: GoogleFake) -> None:
    creds = await connect(google_fake)
    assert creds.refresh_token
    form = {"grant_type": "refresh_token", "refresh_token": creds.refresh_token}
    secret = {"client_id": google_fake.client_id, "client_secret": google_fake.client_secret}
    status, body, _ = await token_post(google_fake, form)  # none: RFC 6749 5.2
    assert (status, body["error"]) == (401, "invalid_client")
    status, body, _ = await token_post(google_fake, form | secret)  # in the body: not enabled
    assert (status, body["error"]) == (401, "invalid_client")
    wrong = basic(google_fake.client_id, "not-the-secret")
    status, body, headers = await token_post(google_fake, form, headers=wrong)
    assert (status, body["error"]) == (401, "invalid_client")
    assert headers["WWW-Authenticate"].startswith("Basic")  # 5.2: the scheme the client used
    status, body, _ = await token_post(
        google_fake, form | secret, headers=client_auth(google_fake)
    )
    assert (status, body["error"]) == (400, "invalid_request")  # two methods at once (2.3)
    status, body, _ = await token_post(google_fake, form, headers=client_auth(google_fake))
    assert status == 200
    assert body["access_token"]
    google_fake.client_secret_post = True
    status, body, _ = await token_post(google_fake, form | secret)
    assert status == 200
    # Appendix B: the Basic id and secret are form-encoded first, so ":" and " " survive.
    google_fake.client_secret = "s3 cr:t+/é"
    raw = basic(google_fake.client_id, google_fake.client_secret)
    status, _, _ = await token_post(google_fake, form, headers=raw)
    assert status == 401  # "+" decodes to a space: not the secret
    encoded = basic(google_fake.client_id, "s3+cr%3At%2B%2F%C3%A9")
    status, _, _ = await token_post(google_fake, form, headers=encoded)
    assert status == 200


async def test_revocation_requires_client_authentication(google_fake: GoogleFake) -> None:
    creds = await connect(google_fake)
    revoke = google_fake.revoke_uri
    form = {"token": creds.refresh_token, "token_type_hint": "refresh_token"}
    status, body, _ = await token_post(google_fake, form, revoke)  # RFC 7009 2.1
    assert (status, body["error"]) == (401, "invalid_client")
    status, body, _ = await token_post(google_fake, {}, revoke, headers=client_auth(google_fake))
    assert (status, body["error"]) == (400, "invalid_request")  # the token is required
    status, body, _ = await token_post(  # the token goes in the body, not the URL
        google_fake, {}, f"{revoke}?token={creds.refresh_token}", headers=client_auth(google_fake)
    )
    assert (status, body["error"]) == (400, "invalid_request")
    unknown = {"token": "1//0g-never-issued"}
    status, body, _ = await token_post(
        google_fake, unknown, revoke, headers=client_auth(google_fake)
    )
    assert (status, body) == (200, {})  # RFC 7009 2.2: an invalid token is no error
    assert google_fake.revoked_tokens == []
    status, body, _ = await token_post(google_fake, form, revoke, headers=client_auth(google_fake))
    assert (status, body) == (200, {})
    assert google_fake.revoked_tokens == [creds.refresh_token]
    assert google_fake.revoked == ["alice@gmail.com"]
    refresh = {"grant_type": "refresh_token", "refresh_token": creds.refresh_token}
    status, body, _ = await token_post(google_fake, refresh, headers=client_auth(google_fake))
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_rotated_refresh_tokens_replace_the_old_one(google_fake: GoogleFake) -> None:
    creds = await connect(google_fake)
    google_fake.rotate_refresh_tokens = True
    auth = client_auth(google_fake)
    old = {"grant_type": "refresh_token", "refresh_token": creds.refresh_token}
    status, body, _ = await token_post(google_fake, old, headers=auth)
    assert status == 200
    new = body["refresh_token"]
    assert new != creds.refresh_token  # RFC 6749 6: the client must use this one now
    status, body, _ = await token_post(google_fake, old | {"refresh_token": new}, headers=auth)
    assert status == 200
    newer = body["refresh_token"]
    status, body, _ = await token_post(google_fake, old, headers=auth)  # a spent one came back
    assert (status, body["error"]) == (400, "invalid_grant")
    # ... which ends the grant (RFC 9700 4.14.2): the newest token is dead as well.
    status, body, _ = await token_post(google_fake, old | {"refresh_token": newer}, headers=auth)
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_scope_is_left_out_only_when_it_is_what_was_asked(google_fake: GoogleFake) -> None:
    google_fake.omit_scope = True
    google_fake.auto_consent = "allow"
    flow = make_flow(google_fake)
    answer = await consent(flow)
    form = {
        "grant_type": "authorization_code",
        "code": answer["code"],
        "redirect_uri": REDIRECT,
        "code_verifier": flow.code_verifier,
    }
    auth = client_auth(google_fake)
    status, body, _ = await token_post(google_fake, form, headers=auth)
    assert status == 200
    assert "scope" not in body  # RFC 6749 5.1: OPTIONAL when identical to the request
    refresh = {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}
    status, body, _ = await token_post(google_fake, refresh, headers=auth)
    assert (status, "scope" in body) == (200, False)
    google_fake.auto_consent = "untick"
    google_fake.next_account = "carol@gmail.com"  # Alice's earlier consent would still count
    flow = make_flow(google_fake)
    answer = await consent(flow)
    form |= {"code": answer["code"], "code_verifier": flow.code_verifier}
    status, body, _ = await token_post(google_fake, form, headers=auth)
    assert status == 200
    assert GMAIL_SEND not in body["scope"]  # REQUIRED when it differs


@pytest.mark.parametrize(
    ("code", "status"), [("invalid_client", 401), ("unauthorized_client", 400)]
)
async def test_a_refused_client_gets_no_token(
    google_fake: GoogleFake, code: str, status: int
) -> None:
    creds = await connect(google_fake)
    google_fake.refuse_client = code  # type: ignore[assignment]
    form = {"grant_type": "refresh_token", "refresh_token": creds.refresh_token}
    got, body, _ = await token_post(google_fake, form, headers=client_auth(google_fake))
    assert (got, body["error"]) == (status, code)  # RFC 6749 5.2
    google_fake.refuse_client = None
    got, body, _ = await token_post(google_fake, form, headers=client_auth(google_fake))
    assert got == 200


# -- Gmail -------------------------------------------------------------------------------------


async def test_send_delivers_from_the_account_and_hides_bcc(google_fake: GoogleFake) -> None:
    creds = await connect(google_fake)
    raw = message(Cc="carol@example.com", Bcc="dan@example.com")
    result = await send(google_fake, creds, raw)
    [mail] = google_fake.sent
    assert result == {"id": mail.id, "threadId": mail.id, "labelIds": ["SENT"]}
    assert re.fullmatch(r"[0-9a-f]{16}", mail.id)
    assert mail.account == "alice@gmail.com"
    assert mail.raw == raw
    assert mail.to == ["bob@example.com"]
    assert mail.cc == ["carol@example.com"]
    assert mail.bcc == ["dan@example.com"]  # recorded, though recipients do not see it
    assert mail.subject == "Lunch?"
    assert mail.text() == "Free on Friday? Ça va.\nFrom the office"
    assert mail.message["From"] == "Alice Example <alice@gmail.com>"  # forced, name kept
    assert "Bcc" not in mail.message


async def test_an_expired_access_token_is_refreshed_by_the_library(
    google_fake: GoogleFake,
) -> None:
    google_fake.client_secret_post = True  # google-auth sends the secret in the body
    creds = await connect(google_fake)
    google_fake.expire_access_tokens()
    await send(google_fake, creds, message())  # 401, then google-auth-httplib2 refreshes, resends
    assert google_fake.token_requests == ["authorization_code", "refresh_token"]
    assert google_fake.gmail_requests == 2
    assert len(google_fake.sent) == 1


async def test_no_credentials_is_401_in_googles_shape(google_fake: GoogleFake) -> None:
    def call() -> None:
        with gmail(google_fake, http=httplib2.Http()) as service:
            service.users().messages().send(userId="me", body={"raw": "eA"}).execute(num_retries=0)

    with pytest.raises(HttpError) as caught:
        await asyncio.to_thread(call)
    exc = caught.value
    assert exc.status_code == 401
    assert exc.resp["www-authenticate"].startswith("Bearer")
    error = error_of(exc)
    assert error["status"] == "UNAUTHENTICATED"
    assert error["message"].startswith("Request had invalid authentication credentials.")
    assert error["errors"] == [
        {
            "message": "Invalid Credentials",
            "domain": "global",
            "reason": "authError",
            "location": "Authorization",
            "locationType": "header",
        }
    ]
    # googleapiclient exposes "details" (ErrorInfo), not errors[], as error_details.
    assert exc.error_details[0]["reason"] == "CREDENTIALS_MISSING"


@pytest.mark.parametrize(
    ("fault", "status", "reason", "domain"),
    [
        (Fault.too_many_requests(retry_after=1), 429, "rateLimitExceeded", "usageLimits"),
        (Fault.limit("rateLimitExceeded"), 403, "rateLimitExceeded", "usageLimits"),
        (Fault.limit("userRateLimitExceeded"), 403, "userRateLimitExceeded", "usageLimits"),
        (Fault.limit("dailyLimitExceeded"), 403, "dailyLimitExceeded", "usageLimits"),
        (Fault(status=500), 500, "backendError", "global"),
        (Fault(status=503), 503, "backendError", "global"),
    ],
)
async def test_gmail_faults_surface_as_http_errors(
    google_fake: GoogleFake, fault: Fault, status: int, reason: str, domain: str
) -> None:
    creds = await connect(google_fake)
    google_fake.gmail_faults.append(fault)
    with pytest.raises(HttpError) as caught:
        await send(google_fake, creds, message())
    exc = caught.value
    assert exc.status_code == status
    [entry] = error_of(exc)["errors"]
    assert (entry["reason"], entry["domain"]) == (reason, domain)
    assert exc.error_details == [entry]
    if status == 429:
        assert exc.resp["retry-after"] == "1"  # httplib2 lower-cases header names
    assert google_fake.gmail_requests == 1  # num_retries=0: the library did not retry
    assert google_fake.sent == []


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (message(to="undisclosed-recipients:;"), "Recipient address required"),
        (message(to="bob at example"), "Invalid To header"),
    ],
)
async def test_bad_messages_are_refused(google_fake: GoogleFake, raw: bytes, problem: str) -> None:
    creds = await connect(google_fake)
    with pytest.raises(HttpError) as caught:
        await send(google_fake, creds, raw)
    assert caught.value.status_code == 400
    assert caught.value.reason == problem
    assert google_fake.sent == []


async def test_a_dropped_connection_after_gmail_took_the_mail(google_fake: GoogleFake) -> None:
    creds = await connect(google_fake)
    url = f"{google_fake.api_endpoint}/gmail/v1/users/me/messages/send"
    body = json.dumps({"raw": base64.urlsafe_b64encode(message()).decode()})
    headers = {"Authorization": f"Bearer {creds.token}", "Content-Type": "application/json"}
    google_fake.gmail_faults.append(Fault.dropped("after"))
    with pytest.raises(urllib3.exceptions.ProtocolError):  # no answer at all, no retry
        await asyncio.to_thread(
            urllib3.request, "POST", url, body=body, headers=headers, retries=False
        )
    assert len(google_fake.sent) == 1  # ... but the mail went out

    # Stock httplib2 silently resends a request whose connection closed unanswered.
    google_fake.gmail_faults += [Fault.dropped("after"), Fault.dropped("after")]
    with pytest.raises(ConnectionError):  # http.client.RemoteDisconnected
        await send(google_fake, creds, message())
    assert len(google_fake.sent) == 3
    google_fake.gmail_faults.append(Fault.dropped("after"))
    await send(google_fake, creds, message())  # "succeeds" having sent twice
    assert len(google_fake.sent) == 5
    google_fake.gmail_faults.append(Fault.dropped("before"))
    await send(google_fake, creds, message())
    assert len(google_fake.sent) == 6


async def test_a_request_on_a_connection_idle_too_long_is_reset_unanswered(
    google_fake: GoogleFake,
) -> None:
    creds = await connect(google_fake)
    google_fake.idle_timeout = 0.5
    url = f"{google_fake.api_endpoint}/gmail/v1/users/me/messages/send"
    body = {"raw": base64.urlsafe_b64encode(message()).decode()}
    headers = {"Authorization": f"Bearer {creds.token}"}
    connector = aiohttp.TCPConnector(keepalive_timeout=30)  # keeps what the fake forgets
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.post(url, json=body, headers=headers) as r:
            assert r.status == 200
        async with http.post(url, json=body, headers=headers) as r:  # busy: kept alive
            assert r.status == 200
        await asyncio.sleep(0.7)
        with pytest.raises(aiohttp.ServerDisconnectedError):  # POST: aiohttp never resends
            async with http.post(url, json=body, headers=headers) as r:
                await r.read()
    assert google_fake.idle_resets == 1
    assert len(google_fake.sent) == 2  # the reset request was not taken
    async with (
        aiohttp.ClientSession() as http,  # a fresh connection is fine
        http.post(url, json=body, headers=headers) as r,
    ):
        assert r.status == 200
    assert len(google_fake.sent) == 3


async def test_a_slow_answer_comes_after_the_mail_was_taken(google_fake: GoogleFake) -> None:
    creds = await connect(google_fake)
    google_fake.gmail_faults.append(Fault.slow(0.5))
    started = time.monotonic()
    task = asyncio.create_task(send(google_fake, creds, message()))
    await google_fake.wait_for_mail(1, timeout=5)
    assert not task.done()
    assert (await task)["id"] == google_fake.sent[0].id
    assert time.monotonic() - started >= 0.5


def upload(service: Any, raw: bytes, kind: str) -> HttpRequest:
    media = MediaIoBaseUpload(
        io.BytesIO(raw), mimetype="message/rfc822", resumable=kind == "resumable"
    )
    body: dict[str, Any] | None = (
        None if kind == "media" else {}
    )  # a body (even empty) makes it multipart
    request: HttpRequest = (
        service.users().messages().send(userId="me", body=body, media_body=media)
    )
    return request


async def test_a_media_upload_sends_the_mail(google_fake: GoogleFake) -> None:
    kind = "media"
    creds = await connect(google_fake)
    raw = message(text="Ça va\n--\n")  # 8-bit: what a multipart upload could not carry

    def call() -> dict[str, Any]:
        with gmail(google_fake, creds) as service:
            return run(upload(service, raw, kind))

    def run(request: HttpRequest) -> dict[str, Any]:
        url = urlsplit(request.uri)
        # googleapiclient swaps only the host of api_endpoint into Google's upload URL: the
        # scheme stays https (and a path prefix would be lost).
        assert url.scheme == "https"
        assert (url.netloc, url.path) == (f"127.0.0.1:{google_fake.port}", UPLOAD_PATH)
        assert dict(parse_qsl(url.query))["uploadType"] == kind
        request.uri = urlunsplit(url._replace(scheme="http"))
        result: dict[str, Any] = request.execute(num_retries=0)
        return result

    result = await asyncio.to_thread(call)
    [mail] = google_fake.sent
    assert result["id"] == mail.id
    assert mail.raw == raw
    assert mail.to == ["bob@example.com"]
    assert google_fake.gmail_requests == 1


async def test_a_multipart_upload_of_8bit_mail_fails_in_the_client(
    google_fake: GoogleFake,
) -> None:
    service = gmail(google_fake, http=httplib2.Http())
    with pytest.raises(UnicodeEncodeError):  # before any request is made
        upload(service, message(text="Ça va\n"), "multipart")
    assert google_fake.gmail_requests == 0


async def test_runs_as_a_separate_process() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.google_fake", "--port", "0", "--redirect-uri", REDIRECT,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        base = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base)
        async with aiohttp.ClientSession() as http:
            control = {"auto_consent": "allow", "gmail_faults": [{"status": 429}]}
            async with http.post(f"{base}/_fake/control", json=control) as r:
                state = await r.json()
            secrets_json = state["client_secrets"]
            assert secrets_json["web"]["token_uri"] == f"{base}/token"
            assert secrets_json["web"]["redirect_uris"] == [REDIRECT]
            flow = Flow.from_client_config(secrets_json, scopes=SCOPES, redirect_uri=REDIRECT)
            async with http.get(consent_url(flow), allow_redirects=False) as r:
                answer = await redirected(r)
            await asyncio.to_thread(flow.fetch_token, code=answer["code"])
            remote = GoogleFake(port=int(base.rsplit(":", 1)[1]))  # only for its URLs
            # The strict settings can be set from outside too.
            control = {"rotate_refresh_tokens": True, "omit_scope": True}
            async with http.post(f"{base}/_fake/control", json=control) as r:
                assert r.status == 200
            refresh = {
                "grant_type": "refresh_token",
                "refresh_token": flow.credentials.refresh_token,
            }
            status, body, _ = await token_post(remote, refresh, headers=client_auth(remote))
            assert status == 200
            assert body["refresh_token"] != flow.credentials.refresh_token
            assert "scope" not in body
            async with http.post(
                f"{base}/_fake/control", json={"refuse_client": "invalid_client"}
            ):
                pass
            status, body, _ = await token_post(remote, refresh, headers=client_auth(remote))
            assert (status, body["error"]) == (401, "invalid_client")
            with pytest.raises(HttpError):
                await send(remote, flow.credentials, message())
            await send(remote, flow.credentials, message())
            async with http.get(f"{base}/_fake/sent") as r:
                [sent] = await r.json()
        assert sent["to"] == ["bob@example.com"]
        assert sent["from"] == "alice@gmail.com"
        assert base64.urlsafe_b64decode(sent["raw"] + "==") == message()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
