"""The consent pages in a real browser: headless Chromium clicks through as a person would."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser

from tests.gmail_rig import GmailRig, gmail_config, login_link, start_gmail_rig
from tests.google_fake import GoogleFake

pytestmark = pytest.mark.browser


@pytest.fixture
async def rig(tmp_path: Path, google_fake: GoogleFake) -> AsyncIterator[GmailRig]:
    async for r in start_gmail_rig(gmail_config(tmp_path, google_fake), google_fake):
        yield r


async def test_clicking_through_connects_the_account(
    rig: GmailRig,
    browser: Browser,
    tmp_path: Path,
) -> None:
    link = await login_link(rig)
    page = await browser.new_page()
    await page.goto(link)
    assert await page.title() == "Connect your Gmail - mailbridge"
    assert "You are connecting Gmail to Telegram user Alice (1001)." in await page.inner_text(
        "body"
    )
    await page.click("text=Continue to Google")
    await page.wait_for_url(f"{rig.fake.base_url}/**")
    assert await page.inner_text("h1") == "alice@gmail.com"  # Google's consent screen
    await page.click("text=Continue")
    await page.wait_for_url(f"{rig.base_url}/oauth/callback**")
    assert await page.inner_text("h1") == "Connected as alice@gmail.com"
    await page.screenshot(path=str(tmp_path / "connected.png"))
    await rig.wait("Gmail connected as alice@gmail.com")


async def test_unticking_send_in_the_browser_explains_what_to_tick(
    rig: GmailRig,
    browser: Browser,
) -> None:
    page = await browser.new_page()
    await page.goto(await login_link(rig))
    await page.click("text=Continue to Google")
    await page.uncheck("input[value='https://www.googleapis.com/auth/gmail.send']")
    await page.click("text=Continue")
    await page.wait_for_url(f"{rig.base_url}/oauth/callback**")
    assert await page.inner_text("h1") == "Sending was not allowed"
    assert "Send /connect to the bot and tick that box" in await page.inner_text("body")


async def test_an_expired_link_explains_itself(rig: GmailRig, browser: Browser) -> None:
    link = await login_link(rig)
    await rig.core.db.execute("UPDATE pending_logins SET expires_at = ?", (time.time() - 1,))
    page = await browser.new_page()
    response = await page.goto(link)
    assert response is not None
    assert response.status == 410
    assert await page.inner_text("h1") == "This link has expired"
    assert "Send /connect to the bot for a new one." in await page.inner_text("body")
    assert await page.locator("button").count() == 0
