"""Link health (issue 17): the background check tells owners of ended and ending links in their
direct chat, once, and keeps to its rate of token requests; /status shows the link's health."""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import App
from bot.config import Config
from bot.link_check import LinkCheck
from tests.chatkit import ChatKit
from tests.gmail_rig import GmailRig, connect, google_section
from tests.google_fake import GoogleFake
from tests.running import bot_config, web_section

pytestmark = pytest.mark.integration

DAY = 86400.0
ENDED = "Google no longer accepts the link to alice@gmail.com"


class Clock:
    """The bot's time, moved by the test."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def health_config(tmp_path: Path, fake: GoogleFake, **google: Any) -> Config:
    web = web_section()
    section = google_section(tmp_path, fake, web) | {"link_check_interval": 1} | google
    return bot_config(tmp_path, web=web, google=section)


async def open_rig(
    config: Config, fake: GoogleFake, clock: Clock
) -> AsyncIterator[tuple[GmailRig, LinkCheck]]:
    chat = ChatKit("telegram")
    async with App.open(config, [chat], env={}, clock=clock) as app:
        assert app.link_check is not None
        yield GmailRig(app.core, chat, fake, f"http://{config.web.listen}"), app.link_check


async def passes(check: LinkCheck, more: int = 2, timeout: float = 20) -> None:
    """Wait until the check has gone over every link ``more`` times again."""
    target = check.passes + more
    async with asyncio.timeout(timeout):
        while check.passes < target:
            check.passed.clear()
            await check.passed.wait()


def notices(rig: GmailRig, needle: str) -> list[str]:
    return [s.room for s in rig.chat.replies if needle in s.text]


async def test_an_ended_link_is_told_once_in_the_direct_chat_before_any_mail(
    tmp_path: Path, google_fake: GoogleFake
) -> None:
    config = health_config(tmp_path, google_fake)
    async for rig, check in open_rig(config, google_fake, Clock()):
        await connect(rig)
        await rig.say("/alias list", room="group-1", direct=False)  # the user is in a group too
        account = await rig.core.accounts.get("telegram:1001")
        assert account is not None
        google_fake.revoke_refresh_token(account.refresh_token)  # say, the password changed
        said = await rig.wait(ENDED)
        assert said.room == "dm-1001"
        assert "revoked" in said.text
        assert "6 months" in said.text
        assert "7 days" in said.text
        assert "too many links" in said.text
        assert "/connect" in said.text
        assert google_fake.gmail_requests == 0  # before they sent anything
        await passes(check)
        assert notices(rig, ENDED) == ["dm-1001"]  # once, not at every check
        await rig.say("/status")
        assert "No Gmail is connected" in (await rig.wait("No Gmail")).text
    async for rig, check in open_rig(config, google_fake, Clock()):  # a restart
        await passes(check)
        assert notices(rig, ENDED) == []


async def test_a_confirmed_link_shows_when_google_last_accepted_it(
    tmp_path: Path, google_fake: GoogleFake
) -> None:
    clock = Clock()
    async for rig, check in open_rig(health_config(tmp_path, google_fake), google_fake, clock):
        await connect(rig)
        clock.offset = 3 * 3600.0
        await passes(check)
        await rig.say("/status")
        text = (await rig.wait("Connected as")).text
        shown = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(clock()))
        assert f"Google last confirmed the link: {shown[:-6]}" in text  # this minute or so
        assert "It ends" not in text  # nothing is known of its end


async def test_testing_mode_warns_a_day_before_the_7_days_end(
    tmp_path: Path, google_fake: GoogleFake
) -> None:
    clock = Clock()
    config = health_config(tmp_path, google_fake, testing_mode=True)
    async for rig, check in open_rig(config, google_fake, clock):
        await connect(rig)
        await passes(check)
        assert notices(rig, "ends on") == []  # 7 days left: nothing to say yet
        clock.offset = 6 * DAY - 3600  # 25 hours left
        await passes(check)
        assert notices(rig, "ends on") == []
        clock.offset = 6 * DAY + 3600  # 23 hours left
        said = await rig.wait("ends on")
        assert said.room == "dm-1001"
        assert "Testing" in said.text
        assert "/connect" in said.text
        await passes(check)
        assert notices(rig, "ends on") == ["dm-1001"]  # once per link
        await rig.say("/status")
        assert "It ends " in (await rig.wait("Connected as")).text


async def test_refresh_token_expires_in_warns_a_day_before(
    tmp_path: Path, google_fake: GoogleFake
) -> None:
    clock = Clock()
    google_fake.refresh_token_expires_in = int(3 * DAY)  # the user granted access for 3 days
    google_fake.clock = clock  # Google's time moves with the bot's
    config = health_config(tmp_path, google_fake)
    async for rig, check in open_rig(config, google_fake, clock):
        await connect(rig)
        ends = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 3 * DAY))
        await rig.say("/status")
        assert f"It ends {ends}" in (await rig.wait("Connected as")).text  # known at consent
        await passes(check)
        assert notices(rig, "ends on") == []
        clock.offset = 2 * DAY + 3600
        said = await rig.wait("ends on")
        assert said.room == "dm-1001"
        assert "limited time" in said.text
        assert "/connect" in said.text
        await passes(check)
        assert notices(rig, "ends on") == ["dm-1001"]


def busiest_second(times: list[float]) -> int:
    """Return the most requests in any one-second window."""
    times = sorted(times)
    return max(bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times))


async def add_links(tmp_path: Path, fake: GoogleFake, count: int) -> None:
    """Store ``count`` links Google accepts, before any check runs."""
    config = health_config(tmp_path, fake, link_check_interval=0)  # 0: no check
    async with App.open(config, [ChatKit("telegram")], serve_web=False, env={}) as app:
        assert app.link_check is not None
        assert app.link_check.interval == 0
        await app.db.execute("BEGIN")
        for n in range(count):
            email = f"user{n}@gmail.com"
            await app.core.accounts.save(f"telegram:{n}", email, fake.grant(email), ("openid",))
        await app.db.execute("COMMIT")


async def test_10000_links_stay_within_the_rate_of_token_requests(
    tmp_path: Path, google_fake: GoogleFake
) -> None:
    # Spread over a minute, 10,000 links would be 167 a second; the rate caps them at 100.
    await add_links(tmp_path, google_fake, 10_000)
    config = health_config(
        tmp_path, google_fake, link_check_interval=60, link_checks_per_minute=6000
    )
    async with App.open(config, [ChatKit("telegram")], env={}):
        await asyncio.sleep(12)  # the rate is what is measured: no state to wait for
        times = list(google_fake.token_request_times)
    assert busiest_second(times) <= 100 + 1
    assert len(times) >= 400  # a steady trickle, not stalled (1,200 if the machine keeps up)


async def test_a_pass_is_spread_evenly_over_the_interval(
    tmp_path: Path, google_fake: GoogleFake
) -> None:
    await add_links(tmp_path, google_fake, 60)
    config = health_config(
        tmp_path, google_fake, link_check_interval=3, link_checks_per_minute=6000
    )
    async with App.open(config, [ChatKit("telegram")], env={}) as app:
        assert app.link_check is not None
        await passes(app.link_check, 1)
        times = google_fake.token_request_times[:60]
    assert len(times) == 60
    assert times[-1] - times[0] >= 2.5  # spread over the 3 s, not a burst
    assert busiest_second(times) <= 25  # 20 a second when even
