"""Hostile input: random and malicious chat messages and web requests."""

from __future__ import annotations

import asyncio
import json
import random
import string
from collections import Counter
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.wording import APOLOGY
from tests.conftest import make_config, start_bench
from tests.gmail_rig import connect, gmail_config, login_link, start_gmail_rig
from tests.google_fake import GoogleFake

pytestmark = pytest.mark.reliability

PIECES = st.sampled_from(
    [
        "/mail ", "!mail ", "/mail@MailBridgeBot ", "/help", "/alias add x ", "/retry ",
        "/send ", "/undo", "bob@example.com", "cc:", "bcc:", ",", " | ", "|", "\n", "\r\n",
        "\\", "\0", "\u2028", "Bcc: eve@example.com", "=?utf-8?q?x?=", "jörg@bücher.example",
        "<script>", "%0d%0a", "\t", " ", "@", "a" * 300,
    ]
)  # fmt: skip
MESSAGES = st.lists(st.one_of(PIECES, st.text(max_size=20)), max_size=10).map("".join)
HOSTILE = st.lists(st.one_of(PIECES, st.text(max_size=20)), max_size=6).map("".join)
RECIPIENTS = st.sampled_from(
    ["bob@example.com", "bob@example.com,cc:carol@example.com", "bcc:eve@example.com,bob@x.org"]
)
# Well-formed commands with hostile subjects and bodies: these become mails to inspect.
MAILS = st.builds("/mail {} {} | {}".format, RECIPIENTS, HOSTILE, HOSTILE)


def test_any_message_gets_a_sentence_never_a_crash_or_an_injected_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loop = asyncio.new_event_loop()
    cfg = make_config(tmp_path, bot={"database": "bot.db", "sends_per_minute": 10**6})
    bench_gen = start_bench(cfg)
    bench = loop.run_until_complete(anext(bench_gen))

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(MESSAGES, MAILS), st.booleans())
    def one(text: str, direct: bool) -> None:
        before = len(bench.chat.replies)
        message = bench.chat.message(text, direct=direct, room=None if direct else "-100")
        loop.run_until_complete(bench.core.handle(message))
        loop.run_until_complete(bench.core.outbox.drain())
        for said in bench.chat.replies[before:]:
            assert said.text != APOLOGY, text  # no bug path for any input
            assert said.text.strip()

    try:
        one()
        mails = bench.eml_files()
        assert len(mails) >= 50  # enough hostile mails got through to inspect
        for path in mails:
            raw = path.read_bytes()
            head = raw.split(b"\r\n\r\n", 1)[0]
            names = [ln.split(b":", 1)[0] for ln in head.split(b"\r\n") if ln[:1] not in b" \t"]
            assert len(names) == len(set(names)), head  # no header twice: nothing injected
            msg = message_from_bytes(raw, policy=policy.default)
            for value in msg.values():
                assert not any(c in str(value) for c in "\r\n\0")
        with capsys.disabled():
            print(
                f"\nabuse chat: examples=300 replies={len(bench.chat.replies)} "
                f"mails_checked={len(mails)} header_injections=0 apologies=0"
            )
    finally:
        loop.run_until_complete(bench_gen.aclose())
        loop.close()


MALICIOUS = [
    "<script>alert(1)</script>",
    "\"'><img src=x onerror=alert(1)>",
    "../../etc/passwd",
    "%00",
    "%0d%0aSet-Cookie:%20x=1",
    "' OR 1=1 --",
    "{{7*7}}",
    "javascript:alert(1)",
    "A" * 5000,
]


def random_path(rng: random.Random, state: str) -> tuple[str, str]:
    junk = rng.choice([*MALICIOUS, "".join(rng.choices(string.printable, k=rng.randint(0, 40)))])
    choices = [
        ("GET", f"/connect/{quote(junk, safe='')}"),
        ("POST", f"/connect/{quote(junk, safe='')}"),
        ("GET", f"/oauth/callback?state={quote(junk)}&code={quote(junk)}"),
        ("GET", f"/oauth/callback?error={quote(junk)}&state={state}"),
        ("GET", f"/oauth/callback?state={state}&code={quote(junk)}"),
        ("GET", f"/{quote(junk, safe='/')}"),
        ("POST", "/telegram/webhook"),
        ("GET", "/healthz?x=" + quote(junk)),
        ("PUT", "/connect/" + state),
    ]
    return rng.choice(choices)


