"""Telegram's webhook mode against the Bot API fake: hostile bodies, and updates delivered
again while their first delivery is still being handled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.config import Config
from tests.running import bot_config, running
from tests.telegram_fake import TelegramFake

pytestmark = pytest.mark.telegram
SECRET = "s3cret-Token_1"
HEADERS = {"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"}


def webhook_config(tmp_path: Path, fake: TelegramFake, **sections: Any) -> Config:
    telegram = {
        "token": fake.token,
        "base_url": f"{fake.url}/bot",
        "mode": "webhook",
        "webhook_secret": SECRET,
    }
    return bot_config(tmp_path, telegram=telegram, **sections)


def emls(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "outbox").glob("*.eml"))


CHAT = {"id": 1001, "type": "private", "first_name": "Alice"}
USER = {"id": 1001, "is_bot": False, "first_name": "Alice"}
MESSAGE = {"message_id": 1, "date": 1_700_000_000, "chat": CHAT, "from": USER, "text": "/help"}


def with_message(**fields: Any) -> dict[str, Any]:
    return {"update_id": 1, "message": {**MESSAGE, **fields}}


NOT_UPDATES: list[Any] = [
    [],
    [{"update_id": 1, "message": MESSAGE}],
    0,
    -1.5,
    None,
    "update",
    True,
    {},
    {"message": MESSAGE},
    {"update_id": "1", "message": MESSAGE},
    {"update_id": True, "message": MESSAGE},
    {"update_id": 1.0, "message": MESSAGE},
    {"update_id": 10**30, "message": MESSAGE},
    {"update_id": 1, "message": 5},
    {"update_id": 1, "message": [MESSAGE]},
    {"update_id": 1, "message": MESSAGE, "callback_query": {}},
    {"update_id": 1, "edited_message": "x"},
    {"update_id": 1, "callback_query": {}},
    {"update_id": 1, "callback_query": {"id": 5, "from": USER, "chat_instance": "1"}},
    {"update_id": 1, "callback_query": {"id": "5", "from": None, "chat_instance": "1"}},
    with_message(chat=5),
    with_message(chat={"id": "1001", "type": "private"}),
    with_message(chat={"id": 1001, "type": "room"}),
    with_message(chat=None),
    with_message(date="today"),
    with_message(date=10**20),
    with_message(message_id=None),
    with_message(text=["/help"]),
    with_message(text="\ud800"),
    with_message(caption={"text": "/help"}),
    with_message(**{"from": {"id": 1, "first_name": "A"}}),
    with_message(**{"from": {"id": 1, "is_bot": "no", "first_name": "A"}}),
    with_message(**{"from": "Alice"}),
    with_message(document={"file_id": 1}),
    with_message(document={"file_id": "a", "file_unique_id": "b", "file_size": -1}),
    with_message(photo={"file_id": "a"}),
    with_message(photo=[{"file_id": "a", "file_unique_id": "b"}]),
    with_message(photo=["a"]),
    with_message(reply_to_message=5),
    with_message(reply_to_message={"message_id": 1}),
    with_message(reply_to_message={**MESSAGE, "chat": {"id": {"id": {"id": []}}}}),
]
RAW_BODIES = [
    b"",
    b"{",
    b"not json",
    b"\xff\xfe{}",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"update_id": 1, "message": ' * 5_000 + b"1" + b"}" * 5_000,
    b'{"update_id": 1' + b"9" * 5_000 + b"}",
    b"NaN",
    json.dumps(with_message(text="x" * 10)).encode("utf-16"),
]


async def test_a_body_that_is_not_an_update_is_a_400_and_the_bot_carries_on(
    telegram_fake: TelegramFake, tmp_path: Path
) -> None:
    alice = telegram_fake.add_user(1001, "Alice")
    statuses: dict[int, int] = {}
    async with running(webhook_config(tmp_path, telegram_fake)) as base:
        telegram_fake.user_sends(alice, text="/help")  # the webhook is set and answered
        await telegram_fake.wait_for_message(alice.id, lambda m: "this list" in m.text)
        async with aiohttp.ClientSession() as http:
            bodies = [json.dumps(b).encode() for b in NOT_UPDATES] + RAW_BODIES
            for body in bodies:
                async with http.post(f"{base}/telegram/webhook", data=body, headers=HEADERS) as r:
                    assert r.status == 400, (body[:200], r.status, await r.text())
                    statuses[r.status] = statuses.get(r.status, 0) + 1
            for content_type in ("text/plain", "application/x-www-form-urlencoded", ""):
                headers = {**HEADERS, "Content-Type": content_type}
                body = json.dumps(with_message()).encode()
                async with http.post(f"{base}/telegram/webhook", data=body, headers=headers) as r:
                    assert r.status == 415, content_type
            big = json.dumps(with_message(text="/help " + "x" * 2**21)).encode()
            async with http.post(f"{base}/telegram/webhook", data=big, headers=HEADERS) as r:
                assert r.status == 413
            # Not for us, but updates all the same: taken (200) and ignored.
            for other in (
                {"update_id": 7},
                {"update_id": 8, "edited_message": {**MESSAGE, "text": "/help"}},
                {"update_id": 9, "poll": {"id": "x"}},
                {"update_id": 10, "some_future_kind": {"x": [1, {"y": None}]}},
            ):
                async with http.post(f"{base}/telegram/webhook", json=other, headers=HEADERS) as r:
                    assert r.status == 200, other
        telegram_fake.user_sends(alice, text="/status")  # still answering
        await telegram_fake.wait_for_message(alice.id, lambda m: "without Google" in m.text)
    assert [m.text for m in telegram_fake.sent if "this list" in m.text] != []
    assert len([m for m in telegram_fake.sent if m.chat_id == alice.id]) == 2  # nothing else


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
FIELD = st.sampled_from(
    ["message_id", "date", "chat", "from", "text", "caption", "document", "photo",
     "reply_to_message", "id", "type", "is_bot", "first_name", "file_id", "file_unique_id"]
)  # fmt: skip
# Update-like objects: the right keys with values of any type, nested a few levels.
SHAPED = st.fixed_dictionaries(
    {"update_id": JSON_VALUES | st.integers(0, 10**6)},
    optional={
        "message": st.dictionaries(FIELD, JSON_VALUES | st.dictionaries(FIELD, JSON_VALUES)),
        "callback_query": st.dictionaries(
            st.sampled_from(["id", "from", "message", "chat_instance", "data"]), JSON_VALUES
        ),
    },
)


async def test_random_json_with_the_secret_is_never_a_5xx(
    telegram_fake: TelegramFake, tmp_path: Path
) -> None:
    bodies: list[Any] = []

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(JSON_VALUES | SHAPED)
    def collect(body: Any) -> None:
        bodies.append(body)

    collect()
    statuses: dict[int, int] = {}
    alice = telegram_fake.add_user(1001, "Alice")
    async with running(webhook_config(tmp_path, telegram_fake)) as base:
        telegram_fake.user_sends(alice, text="/status")  # the webhook is set and answered
        await telegram_fake.wait_for_message(alice.id, lambda m: "without Google" in m.text)
        async with aiohttp.ClientSession() as http:
            for body in bodies:
                async with http.post(
                    f"{base}/telegram/webhook", data=json.dumps(body), headers=HEADERS
                ) as r:
                    assert r.status in (200, 400), (body, r.status)
                    statuses[r.status] = statuses.get(r.status, 0) + 1
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200
    assert statuses.get(400, 0) > 100  # most random bodies are no update


async def test_an_update_delivered_again_while_its_first_delivery_is_handled_is_answered_once(
    telegram_fake: TelegramFake, tmp_path: Path
) -> None:
    alice = telegram_fake.add_user(1001, "Alice")
    config = webhook_config(tmp_path, telegram_fake, mail={"confirm": "never", "undo_seconds": 5})
    async with running(config):
        telegram_fake.user_sends(alice, text="/status")  # the webhook is set and answered
        await telegram_fake.wait_for_message(alice.id, lambda m: "without Google" in m.text)
        # Telegram gives up on an answer after 1 s; each reply is held up 3 s by a 429, so
        # Telegram delivers each update again while its first delivery is still being handled.
        telegram_fake.webhook_timeout = 1.0
        telegram_fake.inject_429(count=2, retry_after=3, methods=["sendMessage"])
        mail = telegram_fake.user_sends(alice, text="/mail bob@example.com Once | x")
        notice = await telegram_fake.wait_for_message(alice.id, lambda m: "Mail #1" in m.text)
        assert "goes out in 5 s" in notice.text
        help_ = telegram_fake.user_sends(alice, text="/help")
        await telegram_fake.wait_for_message(alice.id, lambda m: "this list" in m.text)
        telegram_fake.webhook_timeout = 10.0
        await telegram_fake.wait_confirmed()
        telegram_fake.user_sends(alice, text="/status")  # anything said twice comes before
        await telegram_fake.wait_for_message(alice.id, lambda m: "without Google" in m.text)
        await telegram_fake.wait_for_message(alice.id, lambda m: "not sent" in m.text, 15)
    assert telegram_fake.webhook_posts[mail["update_id"]] >= 2  # it did come again
    assert telegram_fake.webhook_posts[help_["update_id"]] >= 2
    assert "Read timeout expired" in telegram_fake.webhook_errors
    texts = [m.text for m in telegram_fake.sent if m.chat_id == alice.id]
    assert sum("this list" in t for t in texts) == 1
    assert sum("goes out in" in t for t in texts) == 1
    assert sum("not sent (trial mode)" in t for t in texts) == 1
    assert len(emls(tmp_path)) == 1
