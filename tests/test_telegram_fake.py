"""The Bot API fake, checked with the real python-telegram-bot over real HTTP."""

from __future__ import annotations

import asyncio
import datetime as dtm
import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    MessageEntity,
    Update,
)
from telegram.error import BadRequest, Conflict, Forbidden, InvalidToken, NetworkError, RetryAfter
from telegram.ext import Application, CommandHandler, ContextTypes

from tests.telegram_fake import TelegramFake, command_entities, parse_html

pytestmark = pytest.mark.telegram


def bot_for(fake: TelegramFake, token: str | None = None) -> Bot:
    """A PTB Bot pointed at the fake, the way the adapter builds one."""
    return Bot(
        token or fake.token, base_url=f"{fake.url}/bot", base_file_url=f"{fake.url}/file/bot"
    )


def application_for(fake: TelegramFake) -> Application[Any, Any, Any, Any, Any, Any]:
    """A PTB Application pointed at the fake (PTB appends the token to both URLs)."""
    builder = Application.builder().token(fake.token)
    return builder.base_url(f"{fake.url}/bot").base_file_url(f"{fake.url}/file/bot").build()


@pytest.fixture(autouse=True)
def _timedelta_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without this, every RetryAfter PTB builds warns that retry_after will be a timedelta."""
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


@pytest.fixture
async def bot(telegram_fake: TelegramFake) -> AsyncIterator[Bot]:
    async with bot_for(telegram_fake) as b:
        yield b


async def test_get_me_and_a_wrong_token(telegram_fake: TelegramFake, bot: Bot) -> None:
    me = await bot.get_me()
    assert (me.username, me.is_bot, me.id) == ("MailBridgeTestBot", True, 123456)
    with pytest.raises(InvalidToken):
        async with bot_for(telegram_fake, "123456:wrong"):
            pass
    assert await bot.set_my_commands([("mail", "send a mail"), ("help", "what I can do")])
    assert telegram_fake.commands["default"][0] == {
        "command": "mail",
        "description": "send a mail",
    }
    assert [c["command"] for c in telegram_fake.commands["default"]] == ["mail", "help"]


async def test_a_group_command_arrives_by_polling_and_matches_commandhandler(
    telegram_fake: TelegramFake,
) -> None:
    alice = telegram_fake.add_user(1001, "Alice", "alice")
    room = telegram_fake.group("Team", [alice])
    seen: asyncio.Queue[tuple[Update, list[str]]] = asyncio.Queue()

    async def mail(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await seen.put((update, list(context.args or [])))

    app = application_for(telegram_fake)
    app.add_handler(CommandHandler("mail", mail))
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(timeout=5)
        # Privacy mode: the bot never sees other bots' commands or chatter in a group.
        assert "update_id" not in telegram_fake.user_sends(alice, room, "/mail@OtherBot y")
        assert "update_id" not in telegram_fake.user_sends(alice, room, "hello all")
        telegram_fake.user_sends(alice, room, "/mail@MailBridgeTestBot x")
        update, args = await asyncio.wait_for(seen.get(), 5)
        await app.updater.stop()
        await app.stop()
    assert update.message is not None
    assert update.message.text == "/mail@MailBridgeTestBot x"
    assert update.message.entities == (MessageEntity("bot_command", 0, 23),)
    assert (update.message.chat.id, update.message.chat.type) == (room.id, "supergroup")
    assert args == ["x"]
    assert seen.empty()


def test_bot_command_entities_count_utf16_and_skip_glued_slashes() -> None:
    assert command_entities("🙂 /mail a /help@Bot and/not /x/y") == [
        {"type": "bot_command", "offset": 3, "length": 5},
        {"type": "bot_command", "offset": 11, "length": 9},
    ]


async def test_html_is_shown_as_plain_text_and_recorded(
    telegram_fake: TelegramFake, bot: Bot
) -> None:
    alice = telegram_fake.add_user(1001, "Alice", "alice")
    telegram_fake.user_starts(alice)
    started = time.monotonic()
    msg = await bot.send_message(
        alice.id,
        "<b>Sent</b> to &lt;bob@example.com&gt; &amp; co",
        parse_mode="HTML",
        link_preview_options=LinkPreviewOptions(is_disabled=True),
    )
    assert msg.text == "Sent to <bob@example.com> & co"
    assert msg.entities == (MessageEntity("bold", 0, 4),)
    assert (msg.message_id, msg.from_user and msg.from_user.username) == (2, "MailBridgeTestBot")
    shown = await telegram_fake.wait_for_message(alice.id)
    assert shown.text == "Sent to <bob@example.com> & co"
    assert shown.html.startswith("<b>Sent</b>")
    assert (shown.parse_mode, shown.no_preview) == ("HTML", True)
    assert shown.sent_at >= started


@pytest.mark.parametrize(
    ("markup", "error"),
    [
        ("<b>bold", 'Can\'t find end tag corresponding to start tag "b"'),
        ("1 < 2", 'Unsupported start tag "" at byte offset 2'),
        ("<script>x</script>", 'Unsupported start tag "script" at byte offset 0'),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("é</b>", "Unexpected end tag at byte offset 2"),
        ("AT&T", "Unescaped '&' at byte offset 2"),
    ],
)
async def test_bad_html_is_refused_like_telegram(
    telegram_fake: TelegramFake, bot: Bot, markup: str, error: str
) -> None:
    alice = telegram_fake.add_user(1001, "Alice")
    telegram_fake.user_starts(alice)
    with pytest.raises(BadRequest) as caught:
        await bot.send_message(alice.id, markup, parse_mode="HTML")
    # PTB drops "Bad Request: " and capitalize()s the rest, lower-casing it.
    assert caught.value.message == f"Can't parse entities: {error}".capitalize()
    assert telegram_fake.sent == []


def test_html_parsing_matches_tdlib() -> None:
    assert parse_html("&lt&gt;&quot;&#33;&#x41;&nbsp;") == ('<>"!A&nbsp;', [])
    assert parse_html('<a href="https://x.org/?a=1&amp;b=2">x</a> <i></i>') == (
        "x ",
        [{"type": "text_link", "offset": 0, "length": 1, "url": "https://x.org/?a=1&b=2"}],
    )
    assert parse_html("🙂<code>a</>")[1] == [{"type": "code", "offset": 2, "length": 1}]


async def test_long_text_and_strangers_are_refused(telegram_fake: TelegramFake, bot: Bot) -> None:
    bob = telegram_fake.add_user(1002, "Bob")
    telegram_fake.private_chat(bob)
    with pytest.raises(Forbidden, match="bot can't initiate conversation with a user"):
        await bot.send_message(bob.id, "hello")
    start = telegram_fake.user_starts(bob, "connect")
    assert start["message"]["entities"] == [{"type": "bot_command", "offset": 0, "length": 6}]
    await bot.send_message(bob.id, "é" * 4096)  # characters, not bytes or UTF-16 units
    with pytest.raises(BadRequest, match="Message is too long"):
        await bot.send_message(bob.id, "x" * 4097)
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.send_message(42, "hello")


async def test_429_and_injected_errors_surface_as_ptb_errors(
    telegram_fake: TelegramFake, bot: Bot
) -> None:
    alice = telegram_fake.add_user(1001, "Alice")
    telegram_fake.user_starts(alice)
    telegram_fake.inject_429(count=1, retry_after=7)
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(alice.id, "one")
    assert caught.value.retry_after == dtm.timedelta(seconds=7)
    telegram_fake.inject_error(502, "Bad Gateway")
    with pytest.raises(NetworkError, match="Bad Gateway"):
        await bot.send_message(alice.id, "two")
    telegram_fake.offline = True
    with pytest.raises(NetworkError):
        await bot.send_message(alice.id, "three")
    telegram_fake.offline = False
    await bot.send_message(alice.id, "four")
    assert telegram_fake.texts(alice.id) == ["four"]
    assert [c.status for c in telegram_fake.calls if c.method == "sendMessage"] == [429, 502, 200]


async def test_enforced_limits_answer_429(telegram_fake: TelegramFake, bot: Bot) -> None:
    telegram_fake.enforce_limits = True
    alice = telegram_fake.add_user(1001, "Alice")
    telegram_fake.user_starts(alice)
    await bot.send_message(alice.id, "first")
    with pytest.raises(RetryAfter):
        await bot.send_message(alice.id, "too soon")


async def test_offset_confirms_and_long_poll_returns_early(
    telegram_fake: TelegramFake, bot: Bot
) -> None:
    alice = telegram_fake.add_user(1001, "Alice")
    telegram_fake.user_sends(alice, None, "one")
    telegram_fake.user_sends(alice, None, "two")
    first = await bot.get_updates()
    assert [u.message.text for u in first if u.message] == ["one", "two"]
    assert len(await bot.get_updates()) == 2  # not confirmed yet: delivered again
    assert await bot.get_updates(offset=first[0].update_id + 1) == (first[1],)
    assert await bot.get_updates(offset=first[1].update_id + 1) == ()
    assert await bot.get_updates() == ()  # confirmed updates are gone

    def long_poll(call: Any) -> bool:
        return bool(call.method == "getUpdates")

    async def polling(calls: int) -> None:  # until the fake is holding one more long poll
        await telegram_fake.wait_for_calls(long_poll, calls + 1, timeout=5)

    started = time.monotonic()
    calls = sum(c.method == "getUpdates" for c in telegram_fake.calls)
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await polling(calls)  # waiting at the fake: the update below must end the wait early
    telegram_fake.user_sends(alice, None, "three")
    got = await poll
    assert [u.message.text for u in got if u.message] == ["three"]
    assert time.monotonic() - started < 2

    # A second process polling with the same token ends the first one's long poll.
    calls = sum(c.method == "getUpdates" for c in telegram_fake.calls)
    earlier = asyncio.create_task(bot.get_updates(offset=got[0].update_id + 1, timeout=5))
    await polling(calls)
    async with bot_for(telegram_fake) as other:
        assert await other.get_updates() == ()
    with pytest.raises(Conflict, match="terminated by other getUpdates request"):
        await earlier


async def test_buttons_and_callbacks(telegram_fake: TelegramFake, bot: Bot) -> None:
    alice = telegram_fake.add_user(1001, "Alice")
    telegram_fake.user_starts(alice)
    await bot.get_updates(offset=-1)  # skip the /start
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Retry", callback_data="retry:1")]])
    await bot.send_message(alice.id, "Sending failed.", reply_markup=keyboard)
    shown = await telegram_fake.wait_for_message(alice.id)
    assert shown.buttons() == [{"text": "Retry", "callback_data": "retry:1"}]
    telegram_fake.user_presses(alice, shown, "retry:1")
    (update,) = await bot.get_updates(offset=-1)
    query = update.callback_query
    assert query is not None
    assert (query.data, query.from_user.id) == ("retry:1", alice.id)
    assert await query.answer("On it")
    assert telegram_fake.callback_answers[query.id]["text"] == "On it"
    with pytest.raises(BadRequest, match="Query is too old"):  # answered once only
        await query.answer("Again")


async def test_files_are_served_by_get_file(telegram_fake: TelegramFake, bot: Bot) -> None:
    alice = telegram_fake.add_user(1001, "Alice")
    file_id = telegram_fake.add_file(b"%PDF-1.4 hello", "report.pdf", "application/pdf")
    telegram_fake.user_sends(alice, None, "/mail bob@example.com Report |", document=file_id)
    (update,) = await bot.get_updates()
    assert update.message is not None
    assert update.message.document is not None
    assert update.message.caption_entities[0].type == "bot_command"
    file = await bot.get_file(update.message.document.file_id)
    assert str(file.file_path).startswith(f"{telegram_fake.url}/file/bot123456:ABC-test/")
    assert bytes(await file.download_as_bytearray()) == b"%PDF-1.4 hello"


async def test_webhook_posts_updates_to_our_server_with_the_secret(
    telegram_fake: TelegramFake, unused_tcp_port: int
) -> None:
    """Our aiohttp route feeds PTB's update_queue; no Updater, no PTB web server."""
    bot_app = application_for(telegram_fake)
    handled: asyncio.Queue[Update] = asyncio.Queue()

    async def status(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await handled.put(update)

    bot_app.add_handler(CommandHandler("status", status))
    deliveries: list[tuple[str, object]] = []
    answers = [500, 200]  # the first delivery fails and is tried again

    async def hook(request: web.Request) -> web.Response:
        secret = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        body = await request.json()
        deliveries.append((secret, body))
        if (answer := answers.pop(0) if answers else 200) == 200:
            await bot_app.update_queue.put(Update.de_json(body, bot_app.bot))
        return web.Response(status=answer)

    web_app = web.Application()
    web_app.router.add_post("/telegram/webhook", hook)
    runner = web.AppRunner(web_app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    url = f"http://127.0.0.1:{unused_tcp_port}/telegram/webhook"
    try:
        async with bot_app:
            await bot_app.start()
            bot = bot_app.bot
            assert await bot.set_webhook(url, secret_token="s3cret", allowed_updates=["message"])
            alice = telegram_fake.add_user(1001, "Alice")
            sent = telegram_fake.user_sends(alice, None, "/status")
            update = await asyncio.wait_for(handled.get(), 5)
            assert update.message is not None
            assert update.message.text == "/status"
            assert deliveries == [("s3cret", sent), ("s3cret", sent)]
            with pytest.raises(Conflict, match="webhook is active"):
                await bot.get_updates()
            info = await bot.get_webhook_info()
            assert (info.url, info.pending_update_count) == (url, 0)
            assert info.last_error_message == "Wrong response from the webhook: 500"
            assert await bot.delete_webhook()
            assert await bot.get_updates() == ()  # delivered by webhook, so not queued
            await bot_app.stop()
    finally:
        await runner.cleanup()


async def test_runs_as_a_separate_process(unused_tcp_port: int) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.telegram_fake",
        "--port",
        str(unused_tcp_port),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        url = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().strip()
        assert url == f"http://127.0.0.1:{unused_tcp_port}"
        async with aiohttp.ClientSession() as http:
            body = {"user_id": 1001, "first_name": "Alice", "text": "/help"}
            async with http.post(f"{url}/_fake/send", json=body) as r:
                assert r.status == 200
            fake = TelegramFake(port=unused_tcp_port)  # only for its url and token
            async with bot_for(fake) as remote:
                (update,) = await remote.get_updates()
                await remote.send_message(1001, "<i>Help</i> text", parse_mode="HTML")
            async with http.get(f"{url}/_fake/sent") as r:
                sent = json.loads(await r.text())
        assert update.message is not None
        assert update.message.text == "/help"
        assert [(m["chat_id"], m["text"]) for m in sent] == [(1001, "Help text")]
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0


async def test_webhook_has_one_update_in_flight_per_chat_and_retries_until_answered(
    telegram_fake: TelegramFake, unused_tcp_port: int
) -> None:
    """The Bot API server's webhook queues (tdlib WebhookActor): a chat's next update waits for
    the 2xx of the one before; other chats go meanwhile; a failing update comes again, past
    any fixed number of tries."""
    release, bob_in = asyncio.Event(), asyncio.Event()
    order: list[tuple[int, int]] = []
    failures = {"left": 6}

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        chat = body["message"]["chat"]["id"]
        if chat == 2002 and failures["left"]:
            failures["left"] -= 1
            return web.Response(status=502)
        order.append((chat, body["update_id"]))
        if chat == 2002:
            bob_in.set()
        if chat == 1001 and body["message"]["text"] == "/first":
            await release.wait()  # held: Alice's next update must wait, Bob's must not
        return web.Response(text="ok")

    web_app = web.Application()
    web_app.router.add_post("/hook", hook)
    runner = web.AppRunner(web_app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    telegram_fake.webhook_retry_delay = telegram_fake.webhook_max_delay = 0.01
    try:
        bot = application_for(telegram_fake).bot
        async with bot:
            assert await bot.set_webhook(f"http://127.0.0.1:{unused_tcp_port}/hook")
        alice = telegram_fake.add_user(1001, "Alice")
        bob = telegram_fake.add_user(2002, "Bob")
        first = telegram_fake.user_sends(alice, None, "/first")
        second = telegram_fake.user_sends(alice, None, "/second")
        bobs = telegram_fake.user_sends(bob, None, "/status")
        await asyncio.wait_for(bob_in.wait(), 5)
        assert (1001, second["update_id"]) not in order  # still behind /first
        release.set()
        await telegram_fake.wait_confirmed(5)
        alices = [uid for chat, uid in order if chat == 1001]
        assert alices == [first["update_id"], second["update_id"]]
        assert telegram_fake.webhook_posts[bobs["update_id"]] == 7  # 6 failures, then 200
    finally:
        await runner.cleanup()
