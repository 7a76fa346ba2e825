"""The core through a test chat: answers, the allow-list, send limits, duplicates, bugs."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from bot.chat import Message
from bot.commands import table
from bot.wording import REPEAT
from tests.conftest import Bench, make_config, start_bench


def is_outcome(said: object) -> bool:
    return "Mail #" in str(getattr(said, "text", ""))


async def test_mail_is_written_and_confirmed(bench: Bench) -> None:
    await bench.core.handle(bench.chat.message("/mail bob@example.com Hello | Hi Bob"))
    said = await bench.chat.wait_for(is_outcome)
    assert said.room == "dm-1001"
    assert "bob@example.com" in said.text
    assert "“Hello”" in said.text
    assert "not sent (trial mode)" in said.text
    [eml] = bench.eml_files()
    msg = message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert msg["To"] == "bob@example.com"
    assert msg["Subject"] == "Hello"


async def test_bad_mail_writes_nothing_and_explains(bench: Bench) -> None:
    await bench.core.handle(bench.chat.message("/mail bob@example.com Hello Hi Bob"))
    await bench.core.outbox.drain()
    assert "Separate the subject from the body with a |" in bench.chat.replies[0].text
    assert bench.eml_files() == []


async def test_same_chat_event_twice_sends_once(bench: Bench) -> None:
    message = bench.chat.message("/mail bob@example.com Once | only", event_key="42:7")
    await bench.core.handle(message)
    await bench.core.handle(message)  # the network delivered it again
    await bench.core.outbox.drain()
    assert len(bench.eml_files()) == 1
    assert len([r for r in bench.chat.replies if is_outcome(r)]) == 1


async def test_a_redelivery_while_the_first_delivery_is_handled_is_answered_once(
    bench: Bench,
) -> None:
    message = bench.chat.message("/help", event_key="42:8")
    await asyncio.gather(*(bench.core.handle(message) for _ in range(5)))  # all at once
    assert len(bench.chat.replies) == 1
    await bench.core.handle(message)  # and later, once it was handled
    assert len(bench.chat.replies) == 1


async def test_an_event_claimed_by_this_run_is_left_to_it(bench: Bench) -> None:
    # The first delivery has claimed the event and is still at work on it.
    assert await bench.core.claims.claim("telegram:42:9")
    await bench.core.handle(bench.chat.message("/help", event_key="42:9"))
    assert bench.chat.replies == []  # the duplicate did nothing


async def test_a_command_cut_off_by_a_crash_is_handled_after_the_restart(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    async for b in start_bench(cfg):
        # Received and claimed; the process dies before it is handled.
        assert await b.core.claims.claim("telegram:42:10")
    async for b in start_bench(cfg):  # a new run: the network delivers the update again
        await b.core.handle(b.chat.message("/mail bob@example.com Cut off | x", event_key="42:10"))
        said = await b.chat.wait_for(is_outcome)
        assert "“Cut off”" in said.text
        await b.core.handle(b.chat.message("/mail bob@example.com Cut off | x", event_key="42:10"))
        await b.core.outbox.drain()
        assert len(b.chat.replies) == 1
        assert len(b.eml_files()) == 1


async def test_an_answer_that_could_not_be_sent_leaves_the_event_to_a_redelivery(
    bench: Bench,
) -> None:
    sent = bench.chat.send

    async def chat_is_down(room: str, reply: object) -> None:
        raise ConnectionError("the chat network is unreachable")

    bench.chat.send = chat_is_down  # type: ignore[assignment,method-assign]
    message = bench.chat.message("/help", event_key="42:11")
    with pytest.raises(ConnectionError):
        await bench.core.handle(message)
    bench.chat.send = sent  # type: ignore[method-assign]
    await bench.core.handle(message)  # delivered again: answered now
    assert len(bench.chat.replies) == 1


async def test_group_chatter_is_ignored_but_direct_chatter_gets_a_hint(bench: Bench) -> None:
    await bench.core.handle(bench.chat.message("hello all", direct=False, room="group"))
    assert bench.chat.replies == []
    await bench.core.handle(bench.chat.message("hello bot"))
    assert bench.chat.replies[0].text == "I only understand commands. Type /help to see them."


async def test_unknown_command_hints_at_help_with_the_network_prefix(tmp_path: Path) -> None:
    async for b in start_bench(make_config(tmp_path), platform="matrix"):
        await b.core.handle(b.chat.message("!frobnicate"))
        assert b.chat.replies[0].text == "I don't know !frobnicate. Type !help for what I can do."
        await b.core.handle(b.chat.message("!help"))
        assert "!mail <to> <subject> | <body>" in b.chat.replies[1].text


async def test_group_confirmation_does_not_reveal_bcc(bench: Bench) -> None:
    text = "/mail bob@example.com,bcc:secret@example.com Plan | x"
    await bench.core.handle(bench.chat.message(text, direct=False, room="group"))
    said = await bench.chat.wait_for(is_outcome)
    assert said.room == "group"
    assert "secret@example.com" not in said.text
    assert "1 in bcc" in said.text


@pytest.fixture
async def private_bench(tmp_path: Path) -> AsyncIterator[Bench]:
    cfg = make_config(
        tmp_path,
        bot={
            "database": "bot.db",
            "allowed_users": ["telegram:1001", "matrix:@*:example.org"],
            "sends_per_minute": 3,
            "sends_per_day": 5,
        },
    )
    async for b in start_bench(cfg):
        yield b


async def test_users_outside_the_allow_list_get_only_the_refusal(private_bench: Bench) -> None:
    chat = private_bench.chat
    await private_bench.core.handle(chat.message("/mail bob@example.com x | y", user="666"))
    await private_bench.core.handle(chat.message("hi", user="666"))
    await private_bench.core.handle(chat.message("/help", user="666", direct=False, room="g"))
    await private_bench.core.outbox.drain()
    assert [r.text for r in chat.replies] == [
        "Sorry, this mailbridge is private and you are not on its list of users. "
        "Ask its operator to add you."
    ] * 3
    assert private_bench.eml_files() == []


@pytest.mark.parametrize(
    ("user_key", "allowed"),
    [
        ("matrix:@alice:example.org", True),
        ("matrix:@alice:evil.org", False),
        ("matrix:@alice:example.org.evil.org", False),
        ("matrix:@alice:evil.org:example.org", False),
        ("telegram:1001", True),
        ("telegram:10011", False),
        ("console:1001", False),
    ],
)
def test_allow_list_patterns(user_key: str, allowed: bool) -> None:
    from bot.policy import is_allowed

    assert is_allowed(user_key, ("telegram:1001", "matrix:@*:example.org")) is allowed


async def test_send_limits_refuse_with_a_clear_sentence(private_bench: Bench) -> None:
    chat = private_bench.chat
    for n in range(4):
        await private_bench.core.handle(chat.message(f"/mail bob@example.com n{n} | x"))
    await private_bench.core.outbox.drain()
    assert len(private_bench.eml_files()) == 3
    refusal = [r.text for r in chat.replies if "last minute" in r.text]
    assert refusal == [
        "You have sent 3 mails in the last minute, the most allowed here. "
        "Wait a minute and send again."
    ]


async def test_a_bug_is_logged_and_answered_with_a_fixed_apology(
    bench: Bench, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(core: object, message: Message, args: str) -> None:
        raise RuntimeError("internal detail 0xdeadbeef")

    monkeypatch.setitem(table.HANDLERS, "help", broken)
    with caplog.at_level(logging.ERROR):
        await bench.core.handle(bench.chat.message("/help"))
    [said] = bench.chat.replies
    assert said.text.startswith("Sorry, something went wrong on our side.")
    assert "0xdeadbeef" not in said.text
    assert "0xdeadbeef" in caplog.text  # the traceback is in the log for the operator


async def test_queued_mail_survives_a_restart(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, mail={"confirm": "never", "undo_seconds": 2})
    async for b in start_bench(cfg):
        await b.core.handle(b.chat.message("/mail bob@example.com Later | x"))
        for task in list(b.core.outbox._tasks):  # the process dies: its deliveries with it
            task.cancel()
        await asyncio.gather(*b.core.outbox._tasks, return_exceptions=True)
        # No delivery is left that could write it: it was not sent before the restart.
        assert (await b.core.outbox.rows.get(1)).state == "queued"  # type: ignore[union-attr]
        assert b.eml_files() == []
    async for b in start_bench(dataclasses.replace(cfg)):
        said = await b.chat.wait_for(is_outcome)
        assert "“Later”" in said.text
        assert said.room == "dm-1001"
        assert len(b.eml_files()) == 1


async def test_an_outcome_the_owner_never_heard_is_told_after_a_restart(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    async for b in start_bench(cfg):
        sent = b.chat.send

        async def chat_is_down(room: str, reply: object) -> None:
            raise ConnectionError("the chat network is unreachable")

        b.chat.send = chat_is_down  # type: ignore[assignment,method-assign]
        await b.core.handle(b.chat.message("/mail bob@example.com Unheard | x"))
        await b.core.outbox.drain()
        b.chat.send = sent  # type: ignore[method-assign]
        assert len(b.eml_files()) == 1
        assert b.chat.replies == []
    async for b in start_bench(cfg):
        said = await b.chat.wait_for(is_outcome)
        assert "“Unheard”" in said.text
        assert REPEAT not in said.text  # the first try certainly did not reach the user
        assert said.room == "dm-1001"
    async for b in start_bench(cfg):  # told once: not again on the next start
        await b.core.outbox.drain()
        assert b.chat.replies == []
        assert len(b.eml_files()) == 1


async def test_an_outcome_cut_off_while_being_told_is_told_again_as_a_repeat(
    tmp_path: Path,
) -> None:
    cfg = make_config(tmp_path)
    async for b in start_bench(cfg):

        async def dies_mid_send(room: str, reply: object) -> None:
            raise asyncio.CancelledError  # the process stops while the request is out

        b.chat.send = dies_mid_send  # type: ignore[assignment,method-assign]
        await b.core.handle(b.chat.message("/mail bob@example.com Cut | x"))
        await b.core.outbox.drain()
    async for b in start_bench(cfg):
        said = await b.chat.wait_for(is_outcome)
        assert "“Cut”" in said.text
        assert said.text.endswith(REPEAT)
        assert len(b.eml_files()) == 1
    async for b in start_bench(cfg):  # told: not again on the next start
        await b.core.outbox.drain()
        assert b.chat.replies == []


async def test_send_limits_hold_under_a_burst(private_bench: Bench) -> None:
    chat = private_bench.chat
    burst = [chat.message(f"/mail bob@example.com b{n} | x") for n in range(30)]
    await asyncio.gather(*(private_bench.core.handle(m) for m in burst))
    await private_bench.core.outbox.drain()
    assert len(private_bench.eml_files()) == 3  # sends_per_minute = 3
    assert sum("in the last minute" in r.text for r in chat.replies) == 27
