"""Faults: Gmail, Google's token endpoint, Telegram and the Matrix homeserver misbehave; each
case ends in what the user is told, and the bot recovers by itself.

Gmail and Telegram cases run the whole stack as separate processes (one stack for the module,
one connected Telegram user per test); the homeserver case restarts the real Synapse."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.stack import Stack, stack, until
from tests.synapse import Synapse, create_dm, send_text, wait_for_message

pytestmark = [pytest.mark.reliability, pytest.mark.integration]
in_stack = pytest.mark.asyncio(loop_scope="module")
USERS = itertools.count(2001)
POOL = 20  # users connected up front, one per test


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def whole(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with stack(tmp_path_factory.mktemp("faults")) as s, aiohttp.ClientSession() as http:
        await s.connect(list(range(2001, 2001 + POOL)), http)
        yield s


class User:
    """One connected Telegram user of the stack, and what the bot has told them."""

    def __init__(self, s: Stack) -> None:
        self.s, self.id = s, next(USERS)
        assert self.id < 2001 + POOL, "connect more users in the fixture"
        self.seen = 0

    async def says(self, text: str) -> None:
        self.seen = len(await self.s.telegram.sent(self.id))
        await self.s.telegram.user_sends(self.id, text)

    async def told(self, pattern: str, timeout: float = 30.0) -> str:
        """The first message since the user's last command that matches ``pattern``."""
        message = await self.s.telegram.wait_for(self.id, pattern, self.seen, timeout)
        return str(message["text"])

    async def texts(self) -> list[str]:
        return [m["text"] for m in (await self.s.telegram.sent(self.id))[self.seen :]]


async def gmail(s: Stack) -> dict[str, Any]:
    return await s.google.state()


async def received(s: Stack, subject: str) -> int:
    return sum(m["subject"] == subject for m in await s.google.sent())


async def mail(user: User, subject: str) -> None:
    await user.says(f"/mail bob@example.com {subject} | Body")


# -- Gmail -------------------------------------------------------------------------------------


@in_stack
@pytest.mark.parametrize(
    "faults",
    [
        [{"status": 429, "retry_after": 1}, {"status": 429}],
        [{"status": 403, "reason": "rateLimitExceeded"}],
        [{"status": 403, "reason": "userRateLimitExceeded"}],
    ],
    ids=["429-twice", "403-rateLimitExceeded", "403-userRateLimitExceeded"],
)
async def test_gmail_rate_limits_are_waited_out_and_the_mail_sent_once(
    whole: Stack, faults: list[dict[str, Any]]
) -> None:
    user = User(whole)
    requests = (await gmail(whole))["gmail_requests"]
    await whole.google.set(gmail_faults=faults)
    await mail(user, f"Busy {user.id}")
    said = await user.told(r"Mail #\d+")
    assert said.startswith("✅ Mail #")
    assert f"sent from user{user.id}@gmail.com" in said
    assert await received(whole, f"Busy {user.id}") == 1
    assert (await gmail(whole))["gmail_requests"] == requests + len(faults) + 1


@in_stack
async def test_gmail_daily_limit_fails_at_once_and_says_why(whole: Stack) -> None:
    user = User(whole)
    await whole.google.set(gmail_faults=[{"status": 403, "reason": "dailyLimitExceeded"}])
    await mail(user, "Daily")
    said = await user.told(r"Not sent")
    assert "daily sending limit" in said
    assert await received(whole, "Daily") == 0


@in_stack
async def test_gmail_401_refreshes_the_token_and_sends(whole: Stack) -> None:
    user = User(whole)
    refreshes = (await gmail(whole))["token_requests"].count("refresh_token")
    await whole.google.set(gmail_faults=[{"status": 401}])
    await mail(user, "Unauthorised")
    assert "sent from" in await user.told(r"Mail #\d+")
    assert (await gmail(whole))["token_requests"].count("refresh_token") == refreshes + 1
    assert await received(whole, "Unauthorised") == 1


