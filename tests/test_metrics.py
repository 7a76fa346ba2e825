"""Metrics and health as an operator's Prometheus and load balancer see them, over real HTTP."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from bot import __version__
from tests.botproc import free_port
from tests.chatkit import LOGIN_LINK
from tests.gmail_rig import follow, gmail_config
from tests.google_fake import Fault, GoogleFake
from tests.running import running
from tests.telegram_fake import TelegramFake

pytestmark = [pytest.mark.integration, pytest.mark.telegram]

# name -> type, as the parser reports it (counters lose their _total suffix in the family name).
EXPECTED = {
    "mailbridge_mails": "counter",
    "mailbridge_send_duration_seconds": "histogram",
    "mailbridge_outbox_mails": "gauge",
    "mailbridge_commands": "counter",
    "mailbridge_chat_api_calls": "counter",
    "mailbridge_chat_api_failures": "counter",
    "mailbridge_replies_waiting_on_rate_limit": "gauge",
    "mailbridge_linked_accounts": "gauge",
    "mailbridge_token_refreshes": "counter",
    "mailbridge_token_refresh_failures": "counter",
    "mailbridge_web_requests": "counter",
    "mailbridge_build_info": "gauge",
}


async def scrape(url: str) -> dict[str, tuple[str, list[Sample]]]:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=")
        text = await r.text()
    return {f.name: (f.type, f.samples) for f in text_string_to_metric_families(text)}


def value(families: dict[str, tuple[str, list[Sample]]], sample: str, **labels: str) -> float:
    name = sample.removesuffix("_total").removesuffix("_count").removesuffix("_bucket")
    found = [s.value for s in families[name][1] if s.name == sample and dict(s.labels) == labels]
    assert len(found) == 1, (sample, labels, families[name][1])
    return found[0]


async def test_metrics_after_a_session_count_what_happened_and_name_no_one(
    tmp_path: Path, google_fake: GoogleFake, telegram_fake: TelegramFake
) -> None:
    alice = telegram_fake.add_user(4242, "Alice", "alice")
    # Tokens that live 30 s are refreshed before every send (the bot renews a minute early).
    google_fake.access_token_lifetime = 30
    telegram = {"token": telegram_fake.token, "base_url": f"{telegram_fake.url}/bot"}
    config = gmail_config(tmp_path, google_fake, telegram=telegram)
    async with running(config) as base:
        telegram_fake.user_sends(alice, text="/connect")
        link = await telegram_fake.wait_for_message(alice.id, lambda m: "10 minutes" in m.text)
        google_fake.auto_consent = "allow"
        match = LOGIN_LINK.search(link.text)
        assert match
        status, _, _ = await follow(match.group(0))
        assert status == 200
        await telegram_fake.wait_for_message(alice.id, lambda m: "Gmail connected" in m.text)
        outcomes = [
            (None, "Mail #1", "Lunch plans"),
            (Fault.limit("dailyLimitExceeded"), "Not sent", "Quarterly figures"),
            (Fault(500), "Maybe sent", "Secret party"),
        ]
        for fault, answer, subject in outcomes:
            if fault is not None:
                google_fake.gmail_faults.append(fault)
            telegram_fake.user_sends(alice, text=f"/mail bob@example.com {subject} | Hi")
            await telegram_fake.wait_for_message(alice.id, lambda m, a=answer: a in m.text)
        telegram_fake.user_sends(alice, text="/mail no-recipient-here")  # refused: usage
        await telegram_fake.wait_for_message(alice.id, lambda m: "Example" in m.text)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{base}/connect/{'x' * 43}") as r,  # an unknown state
        ):
            assert r.status >= 400
        families = await scrape(f"{base}/metrics")

    for name, kind in EXPECTED.items():
        assert name in families, f"{name} missing"
        assert families[name][0] == kind, name
    for outcome, n in {"sent": 1, "failed": 1, "unknown": 1, "cancelled": 0}.items():
        assert value(families, "mailbridge_mails_total", outcome=outcome) == n
    assert value(families, "mailbridge_send_duration_seconds_count") == 3
    assert value(families, "mailbridge_send_duration_seconds_bucket", le="+Inf") == 3
    for state, n in {"sent": 1, "failed": 1, "unknown": 1, "queued": 0, "sending": 0}.items():
        assert value(families, "mailbridge_outbox_mails", state=state) == n
    assert value(families, "mailbridge_commands_total", command="connect", result="ok") == 1
    assert value(families, "mailbridge_commands_total", command="mail", result="ok") == 3
    assert value(families, "mailbridge_commands_total", command="mail", result="refused") == 1
    calls = value(families, "mailbridge_chat_api_calls_total", network="telegram")
    # getMe, setMyCommands, deleteWebhook, getUpdates (several), sendMessage (six at least)
    assert calls >= 10
    assert value(families, "mailbridge_chat_api_failures_total", network="telegram") == 0
    assert value(families, "mailbridge_replies_waiting_on_rate_limit", network="telegram") == 0
    assert value(families, "mailbridge_linked_accounts") == 1
    refreshes = google_fake.token_requests.count("refresh_token")
    assert refreshes >= 3  # at least one before each send
    assert value(families, "mailbridge_token_refreshes_total") == refreshes
    assert families["mailbridge_token_refresh_failures"][1] == []  # none failed
    web = {
        (s.labels["route"], s.labels["status"]): s.value
        for s in families["mailbridge_web_requests"][1]
        if s.name == "mailbridge_web_requests_total"
    }
    assert web[("/connect/{state}", "200")] == 1  # the page
    assert web[("/connect/{state}", "303")] == 1  # its button, to Google
    assert web[("/oauth/callback", "200")] == 1
    assert web[("/connect/{state}", "404")] + web.get(("/connect/{state}", "410"), 0) >= 1
    assert value(families, "mailbridge_build_info", version=__version__) == 1

    # No label value names a user, an address, a subject or a login state.
    private = ["4242", "alice", "bob@", "Lunch", "Quarterly", "Secret", "x" * 10]
    labels = {v for _, samples in families.values() for s in samples for v in s.labels.values()}
    assert not [v for v in labels if any(p.lower() in v.lower() for p in private)], labels


async def test_metrics_on_an_address_of_their_own_are_not_on_the_public_server(
    tmp_path: Path, telegram_fake: TelegramFake
) -> None:
    private = f"127.0.0.1:{free_port()}"
    telegram = {"token": telegram_fake.token, "base_url": f"{telegram_fake.url}/bot"}
    from tests.running import bot_config

    config = bot_config(tmp_path, telegram=telegram, web={**_web(), "metrics_listen": private})
    async with running(config) as base, aiohttp.ClientSession() as http:
        async with http.get(f"{base}/metrics") as r:
            assert r.status == 404
        families = await scrape(f"http://{private}/metrics")
        assert "mailbridge_build_info" in families


def _web() -> dict[str, str]:
    from tests.running import web_section

    return web_section()
