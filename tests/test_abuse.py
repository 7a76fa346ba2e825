"""Hostile input: random and malicious chat messages and web requests."""

from __future__ import annotations

import asyncio
import random
import string
from email import message_from_bytes, policy
from pathlib import Path
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


def test_any_message_gets_a_sentence_never_a_crash_or_an_injected_header(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    cfg = make_config(tmp_path, bot={"database": "bot.db", "sends_per_minute": 10**6})
    bench_gen = start_bench(cfg)
    bench = loop.run_until_complete(anext(bench_gen))

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(MESSAGES, st.booleans())
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
        for path in bench.eml_files():
            raw = path.read_bytes()
            head = raw.split(b"\r\n\r\n", 1)[0]
            names = [ln.split(b":", 1)[0] for ln in head.split(b"\r\n") if ln[:1] not in b" \t"]
            assert len(names) == len(set(names)), head  # no header twice: nothing injected
            msg = message_from_bytes(raw, policy=policy.default)
            for value in msg.values():
                assert not any(c in str(value) for c in "\r\n\0")
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


async def test_ten_thousand_hostile_web_requests(tmp_path: Path, google_fake: GoogleFake) -> None:
    rng = random.Random(20261124)
    statuses: dict[int, int] = {}
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
        # Every state was consumed at most once, and nothing was linked.
        async with rig.core.db.execute("SELECT count(*) FROM accounts") as cur:
            assert (await cur.fetchone()) == (0,)
        await connect(rig)  # the real flow still works afterwards
    assert sum(statuses.values()) == 10_000
    assert set(statuses) <= {200, 303, 400, 403, 404, 405, 409, 410}