@in_stack
@pytest.mark.parametrize(
    "fault",
    [{"status": 500}, {"status": 503}, {"drop": "after"}],
    ids=["500", "503", "connection-reset"],
)
async def test_gmail_errors_mid_send_are_reported_unknown_and_never_resent(
    whole: Stack, fault: dict[str, Any]
) -> None:
    user = User(whole)
    requests = (await gmail(whole))["gmail_requests"]
    await whole.google.set(gmail_faults=[fault])
    await mail(user, f"Maybe {user.id}")
    said = await user.told(r"Maybe sent")
    number = said.split("#")[1].split()[0]
    assert f"Check your Sent folder; if it is not there, send it again with /retry {number}." in (
        said
    )
    # Never resent by itself: it rests as unknown, which only /retry sends again ...
    await user.says("/history")
    assert f"⚠️ #{number} " in await user.told(r"Your last mails")
    await user.says(f"/retry {number}")
    assert "sent from" in await user.told(rf"✅ Mail #{number}")
    # ... and Gmail saw two requests in all: the one that failed and the retry.
    assert (await gmail(whole))["gmail_requests"] == requests + 2


@in_stack
async def test_slow_gmail_holds_up_nobody_else(whole: Stack) -> None:
    slow, other = User(whole), User(whole)
    await whole.google.set(gmail_faults=[{"delay": 4}])
    await mail(slow, "Slow")

    async def google_has_it() -> bool:  # and is taking its time to answer
        return await received(whole, "Slow") == 1

    await until(google_has_it)
    await other.says("/help")
    await other.told("/mail")
    assert not any("Slow" in t for t in await slow.texts())  # the help came first
    assert "sent from" in await slow.told(r"Mail #\d+")


# -- Google's token endpoint ----------------------------------------------------------------


@in_stack
async def test_token_endpoint_503_once_is_retried_and_the_mail_sent(whole: Stack) -> None:
    user = User(whole)
    await whole.google.set(expire_access_tokens=True, token_faults=[503])
    await mail(user, "Token hiccup")
    assert "sent from" in await user.told(r"Mail #\d+")
    assert await received(whole, "Token hiccup") == 1


@in_stack
async def test_token_endpoint_down_fails_with_nothing_sent(whole: Stack) -> None:
    user = User(whole)
    # Down for good: every try answers 503 (a refresh is tried 4 times, 1, 2 and 4 s apart).
    await whole.google.set(expire_access_tokens=True, token_faults=[503] * 50)
    await mail(user, "Token down")
    said = await user.told(r"Not sent", timeout=90)
    assert "Google's sign-in service could not be reached, so nothing was sent" in said
    assert await received(whole, "Token down") == 0
    await whole.google.set(clear_faults=True)  # it is back
    await mail(user, "Token back")
    assert "sent from" in await user.told(r"Mail #\d+")


@in_stack
async def test_invalid_grant_says_to_connect_again_and_ends_the_link(whole: Stack) -> None:
    user = User(whole)
    await whole.google.set(expire_access_tokens=True, token_faults=["invalid_grant"])
    await mail(user, "Revoked")
    said = await user.told(r"Not sent")
    assert f"Google no longer accepts the link to user{user.id}@gmail.com" in said
    assert "Send /connect to link it again" in said
    await user.says("/status")
    assert (await user.told(r"connected")).startswith("No Gmail is connected.")
    assert await received(whole, "Revoked") == 0


# -- Telegram --------------------------------------------------------------------------------


@in_stack
@pytest.mark.parametrize(
    "fault",
    [
        {"status": 429, "count": 2, "retry_after": 1, "methods": ["sendMessage"]},
        {"status": 502, "count": 2, "methods": ["sendMessage"]},
        {"status": 502, "count": 3, "methods": ["getUpdates"]},
    ],
    ids=["429-on-send", "502-on-send", "502-on-getUpdates"],
)
async def test_telegram_errors_delay_the_answer_but_lose_nothing(
    whole: Stack, fault: dict[str, Any]
) -> None:
    user = User(whole)
    await whole.telegram.inject(**fault)
    await user.says("/help")
    await user.told("/mail")
    seen = user.seen
    await user.says("/status")  # a second answer to /help would come before this one's
    await user.told(r"^Connected as")
    user.seen = seen
    assert sum("/help - this list" in t for t in await user.texts()) == 1  # answered once


