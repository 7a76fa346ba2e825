"""Google's token and revocation endpoints as a strict server has them, through the real bot:
client authentication, rotated refresh tokens, a refused client, an absent scope, reconnects."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.google.id_token import address_from
from tests.gmail_rig import GmailRig, connect, follow, gmail_config, login_link, start_gmail_rig
from tests.google_fake import GoogleFake

pytestmark = pytest.mark.integration

CLIENT_FAULT = (
    "Google refused this bot's own sign-in credentials (its Google setup is wrong, not your "
    "account), so nothing was sent; the bot's operator must fix it."
)


@pytest.fixture
async def rig(tmp_path: Path, google_fake: GoogleFake) -> AsyncIterator[GmailRig]:
    async for r in start_gmail_rig(gmail_config(tmp_path, google_fake), google_fake):
        yield r


async def stored_token(rig: GmailRig, user: str = "1001") -> str:
    account = await rig.core.accounts.get(f"telegram:{user}")
    assert account is not None
    return account.refresh_token


async def mail(rig: GmailRig, n: int, subject: str = "Hi") -> str:
    start = len(rig.chat.replies)
    await rig.say(f"/mail bob@example.com {subject} {n} | x")
    return (await rig.chat.wait_for(lambda s: f"#{n}" in s.text, 30, start)).text


def secrets_of(fake: GoogleFake) -> list[str]:
    return [fake.client_secret, *fake._grants, *fake._access, *fake._codes]


# -- revocation (RFC 7009) ------------------------------------------------------------------


async def test_disconnect_revokes_with_client_authentication(rig: GmailRig) -> None:
    await connect(rig)
    token = await stored_token(rig)
    await rig.say("/disconnect")
    said = await rig.wait("Disconnected")
    assert said.text == "Disconnected alice@gmail.com; Google has revoked this bot's access."
    assert rig.fake.revoked_tokens == [token]


async def test_a_refused_revocation_is_logged_with_its_error_never_the_token(
    rig: GmailRig, caplog: pytest.LogCaptureFixture
) -> None:
    await connect(rig)
    token = await stored_token(rig)
    rig.fake.refuse_client = "invalid_client"  # say, the secret was rotated at Google
    with caplog.at_level(logging.DEBUG):
        await rig.say("/disconnect")
        said = await rig.wait("Disconnected")
    assert "Google could not confirm the revocation" in said.text
    assert rig.fake.revoked_tokens == []
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("invalid_client" in r.getMessage() for r in warned)
    for secret in [token, *secrets_of(rig.fake)]:
        assert secret not in caplog.text


# -- rotation (RFC 6749 section 6) ----------------------------------------------------------


async def test_a_rotated_refresh_token_is_stored_and_used(rig: GmailRig) -> None:
    rig.fake.rotate_refresh_tokens = True
    await connect(rig)
    first = await stored_token(rig)
    for n in (1, 2, 3):  # each send after an expiry needs a refresh, each refresh rotates
        rig.fake.expire_access_tokens()
        assert "sent from alice@gmail.com" in await mail(rig, n)
    assert rig.fake.token_requests.count("refresh_token") == 3
    current = await stored_token(rig)
    assert current != first
    assert rig.fake._grants[current].refresh_token == current  # the live one, stored
    assert len(rig.fake.sent) == 3


# -- a refused client (RFC 6749 section 5.2) ------------------------------------------------


@pytest.mark.parametrize("code", ["invalid_client", "unauthorized_client"])
async def test_a_refused_client_is_the_operators_fault_told_once(
    rig: GmailRig, caplog: pytest.LogCaptureFixture, code: Any
) -> None:
    await connect(rig)
    rig.fake.refuse_client = code
    with caplog.at_level(logging.DEBUG):
        for n in (1, 2):
            rig.fake.expire_access_tokens()  # Gmail says 401: the bot must refresh
            t0 = time.monotonic()
            said = await mail(rig, n)
            assert said.endswith(CLIENT_FAULT)
            assert "Not sent" in said
            assert time.monotonic() - t0 < 5  # not retried (a retry waits 1 s, 2 s, 4 s)
        assert rig.fake.token_requests.count("refresh_token") == 2  # one try per mail
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1  # once, not per mail
        assert code in errors[0].getMessage()
        assert "client_secret" in errors[0].getMessage()  # what the operator must fix
        rig.fake.refuse_client = None  # the operator fixed it
        assert "sent from" in await mail(rig, 3, "Fixed")
        rig.fake.refuse_client = code  # broken again: told again, once
        rig.fake.expire_access_tokens()
        assert (await mail(rig, 4)).endswith(CLIENT_FAULT)
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 2
    assert await rig.core.accounts.get("telegram:1001") is not None  # the link is fine
    assert [m.subject for m in rig.fake.sent] == ["Fixed 3"]
    for secret in secrets_of(rig.fake):
        assert secret not in caplog.text


async def test_a_deleted_client_is_the_operators_fault_too(
    rig: GmailRig, caplog: pytest.LogCaptureFixture
) -> None:
    await connect(rig)
    rig.fake.token_faults.append("deleted_client")  # Google's word for it, with a 401
    rig.fake.expire_access_tokens()
    with caplog.at_level(logging.ERROR):
        assert (await mail(rig, 1)).endswith(CLIENT_FAULT)
    assert "deleted_client" in caplog.text
    assert rig.fake.token_requests.count("refresh_token") == 1


async def test_a_refused_client_at_the_code_exchange_says_whose_fault(rig: GmailRig) -> None:
    start = len(rig.chat.replies)
    link = await login_link(rig)
    rig.fake.auto_consent = "allow"
    rig.fake.refuse_client = "invalid_client"
    status, _, page = await follow(link)
    assert status == 502
    assert "The bot's Google setup is broken" in page
    assert "not your account's fault" in page
    said = await rig.wait("Gmail was not connected", start)
    assert "the bot's operator must fix its Google setup" in said.text
    assert await rig.core.accounts.get("telegram:1001") is None


# -- scope left out (RFC 6749 section 5.1) --------------------------------------------------


async def test_a_token_response_without_scope_means_what_was_asked(rig: GmailRig) -> None:
    rig.fake.omit_scope = True
    await connect(rig)  # asserts "Connected as alice@gmail.com"
    assert "sent from alice@gmail.com" in await mail(rig, 1)
    rig.fake.auto_consent = "untick"  # a scope that differs is still there, and checked
    rig.fake.next_account = "carol@gmail.com"
    start = len(rig.chat.replies)
    status, _, page = await follow(await login_link(rig, user="2002"))
    assert status == 403
    assert "'Send email on your behalf' was not ticked" in page
    await rig.wait("Gmail was not connected", start)


# -- reconnecting (issue 17) ----------------------------------------------------------------


async def test_reconnecting_another_account_revokes_the_old_token(rig: GmailRig) -> None:
    await connect(rig, email="alice@gmail.com")
    old = await stored_token(rig)
    await connect(rig, email="alice.work@gmail.com")
    assert rig.fake.revoked_tokens == [old]  # after the new one was stored
    assert "sent from alice.work@gmail.com" in await mail(rig, 1)


async def test_reconnecting_the_same_account_keeps_the_new_link_alive(rig: GmailRig) -> None:
    await connect(rig)
    old = await stored_token(rig)
    await connect(rig)
    # Google ends the app's whole grant for an account at any revocation: revoking the old
    # token would end the new link too.
    assert rig.fake.revoked_tokens == []
    assert await stored_token(rig) != old
    rig.fake.expire_access_tokens()
    assert "sent from alice@gmail.com" in await mail(rig, 1)


# -- the ID token's claims (OpenID Connect Core 3.1.3.7) -------------------------------------

CLIENT = "1234-fake.apps.googleusercontent.com"


def jwt(**changes: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": "https://accounts.google.com",
        "aud": CLIENT,
        "azp": CLIENT,
        "email": "alice@gmail.com",
        "iat": now,
        "exp": now + 3600,
    } | changes
    claims = {k: v for k, v in claims.items() if v is not None}

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


@pytest.mark.parametrize(
    ("changes", "ok"),
    [
        ({}, True),
        ({"iss": "accounts.google.com"}, True),
        ({"aud": [CLIENT]}, True),
        ({"aud": [CLIENT, CLIENT], "azp": None}, False),  # several audiences: azp required
        ({"aud": [CLIENT, "other.apps.googleusercontent.com"]}, False),  # an untrusted one
        ({"aud": "other.apps.googleusercontent.com"}, False),
        ({"azp": "other.apps.googleusercontent.com"}, False),
        ({"azp": None}, True),
        ({"iss": "https://evil.example"}, False),
        ({"exp": int(time.time()) - 3600}, False),
        ({"exp": None}, False),
        ({"iat": None}, False),
        ({"iat": "yesterday"}, False),
        ({"email": None}, False),
    ],
)
def test_id_token_claims_are_checked(changes: dict[str, Any], ok: bool) -> None:
    assert address_from(jwt(**changes), CLIENT) == ("alice@gmail.com" if ok else None)
