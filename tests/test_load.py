"""Load: 1,000 Telegram users send /help and 200 send /mail at once, through the Bot API fake
(which enforces Telegram's send limits), the Google fake and the bot, each its own process.
Everyone gets exactly one right answer; no call is refused; nothing is logged as an error."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.stack import stack, until

pytestmark = [pytest.mark.reliability, pytest.mark.integration]


async def test_a_thousand_help_and_two_hundred_mail_senders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    helpers = list(range(10_000, 11_000))
    senders = list(range(20_000, 20_200))
    async with stack(tmp_path, "sends_per_minute = 100") as s, aiohttp.ClientSession() as http:
        await s.telegram.inject(enforce_limits=True)  # 429 past 30/s overall or 1/s per chat
        t0 = time.monotonic()
        await s.connect(senders, http)
        t1 = time.monotonic()
        await asyncio.gather(
            *(s.telegram.user_sends(u, "/help") for u in helpers),
            *(
                s.telegram.user_sends(u, f"/mail bob@example.com Load {u} | Body {u}")
                for u in senders
            ),
        )
        await asyncio.gather(
            *(s.telegram.wait_for(u, "/mail <to>", timeout=120) for u in helpers),
            *(s.telegram.wait_for(u, rf"“Load {u}”", 2, timeout=120) for u in senders),
        )
        t2 = time.monotonic()

        async def all_confirmed() -> bool:
            # Telegram holds no update the bot has not confirmed, and the bot confirms an
            # update only once it was handled: every answer, a second one too, was sent.
            url = f"{s.telegram.url}/bot{s.telegram.token}/getWebhookInfo"
            async with http.get(url) as r:
                return int((await r.json())["result"]["pending_update_count"]) == 0

        await until(all_confirmed)
        sent = await s.telegram.sent()
        calls = await s.telegram.calls()
        mails = Counter(m["subject"] for m in await s.google.sent())
        assert await s.bot.stop() == 0
        logs = s.bot.logs()

    by_chat = Counter(m["chat_id"] for m in sent)
    refused = {call: n for call, n in calls.items() if not call.endswith(" 200")}
    with capsys.disabled():
        print(
            f"\nload: help_users={len(helpers)} mail_users={len(senders)} "
            f"replies={len(sent)} mails={sum(mails.values())} refused_calls={refused} "
            f"seconds: connect {t1 - t0:.1f}, answer all {t2 - t1:.1f} "
            f"(at Telegram's 30 messages/s: {(len(helpers) + len(senders)) / 30:.0f} s at best)"
        )
    assert all(by_chat[u] == 1 for u in helpers), "each /help is answered exactly once"
    assert all(by_chat[u] == 3 for u in senders), "link, connected, then one outcome each"
    last = {m["chat_id"]: m["text"] for m in sent}
    assert all(last[u].startswith("✅ Mail #") for u in senders), "every mail was sent"
    assert mails == Counter(f"Load {u}" for u in senders)  # each mail once, none lost
    assert refused == {}  # the bot kept to Telegram's limits: not one 429
    assert " ERROR " not in logs
    assert "Traceback" not in logs