@in_stack
async def test_telegram_unreachable_for_30_s_then_everything_arrives(whole: Stack) -> None:
    user = User(whole)
    await whole.google.set(gmail_faults=[{"delay": 3}])
    await mail(user, "Outage")

    async def google_has_it() -> bool:  # the bot took the command; Gmail is slow to answer
        return await received(whole, "Outage") == 1

    await until(google_has_it)
    await whole.telegram.inject(offline=True)  # the outcome cannot be told now
    await asyncio.sleep(5)
    await whole.telegram.user_sends(user.id, "/help")  # waits at Telegram meanwhile
    await asyncio.sleep(25)
    await whole.telegram.inject(offline=False)
    back = time.monotonic()
    assert "sent from" in await user.told(r"Mail #\d+", timeout=30)
    await user.told("/mail bob@example.com", timeout=30 - (time.monotonic() - back))
    assert time.monotonic() - back < 30
    assert await received(whole, "Outage") == 1


# -- Matrix ----------------------------------------------------------------------------------


@pytest.mark.matrix
async def test_synapse_restarted_mid_sync_the_bot_answers_after_it_returns(
    synapse: Synapse, tmp_path: Path
) -> None:
    from tests.running import running
    from tests.test_matrix import from_bot, matrix_bot

    bot, config = await matrix_bot(synapse, tmp_path)
    alice = await synapse.register()
    async with running(config), synapse.client(alice) as client:
        room = await create_dm(client, bot.user_id, encrypted=False)
        await wait_for_message(client, room, from_bot(bot, "Hello"), timeout=30)
        await send_text(client, room, "!mail bob@example.com Before | x")
        await wait_for_message(client, room, from_bot(bot, "Mail #1"), timeout=30)
        await asyncio.sleep(1)  # the bot is in its next long sync now
        await synapse.restart(downtime=3)
        back = time.monotonic()
        await send_text(client, room, "!mail bob@example.com After | x")
        said = await wait_for_message(client, room, from_bot(bot, "Mail #2"), timeout=30)
        assert "“After”" in said.body
        assert time.monotonic() - back < 30
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 2  # nothing answered twice


@in_stack
async def test_no_secret_reaches_the_logs_through_faults(whole: Stack) -> None:
    # Self-contained: it makes its own faults (any order, or alone), waits until the log shows
    # each, then reads the whole log (with whatever earlier tests of the module put there).
    user = User(whole)
    body = f"Xylophone{user.id}"
    start = len(whole.bot.logs())

    async def logged(line: str) -> None:
        async def in_the_log() -> bool:
            return line in whole.bot.logs()[start:]

        in_the_log.__name__ = f"log has {line!r}"
        await until(in_the_log)

    await whole.google.set(gmail_faults=[{"status": 429, "retry_after": 1}, {"status": 500}])
    await user.says(f"/mail bob@example.com Logged {user.id} | {body}")
    number = (await user.told(r"Maybe sent")).split("#")[1].split()[0]
    await logged("outcome unknown")
    await user.says(f"/retry {number}")
    assert "sent from" in await user.told(rf"✅ Mail #{number}")
    await whole.telegram.inject(status=502, count=2, methods=["getUpdates"])
    await whole.telegram.inject(status=429, count=1, retry_after=1, methods=["sendMessage"])
    await user.says("/help")
    await user.told("/mail")
    await logged("getUpdates failed")
    await logged("Telegram asked to wait")
    logs = whole.bot.logs()
    assert whole.telegram.token not in logs
    assert whole.telegram.token.split(":")[1] not in logs
    assert whole.google.client_secrets_json()["web"]["client_secret"] not in logs
    assert "Bearer " not in logs
    assert body not in logs
    assert "Body" not in logs  # every other mail of this module has the body "Body"