async def test_ten_thousand_hostile_web_requests(
    tmp_path: Path, google_fake: GoogleFake, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(20261124)
    statuses: dict[int, int] = {}
    past_the_state: dict[str, int] = {}  # callbacks that got beyond "this link was used"
    async for rig in start_gmail_rig(gmail_config(tmp_path, google_fake), google_fake):
        states = [(await login_link(rig, user=str(5000 + n))).rsplit("/", 1)[1] for n in range(3)]
        async with aiohttp.ClientSession() as http:
            for _ in range(10_000):
                method, path = random_path(rng, rng.choice(states))
                async with http.request(
                    method, rig.base_url + path, allow_redirects=False
                ) as response:
                    body = await response.text()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                    assert response.status < 500, (method, path, body[:300])
                    for payload in MALICIOUS[:3]:
                        assert payload not in body  # nothing reflected
                    state = next((s for s in states if f"state={s}" in path), None)
                    if state and response.status not in (409, 410):
                        past_the_state[state] = past_the_state.get(state, 0) + 1
        # Every state was consumed at most once, and nothing was linked.
        assert await rig.core.db.fetchall("SELECT count(*) FROM accounts") == [(0,)]
        await connect(rig)  # the real flow still works afterwards
    twice = sum(n > 1 for n in past_the_state.values())
    with capsys.disabled():
        print(
            f"\nabuse web: requests={sum(statuses.values())} "
            f"5xx={sum(n for status, n in statuses.items() if status >= 500)} "
            f"states_accepted_twice={twice} statuses={dict(sorted(statuses.items()))}"
        )
    assert sum(statuses.values()) == 10_000
    assert set(statuses) <= {200, 303, 400, 403, 404, 405, 409, 410}
    assert twice == 0


LOOK_ALIKES = [
    ("matrix", "@alice:example.org.evil.org", "Alice"),
    ("matrix", "@alice:evil.org:example.org", "alice"),
    ("matrix", "@\u0430lice:example.org", "Alice"),  # Cyrillic a
    ("matrix", "@alice\u200b:example.org", "Alice"),  # zero-width space
    ("matrix", "@alice:examp1e.org", "@alice:example.org"),  # display name = the allowed id
    ("matrix", "@mallory:example.com", "@alice:example.org"),
    ("telegram", "10011", "Alice"),
    ("telegram", "1001 ", "Alice"),
    ("telegram", "666", "1001"),
]


@pytest.mark.parametrize(("platform", "user", "name"), LOOK_ALIKES)
async def test_look_alike_users_get_only_the_refusal(
    tmp_path: Path, platform: str, user: str, name: str
) -> None:
    allowed = ["matrix:@alice:example.org", "telegram:1001"]
    cfg = make_config(tmp_path, bot={"database": "bot.db", "allowed_users": allowed})
    async for bench in start_bench(cfg, platform):
        for text in ("/mail bob@example.com x | y", "!mail bob@example.com x | y", "/connect"):
            await bench.core.handle(bench.chat.message(text, user=user, name=name))
        await bench.core.handle(bench.chat.message("/help", user=user, name=name, direct=False))
        await bench.core.outbox.drain()
        assert {r.text for r in bench.chat.replies} == {
            "Sorry, this mailbridge is private and you are not on its list of users. "
            "Ask its operator to add you."
        }
        assert len(bench.chat.replies) == 4
        assert bench.eml_files() == []
        # No login link was made.
        assert await bench.core.db.fetchall("SELECT count(*) FROM pending_logins") == [(0,)]


ODD = [
    "\u202eoiduA",  # right-to-left override
    "Z\u0351\u0352\u0353\u0354" * 200,  # stacked combining marks
    "👩‍👩‍👧‍👦 🏳️‍🌈 \U0001f9d1\U0001f3fd\u200d\U0001f4bb",  # joined emoji
    "\ufeffBOM \u00ad soft hyphen \u200d joiner \u2060 word joiner",
    "\U0001d578\U0001d586\U0001d58e\U0001d591 \U000e0041 tag char",  # Fraktur, tag
]


@pytest.mark.parametrize("odd", ODD, ids=["rtl", "zalgo", "emoji", "invisible", "astral"])
async def test_odd_unicode_reaches_the_mail_intact(tmp_path: Path, odd: str) -> None:
    async for bench in start_bench(make_config(tmp_path)):
        await bench.core.handle(bench.chat.message(f"/mail bob@example.com {odd[:60]} | {odd}"))
        await bench.core.outbox.drain()
        [said] = bench.chat.replies
        assert said.text.startswith("✅ Mail #1")
        [eml] = bench.eml_files()
        msg = message_from_bytes(eml.read_bytes(), policy=policy.default)
        assert str(msg["Subject"]) == odd[:60].strip()
        body = msg.get_body(("plain",))
        assert body is not None
        assert body.get_content().replace("\r\n", "\n").rstrip("\n") == odd.strip()


async def test_oversized_messages_get_a_sentence_and_a_big_body_goes_out_whole(
    tmp_path: Path,
) -> None:
    async for bench in start_bench(make_config(tmp_path)):
        big = "word " * 13_000  # 65 kB: as long as a Matrix event can be
        for text in (f"/mail bob@example.com Big | {big}", "/mail " + "x" * 65_000, "x" * 65_000):
            await bench.core.handle(bench.chat.message(text))
            await bench.core.outbox.drain()
        first, second, third = (r.text for r in bench.chat.replies)
        assert first.startswith("✅ Mail #1")
        assert second.startswith("Separate the subject from the body with a |.")
        assert third == "I only understand commands. Type /help to see them."
        assert all(len(r.text) < 1000 for r in bench.chat.replies)  # nothing echoed back
        [eml] = bench.eml_files()
        msg = message_from_bytes(eml.read_bytes(), policy=policy.default)
        body = msg.get_body(("plain",))
        assert body is not None
        assert body.get_content().split() == big.split()


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False, 0, -1, 2**53, 2**64, 1.5, -0.0, 1e308])
    if kind == 2:
        return rng.choice([*MALICIOUS, "", "\u202e", "/help", "x" * rng.randint(0, 300)])
    if kind == 3:
        return rng.randint(-(2**63), 2**63)
    if kind == 4:
        return "".join(rng.choices(string.printable, k=rng.randint(0, 20)))
    if kind == 5:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["update_id", "message", "callback_query", "chat", "from", "text", "id", "type",
            "date", "message_id", "is_bot", "first_name", "photo", "document", "data"]  # fmt: skip
    return {
        rng.choice(keys) if rng.random() < 0.8 else rng.choice(MALICIOUS): random_json(
            rng, depth + 1
        )
        for _ in range(rng.randint(0, 5))
    }


