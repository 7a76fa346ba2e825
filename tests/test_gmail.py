"""Connecting Gmail and sending through it, against the Google fake over real HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import stat
import time
from collections.abc import AsyncIterator
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from bot.google.gmail_send import IDLE_SECONDS
from bot.store.vault import VERSION
from tests.botproc import free_port
from tests.gmail_rig import GmailRig, connect, follow, gmail_config, login_link, start_gmail_rig
from tests.google_fake import GMAIL_SEND, Fault, GoogleFake

pytestmark = pytest.mark.integration


@pytest.fixture
async def rig(tmp_path: Path, google_fake: GoogleFake) -> AsyncIterator[GmailRig]:
    async for r in start_gmail_rig(gmail_config(tmp_path, google_fake), google_fake):
        yield r


async def test_connect_then_mail_goes_out_from_the_connected_address(rig: GmailRig) -> None:
    link = await login_link(rig)
    assert link.startswith(f"{rig.base_url}/connect/")
    async with aiohttp.ClientSession() as http, http.get(link) as page:
        text = await page.text()
        assert "You are connecting Gmail to Telegram user Alice (1001)" in text
        assert page.headers["X-Frame-Options"] == "DENY"
        assert page.headers["Referrer-Policy"] == "no-referrer"
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert rig.fake.auth_requests == []  # opening the page (a link preview) changes nothing
    rig.fake.auto_consent = "allow"
    status, _, text = await follow(link)
    assert status == 200
    assert "Connected as alice@gmail.com" in text
    asked = rig.fake.auth_requests[0]
    assert asked["access_type"] == "offline"
    assert asked["prompt"] == "consent"
    assert asked["include_granted_scopes"] == "true"
    assert asked["code_challenge_method"] == "S256"
    assert set(asked["scope"].split()) == {"openid", "email", GMAIL_SEND}
    await rig.wait("Gmail connected as alice@gmail.com")
    await rig.say("/mail bob@example.com,cc:carol@example.com Lunch? | Free on Friday?")
    said = await rig.wait("Mail #1")
    assert "sent from alice@gmail.com" in said.text
    [mail] = rig.fake.sent
    assert mail.sender == "alice@gmail.com"
    assert mail.to == ["bob@example.com"]
    assert mail.cc == ["carol@example.com"]
    assert mail.subject == "Lunch?"
    assert mail.text() == "Free on Friday?"
    await rig.say("/status")
    status_text = (await rig.wait("Connected as")).text
    assert status_text.startswith("Connected as alice@gmail.com since ")
    assert "Last mail sent: nothing yet" not in status_text


async def test_mail_before_connecting_says_how(rig: GmailRig) -> None:
    await rig.say("/mail bob@example.com Hi | x")
    said = await rig.wait("not connected")
    assert said.text == (
        "Your Gmail is not connected yet. "
        "Send /connect in a direct chat with me to link it (once)."
    )
    assert rig.fake.gmail_requests == 0


async def callback_url(rig: GmailRig, link: str) -> str:
    """Go through our page and the fake consent screen, stopping before the callback."""
    rig.fake.auto_consent = "allow"
    async with aiohttp.ClientSession() as http:
        async with http.post(link, allow_redirects=False) as ours:
            google = ours.headers["Location"]
        async with http.get(google, allow_redirects=False) as consent:
            return consent.headers["Location"]


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        return r.status, unescape(await r.text())


async def accounts(rig: GmailRig) -> int:
    [(count,)] = await rig.core.db.fetchall("SELECT count(*) FROM accounts")
    return int(count)


async def test_replayed_unknown_and_expired_states_are_refused(rig: GmailRig) -> None:
    callback = await callback_url(rig, await login_link(rig))
    status, text = await get(callback)
    assert status == 200
    assert "Connected as alice@gmail.com" in text
    status, text = await get(callback)  # the same callback again
    assert status == 409
    assert "Each login link works once. Send /connect to the bot for a new one." in text
    query = parse_qs(urlsplit(callback).query)
    status, text = await get(f"{rig.base_url}/oauth/callback?state=nope&code={query['code'][0]}")
    assert status == 404
    assert "Send /connect to the bot for a new one" in text
    # An expired link: its page and its callback both explain.
    await rig.core.accounts.delete("telegram:1001")
    link = await login_link(rig)
    callback = await callback_url(rig, link)
    await rig.core.db.execute("UPDATE pending_logins SET expires_at = ?", (time.time() - 1,))
    for url in (link, callback):
        status, text = await get(url)
        assert status == 410
        assert "Login links work for 10 minutes. Send /connect to the bot for a new one." in text
    assert await accounts(rig) == 0


async def test_a_code_with_another_links_verifier_is_refused(rig: GmailRig) -> None:
    mine = await callback_url(rig, await login_link(rig, user="1001"))
    theirs = await callback_url(rig, await login_link(rig, user="2002"))
    code = parse_qs(urlsplit(mine).query)["code"][0]
    state = parse_qs(urlsplit(theirs).query)["state"][0]
    start = len(rig.chat.replies)
    status, text = await get(f"{rig.base_url}/oauth/callback?state={state}&code={code}")
    assert status == 400
    assert "Google refused to complete this login, so nothing was linked." in text
    said = await rig.wait("Gmail was not connected", start)
    assert said.room == "dm-2002"
    assert await accounts(rig) == 0


@pytest.mark.parametrize(
    ("decision", "page", "chat"),
    [
        ("deny", "you did not allow access on Google's page", "you did not allow access"),
        ("untick", "'Send email on your behalf' was not ticked", "was not ticked"),
    ],
)
async def test_denied_or_unticked_consent_leaves_the_user_unconnected(
    rig: GmailRig, decision: str, page: str, chat: str
) -> None:
    rig.fake.auto_consent = decision
    start = len(rig.chat.replies)
    link = await login_link(rig)
    status, _, text = await follow(link)
    assert 400 <= status < 500
    assert page in text
    said = await rig.wait("Gmail was not connected", start)
    assert chat in said.text
    assert await accounts(rig) == 0


async def test_429_twice_then_success_sends_once(rig: GmailRig) -> None:
    await connect(rig)
    rig.fake.gmail_faults += [Fault(status=429, retry_after=1), Fault(status=429)]
    await rig.say("/mail bob@example.com Busy | x")
    said = await rig.wait("Mail #1", timeout=30)
    assert "sent from alice@gmail.com" in said.text
    assert len(rig.fake.sent) == 1
    assert rig.fake.gmail_requests == 3
    assert len([r for r in rig.chat.replies if "Mail #1" in r.text]) == 1


@pytest.mark.parametrize("reason", ["rateLimitExceeded", "userRateLimitExceeded"])
async def test_403_rate_limit_reasons_are_retried(rig: GmailRig, reason: str) -> None:
    await connect(rig)
    rig.fake.gmail_faults.append(Fault(status=403, reason=reason))
    await rig.say("/mail bob@example.com Busy | x")
    assert "sent from" in (await rig.wait("Mail #1", timeout=30)).text
    assert len(rig.fake.sent) == 1


async def test_daily_limit_fails_at_once_with_the_reason(rig: GmailRig) -> None:
    await connect(rig)
    rig.fake.gmail_faults.append(Fault(status=403, reason="dailyLimitExceeded"))
    await rig.say("/mail bob@example.com Busy | x")
    said = await rig.wait("Not sent")
    assert "daily sending limit" in said.text
    assert rig.fake.gmail_requests == 1


async def test_401_once_refreshes_and_succeeds(rig: GmailRig) -> None:
    await connect(rig)
    refreshes = rig.fake.token_requests.count("refresh_token")
    rig.fake.gmail_faults.append(Fault(status=401))
    await rig.say("/mail bob@example.com Hi | x")
    assert "sent from" in (await rig.wait("Mail #1")).text
    assert rig.fake.token_requests.count("refresh_token") == refreshes + 1
    assert len(rig.fake.sent) == 1


async def test_access_token_is_kept_from_the_consent_and_between_sends(rig: GmailRig) -> None:
    await connect(rig)
    for n in range(3):
        start = len(rig.chat.replies)
        await rig.say(f"/mail bob@example.com Hi {n} | x")
        await rig.wait(f"Mail #{n + 1}", start)
    assert rig.fake.token_requests.count("refresh_token") == 0
    rig.fake.expire_access_tokens()  # Google says 401: refreshed once, then kept again
    for n in range(3, 5):
        start = len(rig.chat.replies)
        await rig.say(f"/mail bob@example.com Hi {n} | x")
        await rig.wait(f"Mail #{n + 1}", start)
    assert rig.fake.token_requests.count("refresh_token") == 1
    assert len(rig.fake.sent) == 5


@pytest.mark.parametrize(
    "fault",
    [Fault(status=500), Fault(status=503), Fault(drop="after")],
    ids=["500", "503", "dropped-after-request"],
)
async def test_unknown_outcome_is_reported_and_never_resent(rig: GmailRig, fault: Fault) -> None:
    await connect(rig)
    rig.fake.gmail_faults.append(fault)
    await rig.say("/mail bob@example.com Maybe | x")
    said = await rig.wait("Maybe sent")
    assert "Check your Sent folder; if it is not there, send it again with /retry 1." in said.text
    await rig.core.outbox.drain()
    assert rig.fake.gmail_requests == 1  # nothing resent by itself
    await rig.say("/retry 1")
    await rig.wait("Sending mail #1")
    assert "sent from" in (await rig.wait("✅ Mail #1")).text
    assert rig.fake.gmail_requests == 2


async def test_a_send_after_an_idle_spell_is_sent_not_maybe_sent(rig: GmailRig) -> None:
    # Gmail (or a middlebox) forgets connections idle a little longer than the bot keeps
    # them; a request on a forgotten one would be reset unanswered, "maybe sent".
    await connect(rig)
    rig.fake.idle_timeout = IDLE_SECONDS + 1.0
    await rig.say("/mail bob@example.com First | x")
    assert (await rig.wait("Mail #1")).text.startswith("✅ Mail #1")
    await asyncio.sleep(rig.fake.idle_timeout + 0.5)  # the idle spell itself
    start = len(rig.chat.replies)
    await rig.say("/mail bob@example.com Second | x")
    said = await rig.chat.wait_for(lambda s: "ail #2" in s.text, 20, start)
    assert said.text.startswith("✅ Mail #2"), said.text  # not "⚠️ Maybe sent: mail #2"
    assert [m.subject for m in rig.fake.sent] == ["First", "Second"]
    assert rig.fake.idle_resets == 0


async def test_gmail_unreachable_is_retried_then_failed_with_nothing_sent(
    tmp_path: Path, google_fake: GoogleFake
) -> None:
    config = gmail_config(tmp_path, google_fake)
    closed = free_port()  # nothing listens here: every connection is refused before sending
    google = dataclasses.replace(config.google, api_endpoint=f"http://127.0.0.1:{closed}")
    async for rig in start_gmail_rig(dataclasses.replace(config, google=google), google_fake):
        await connect(rig)
        t0 = time.monotonic()
        await rig.say("/mail bob@example.com Offline | x")
        said = await rig.wait("Not sent", timeout=30)
        assert "Gmail could not be reached, so nothing was sent" in said.text
        assert time.monotonic() - t0 > 4  # it did wait and try again (1 s, 2 s, 4 s)
        await rig.say("/history")
        assert "failed" in (await rig.wait("Your last mails")).text


async def test_invalid_grant_removes_the_link_and_says_so(rig: GmailRig) -> None:
    await connect(rig)
    rig.fake.revoke_all("alice@gmail.com")
    await rig.say("/mail bob@example.com Hi | x")
    said = await rig.wait("Not sent")
    assert "Google no longer accepts the link to alice@gmail.com" in said.text
    assert "Send /connect to link it again" in said.text
    assert "Testing mode" in said.text
    assert await accounts(rig) == 0
    assert rig.fake.sent == []


async def test_disconnect_revokes_at_google(rig: GmailRig) -> None:
    await connect(rig)
    await rig.say("/disconnect")
    said = await rig.wait("Disconnected")
    assert said.text == "Disconnected alice@gmail.com; Google has revoked this bot's access."
    assert rig.fake.revoked == ["alice@gmail.com"]
    assert await accounts(rig) == 0


async def test_group_connect_never_posts_the_link_in_the_group(rig: GmailRig) -> None:
    await rig.say("/help", user="1001")  # Alice has a direct chat with the bot
    await rig.say("/connect", user="1001", room="-100", direct=False)
    in_group = [r.text for r in rig.chat.replies if r.room == "-100"]
    assert in_group == ["I sent you a direct message with your login link."]
    direct = [r.text for r in rig.chat.replies if r.room == "dm-1001" and "/connect/" in r.text]
    assert len(direct) == 1
    # Someone who never wrote to the bot privately gets no link at all in the group.
    await rig.say("/connect", user="3003", room="-100", direct=False)
    assert rig.chat.replies[-1].text.startswith("Send /connect to me in a direct chat")
    assert not any("/connect/" in r.text for r in rig.chat.replies if r.room == "-100")


async def test_secrets_at_rest_are_encrypted_and_files_are_0600(
    rig: GmailRig, tmp_path: Path
) -> None:
    await connect(rig)
    await rig.say("/mail bob@example.com Hi | a body that must not be stored in clear")
    await rig.wait("Mail #1")
    grant = next(iter(rig.fake._grants))
    database = tmp_path / "bot.db"
    await rig.core.db.execute("PRAGMA wal_checkpoint(FULL)")
    blob = await asyncio.to_thread(
        lambda: b"".join(p.read_bytes() for p in tmp_path.glob("bot.db*") if p.suffix != ".key")
    )
    assert grant.encode() not in blob
    assert b"ya29." not in blob
    assert b"must not be stored" not in blob
    for path in (database, tmp_path / "bot.db.key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    row = sqlite3.connect(database).execute("SELECT refresh_token FROM accounts").fetchone()
    assert row[0].startswith(VERSION)  # sealed with AES-GCM
