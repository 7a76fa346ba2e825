"""The operator's check of a Google setup: `mailbridge run --console` as a separate process,
connecting through the consent flow and sending through the Google fake; a kill mid-send; logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import stack
from tests.botproc import BotProcess
from tests.gmail_rig import follow
from tests.google_fake import Fault, GoogleFake

pytestmark = pytest.mark.integration


def write_config(tmp_path: Path, fake: GoogleFake, log_level: str = "info") -> Path:
    config, public = stack.write_config(tmp_path, fake, extra=f'log_level = "{log_level}"')
    fake.redirect_uris = [f"{public}/oauth/callback"]
    return config


async def start(config: Path) -> BotProcess:
    return await BotProcess(config).start()


async def connect(bot: BotProcess, fake: GoogleFake, email: str = "alice@gmail.com") -> None:
    fake.next_account = email
    fake.auto_consent = "allow"
    await bot.say("/connect")
    link = (await bot.expect(r"(http://\S+/connect/\S+)")).group(1)
    status, _, page = await follow(link)
    assert status == 200
    assert f"Connected as {email}" in page
    await bot.expect(rf"Gmail connected as {email}")


async def test_console_connects_and_sends_through_gmail(
    tmp_path: Path, google_fake: GoogleFake
) -> None:
    bot = await start(write_config(tmp_path, google_fake))
    try:
        await connect(bot, google_fake)
        await bot.say("/mail bob@example.com Setup check | It works")
        await bot.expect(r"Mail #1 to bob@example.com, “Setup check”: sent from alice@gmail.com")
    finally:
        assert await bot.stop() == 0
    [mail] = google_fake.sent
    assert (mail.sender, mail.to, mail.subject, mail.text()) == (
        "alice@gmail.com",
        ["bob@example.com"],
        "Setup check",
        "It works",
    )


async def test_killed_mid_send_reports_unknown_after_restart_and_never_resends(
    tmp_path: Path, google_fake: GoogleFake
) -> None:
    config = write_config(tmp_path, google_fake)
    bot = await start(config)
    await connect(bot, google_fake)
    google_fake.gmail_faults.append(Fault(delay=3.0))
    await bot.say("/mail bob@example.com In flight | x")
    await google_fake.wait_for_mail(1, timeout=10)  # Google has taken it, and answers slowly
    await bot.kill()  # SIGKILL while the answer is still on its way
    bot = await start(config)
    try:
        said = await bot.expect(r"Maybe sent: mail #1")
        assert "The bot restarted while sending it" in said.string
        assert "/retry 1" in said.string
        await bot.say("/status")
        await bot.expect(r"Connected as alice@gmail.com")
        assert google_fake.gmail_requests == 1  # no second copy by itself
        await bot.say("/retry 1")
        await bot.expect(r"✅ Mail #1 to bob@example.com, “In flight”: sent")
    finally:
        await bot.stop()
    assert google_fake.gmail_requests == 2
    assert len(google_fake.sent) == 2  # the second only because the user asked


async def test_debug_logs_hold_no_token_code_secret_or_body(
    tmp_path: Path, google_fake: GoogleFake
) -> None:
    bot = await start(write_config(tmp_path, google_fake, log_level="debug"))
    google_fake.rotate_refresh_tokens = True  # the refresh hands out a new refresh token
    google_fake.omit_scope = True
    try:
        await connect(bot, google_fake)
        google_fake.gmail_faults.append(Fault(status=401))  # force a refresh too
        await bot.say("/mail bob@example.com Private | the secret body text 7f3a")
        await bot.expect(r"Mail #1 .*: sent")
        google_fake.add_account("alice.work@gmail.com")
        bot.lines.clear()  # the first link is printed twice (text and button): not that one
        await connect(bot, google_fake, "alice.work@gmail.com")  # revokes the first link
        google_fake.refuse_client = "invalid_client"  # refreshes and revocations refused
        google_fake.expire_access_tokens()
        await bot.say("/mail bob@example.com Refused | x")
        await bot.expect(r"Not sent: .*the bot's operator must fix it")
        await bot.say("/disconnect")
        await bot.expect(r"Disconnected alice.work@gmail.com here, but Google could not confirm")
    finally:
        await bot.stop()
    logs = bot.logs()
    assert " DEBUG " in logs  # the level really was DEBUG
    assert " ERROR bot.google.tokens: " in logs  # the refused client reached the log
    assert google_fake.revoked_tokens  # so did the reconnect's revocation
    secrets = [
        google_fake.client_secret,
        *google_fake._grants,  # refresh tokens
        *google_fake._access,  # access tokens
        *google_fake._codes,  # authorization codes
        "the secret body text 7f3a",
    ]
    for secret in secrets:
        assert secret not in logs
