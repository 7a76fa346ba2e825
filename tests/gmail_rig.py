"""A core on the real Gmail backend and consent flow, against the Google fake, in-process."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any

import aiohttp

from bot.app import App
from bot.config import Config
from bot.core import Core
from tests.chatkit import LOGIN_LINK, ChatKit, Said
from tests.google_fake import GoogleFake
from tests.running import bot_config


def google_section(tmp_path: Path, fake: GoogleFake, web: dict[str, str]) -> dict[str, str]:
    """A [google] section with the client JSON as Google Cloud Console downloads it."""
    path = tmp_path / "client_secret.json"
    path.write_text(json.dumps(fake.client_secrets_json([web["public_url"] + "/oauth/callback"])))
    return {
        "client_secrets_file": str(path),
        "revoke_uri": fake.revoke_uri,
        "api_endpoint": fake.api_endpoint,
    }


def gmail_config(tmp_path: Path, fake: GoogleFake, **sections: dict[str, Any]) -> Config:
    from tests.running import web_section

    web = sections.pop("web", None) or web_section()
    return bot_config(tmp_path, web=web, google=google_section(tmp_path, fake, web), **sections)


@dataclass
class GmailRig:
    core: Core
    chat: ChatKit
    fake: GoogleFake
    base_url: str

    async def say(self, text: str, **kw: Any) -> None:
        await self.core.handle(self.chat.message(text, **kw))

    async def wait(self, needle: str, start: int = 0, timeout: float = 20) -> Said:
        return await self.chat.wait_for(lambda s: needle in s.text, timeout, start)


async def start_gmail_rig(config: Config, fake: GoogleFake) -> AsyncIterator[GmailRig]:
    chat = ChatKit("telegram")
    async with App.open(config, [chat], env={}) as app:
        yield GmailRig(app.core, chat, fake, f"http://{config.web.listen}")


async def login_link(rig: GmailRig, user: str = "1001", **kw: Any) -> str:
    start = len(rig.chat.replies)
    await rig.say("/connect", user=user, **kw)
    said = await rig.chat.wait_for(lambda s: "/connect/" in s.text, start=start)
    match = LOGIN_LINK.search(said.text)
    assert match, said.text
    return match.group(0)


async def follow(link: str) -> tuple[int, str, str]:
    """Open the link's page and press its button, following redirects like a browser;
    return the final status, URL and page text."""
    async with aiohttp.ClientSession() as http:
        async with http.get(link) as page:
            assert page.status == 200, await page.text()
        async with http.post(link) as final:
            return final.status, str(final.url), unescape(await final.text())


async def connect(rig: GmailRig, user: str = "1001", email: str = "alice@gmail.com") -> None:
    """Link ``user`` to ``email`` through the whole consent flow."""
    rig.fake.add_account(email)
    rig.fake.next_account = email
    rig.fake.auto_consent = "allow"
    start = len(rig.chat.replies)
    status, _, text = await follow(await login_link(rig, user))
    assert status == 200, text
    await rig.chat.wait_for(lambda s: f"Gmail connected as {email}" in s.text, start=start)
