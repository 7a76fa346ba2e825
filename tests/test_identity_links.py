"""Joining two accounts that each have a Gmail link: one is kept, the other retired at Google
(unless both are the same Google account). In-process, against the Google fake."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.app import App
from bot.config import Config
from bot.core import Core
from tests.chatkit import LOGIN_LINK, ChatKit
from tests.gmail_rig import follow, gmail_config
from tests.google_fake import GoogleFake

pytestmark = pytest.mark.integration
MX = "@alice:example.org"


@dataclass
class Two:
    core: Core
    tg: ChatKit
    mx: ChatKit
    fake: GoogleFake

    async def say(self, chat: ChatKit, text: str, needle: str) -> str:
        start = len(chat.replies)
        user = "1001" if chat is self.tg else MX
        await self.core.handle(chat.message(text, user=user))
        said = await chat.wait_for(lambda s: needle in s.text, 20, start)
        return said.text

    async def connect(self, chat: ChatKit, email: str) -> str:
        self.fake.add_account(email)
        self.fake.next_account = email
        self.fake.auto_consent = "allow"
        link = LOGIN_LINK.search(await self.say(chat, "/connect", "/connect/"))
        assert link
        start = len(chat.replies)
        status, _, _ = await follow(link.group(0))
        assert status == 200
        await chat.wait_for(lambda s: f"Gmail connected as {email}" in s.text, 20, start)
        account = await self.core.accounts.get(
            chat.message("", user="1001" if chat is self.tg else MX).user_key
        )
        assert account is not None
        return account.refresh_token


@pytest.fixture
async def two(tmp_path: Path, google_fake: GoogleFake) -> AsyncIterator[Two]:
    tg, mx = ChatKit("telegram"), ChatKit("matrix")
    async with App.open(gmail_config(tmp_path, google_fake), [tg, mx], env={}) as app:
        yield Two(app.core, tg, mx, google_fake)


async def code_of(two: Two) -> str:
    text = await two.say(two.tg, "/link", "linking code")
    return text.split("linking code is ")[1][:9]


async def test_two_links_keep_the_chosen_one_and_revoke_the_other(two: Two) -> None:
    alice_tg = await two.connect(two.tg, "alice@gmail.com")
    await two.connect(two.mx, "alice.work@gmail.com")
    ask = await two.say(two.mx, f"!link {await code_of(two)}", "Both have a Gmail link")
    assert "alice@gmail.com on Telegram, alice.work@gmail.com on Matrix" in ask
    await two.say(two.mx, "!link join", "say which to keep")  # no choice yet: nothing joined
    joined = await two.say(two.mx, "!link keep matrix", "Joined")
    assert "Mail goes out from alice.work@gmail.com" in joined
    assert "The link to alice@gmail.com was retired" in joined
    assert two.fake.revoked_tokens == [alice_tg]
    said = await two.say(two.tg, "/mail bob@example.com Hi | x", "Mail #1")
    assert "sent from alice.work@gmail.com" in said
    # Unlinking: the kept link goes back to Matrix, which made it.
    apart = await two.say(two.tg, "/unlink", "Separated")
    assert "stays with Matrix user @alice:example.org" in apart
    assert "No Gmail is connected" in await two.say(two.tg, "/status", "Gmail")
    assert "alice.work@gmail.com" in await two.say(two.mx, "!status", "Connected")


async def test_the_same_google_account_on_both_keeps_its_one_grant(two: Two) -> None:
    await two.connect(two.tg, "alice@gmail.com")
    await two.connect(two.mx, "alice@gmail.com")
    await two.say(two.mx, f"!link {await code_of(two)}", "Both have a Gmail link")
    await two.say(two.mx, "!link keep telegram", "Joined")
    assert two.fake.revoked_tokens == []  # revoking would end the kept link too
    said = await two.say(two.mx, "!mail bob@example.com Hi | x", "Mail #1")
    assert "sent from alice@gmail.com" in said


async def test_both_accounts_must_be_allowed(tmp_path: Path, google_fake: GoogleFake) -> None:
    tg, mx = ChatKit("telegram"), ChatKit("matrix")

    def allowing(*users: str) -> Config:
        bot = {"database": "bot.db", "allowed_users": list(users)}
        return gmail_config(tmp_path, google_fake, bot=bot)

    async with App.open(allowing("telegram:1001"), [tg, mx], env={}) as app:
        two = Two(app.core, tg, mx, google_fake)
        code = await code_of(two)
        said = await two.say(mx, f"!link {code}", "not on its list of users")
        assert "Join" not in said
        first = await code_of(two)  # made while Telegram is allowed
    # The operator then allows only the Matrix account (a restart): the code joins nothing.
    async with App.open(allowing(f"matrix:{MX}"), [tg, mx], env={}) as app:
        two = Two(app.core, tg, mx, google_fake)
        await two.say(mx, f"!link {first}", "may not use this bot")
        assert await app.core.ctx.people.members(f"matrix:{MX}") == [f"matrix:{MX}"]
        assert await app.core.ctx.people.members("telegram:1001") == ["telegram:1001"]