async def test_thousands_of_hostile_webhook_requests(
    telegram_fake: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.running import running
    from tests.test_webhook import HEADERS, NOT_UPDATES, RAW_BODIES, webhook_config

    rng = random.Random(20261201)
    users = [telegram_fake.add_user(30_000 + n, f"User{n}") for n in range(150)]
    for user in users:  # each has started the bot, so Telegram lets it answer them
        telegram_fake.private_chat(user)
        telegram_fake.started.add(user.id)
    statuses: dict[str, int] = {}
    valid: dict[int, int] = {}  # update_id -> chat it was sent in

    def update(user: Any, n: int) -> dict[str, Any]:
        chat = {"id": user.id, "type": "private", "first_name": user.first_name}
        sender = {"id": user.id, "is_bot": False, "first_name": user.first_name}
        message = {"message_id": n, "date": 1_764_000_000, "chat": chat, "from": sender}
        return {"update_id": 10_000 + n, "message": {**message, "text": "/status"}}

    def request(n: int) -> tuple[dict[str, str], bytes, int | None]:
        """One hostile request: headers, body, and the update's chat if it is a valid one."""
        kind = rng.randrange(10)
        if kind == 0:
            secret = rng.choice(["", "wrong", HEADERS["X-Telegram-Bot-Api-Secret-Token"] + "x"])
            headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret else {}
            return headers, json.dumps(update(rng.choice(users), n)).encode(), None
        if kind == 1:
            return HEADERS, json.dumps(rng.choice(NOT_UPDATES)).encode(), None
        if kind == 2:
            return HEADERS, rng.choice(RAW_BODIES), None
        if kind == 3:
            content_type = rng.choice(["text/plain", "application/xml", "multipart/form-data"])
            return {**HEADERS, "Content-Type": content_type}, b"{}", None
        if kind == 4 and n % 50 == 0:  # over the 1 MiB a webhook body may have
            return HEADERS, b'{"update_id": 1, "x": "' + b"x" * 2**21 + b'"}', None
        if kind in (5, 6):
            user = users[n % len(users)]
            return HEADERS, json.dumps(update(user, n)).encode(), user.id
        return HEADERS, json.dumps(random_json(rng)).encode(), None

    async with running(webhook_config(tmp_path, telegram_fake)) as base:
        telegram_fake.user_sends(users[0], text="/status")  # the webhook is set and answered
        await telegram_fake.wait_for_message(users[0].id)
        url = f"{base}/telegram/webhook"
        async with aiohttp.ClientSession() as http:

            async def post(headers: dict[str, str], body: bytes) -> None:
                async with http.post(url, data=body, headers=headers) as r:
                    await r.read()
                    key = f"{r.status}"
                    statuses[key] = statuses.get(key, 0) + 1
                    assert r.status < 500, (r.status, body[:200])

            for start in range(0, 5_000, 25):  # 25 at a time; a valid update thrice at once
                batch = []
                for n in range(start, start + 25):
                    headers, body, chat = request(n)
                    copies = 3 if chat is not None else 1
                    if chat is not None:
                        valid[10_000 + n] = chat
                    batch += [post(headers, body) for _ in range(copies)]
                await asyncio.gather(*batch)
    # Every request was answered after its update was handled: nothing more is coming.
    answers = Counter(m.chat_id for m in telegram_fake.sent)
    expected = Counter(valid.values()) + Counter([users[0].id])  # and the first /status
    with capsys.disabled():
        print(
            f"\nabuse webhook: requests={sum(statuses.values())} "
            f"5xx={sum(n for s, n in statuses.items() if s.startswith('5'))} "
            f"valid_updates={len(valid)} (each sent 3 times at once) "
            f"answers={sum(answers.values())} statuses={dict(sorted(statuses.items()))}"
        )
    assert set(statuses) <= {"200", "400", "403", "413", "415"}
    assert answers == expected  # each valid update answered exactly once, duplicates by nobody
