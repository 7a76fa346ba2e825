"""The chat adapters on their own, with no server: what they declare and how they translate
recorded Bot API updates and Matrix events into the core's messages, and replies back."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from nio import Event, MatrixRoom, RoomEncryptedMedia, RoomMessageMedia, RoomMessageText

from adapters.console import ConsoleAdapter
from adapters.matrix import MatrixAdapter
from adapters.matrix import translate as mx
from adapters.ratelimit import Backoff
from adapters.telegram import TelegramAdapter
from adapters.telegram import translate as tg
from adapters.telegram.shape import BadUpdate
from bot.chat import (
    Addressed,
    AttachmentRefused,
    Attachments,
    Button,
    ChatAdapter,
    DeepLinks,
    DirectChats,
    Invite,
    Reply,
)
from bot.config import MatrixConfig, TelegramConfig
from bot.policy import admits
from bot.wording import attachment_refused
from tests.conftest import make_config, start_bench

ALICE = {"id": 1001, "is_bot": False, "first_name": "Alice", "last_name": "Liddell"}
ALICE_AT = ALICE | {"username": "alice"}
PRIVATE = {"id": 1001, "type": "private", "first_name": "Alice"}
GROUP = {"id": -100123, "type": "supergroup", "title": "Team"}
PDF = {
    "file_id": "BQACAgQ",
    "file_unique_id": "AgAD",
    "file_size": 7340032,
    "file_name": "report.pdf",
    "mime_type": "application/pdf",
}


def update(**kind: Any) -> dict[str, Any]:
    return {"update_id": 500, **kind}


def message(text: str | None = None, chat: dict[str, Any] = PRIVATE, **more: Any) -> Any:
    body = {"message_id": 42, "date": 1764633600, "chat": chat, "from": ALICE_AT, **more}
    return body | ({"text": text} if text is not None else {})


def test_each_adapter_declares_the_capabilities_the_core_uses(tmp_path: Path) -> None:
    telegram = TelegramAdapter(TelegramConfig(token="1:x"))
    matrix = MatrixAdapter(
        MatrixConfig(homeserver="http://127.0.0.1:1", user_id="@bot:x", store_path=tmp_path),
        admit=lambda _: True,
    )
    console = ConsoleAdapter()
    capabilities = (Addressed, DeepLinks, DirectChats, Attachments)
    has = {
        a.platform: {c.__name__ for c in capabilities if isinstance(a, c)}
        for a in (telegram, matrix, console)
    }
    assert all(isinstance(a, ChatAdapter) for a in (telegram, matrix, console))
    assert has == {
        "telegram": {"Addressed", "DeepLinks", "Attachments"},
        "matrix": {"DirectChats", "Attachments"},
        "console": set(),
    }


def test_a_telegram_private_message_becomes_a_direct_message_from_its_sender() -> None:
    got = tg.from_json(update(message=message("/mail bob@example.com Hi | Hello")))
    assert got is not None
    assert (got.platform, got.user_id, got.display_name) == (
        "telegram",
        "1001",
        "Alice Liddell (@alice)",
    )
    assert (got.room, got.is_direct, got.event_key) == ("1001", True, "1001:42")
    assert (got.text, got.attachment, got.joined) == (
        "/mail bob@example.com Hi | Hello",
        None,
        False,
    )


def test_a_telegram_group_command_keeps_its_address_and_names_its_group() -> None:
    got = tg.from_json(update(message=message("/help@mailbridge_bot", chat=GROUP)))
    assert got is not None
    assert (got.room, got.is_direct, got.text) == ("-100123", False, "/help@mailbridge_bot")


def test_a_telegram_mail_replying_to_a_document_carries_the_file_it_answers() -> None:
    original = message(document=PDF, chat=GROUP) | {"message_id": 41}
    got = tg.from_json(
        update(message=message("/mail bob@example.com Report", GROUP, reply_to_message=original))
    )
    assert got is not None
    assert got.attachment is not None
    assert tg.attachment_ref(got.attachment) == (
        "BQACAgQ",
        7340032,
        "report.pdf",
        "application/pdf",
    )


def test_a_telegram_photo_with_a_caption_attaches_its_largest_size() -> None:
    sizes = [
        {
            "file_id": f"p{w}",
            "file_unique_id": f"u{w}",
            "file_size": w * 10,
            "width": w,
            "height": w,
        }
        for w in (90, 320, 1280)
    ]
    got = tg.from_json(update(message=message(caption="/mail bob@example.com Look", photo=sizes)))
    assert got is not None
    assert got.attachment is not None
    assert got.text == "/mail bob@example.com Look"
    assert tg.attachment_ref(got.attachment) == ("p1280", 12800, "photo-u1280.jpg", "image/jpeg")


def test_a_telegram_button_press_is_the_command_the_button_stands_for() -> None:
    query = {
        "id": "4382",
        "from": ALICE,
        "chat_instance": "-99",
        "message": message("Send it?", chat=GROUP)
        | {"from": {"id": 7, "is_bot": True, "first_name": "bot"}},
        "data": "/send 12",
    }
    got = tg.from_json(update(callback_query=query))
    assert got is not None
    assert (got.text, got.room, got.event_key, got.display_name) == (
        "/send 12",
        "-100123",
        "callback:4382",
        "Alice Liddell",
    )


@pytest.mark.parametrize(
    "body",
    [
        update(edited_message=message("/mail late@example.com")),
        update(channel_post=message("/help", chat={"id": -1001, "type": "channel"})),
        update(message=message("/help") | {"from": {"id": 9, "is_bot": True, "first_name": "B"}}),
        update(message=message(None)),  # a sticker, a service message: no text
        update(message=message(None, document=PDF)),  # a file alone is no command
    ],
    ids=["edit", "channel post", "another bot", "no text", "file without caption"],
)
def test_telegram_updates_not_for_the_core_become_nothing(body: dict[str, Any]) -> None:
    assert tg.from_json(body) is None


def test_a_misshapen_telegram_update_is_refused_naming_its_field() -> None:
    with pytest.raises(BadUpdate, match=r"message.chat.type"):
        tg.from_json(update(message=message("/help", chat={"id": 1, "type": "room"})))


def test_a_telegram_reply_is_split_at_4096_utf16_units_at_a_line_break() -> None:
    text = ("a" * 99 + "\n") * 50 + "😀" * 3000  # 5,000 units of lines, then 6,000 of emoji
    pieces = tg.split(text)
    assert "".join(pieces) == text
    assert all(len(p.encode("utf-16-le")) // 2 <= tg.MAX_TEXT for p in pieces)
    assert len(pieces[0]) == 4000  # the last line break before the limit
    assert len(pieces) == 3
    assert tg.split("") == ["..."]  # Telegram refuses an empty message


def test_telegram_buttons_and_the_message_answered() -> None:
    reply = Reply(
        "Mail #3?",
        buttons=(Button("Send", data="/send 3"), Button("Open", url="https://t.me/x?start=a")),
        reply_to="-100123:42",
    )
    markup = tg.keyboard(reply)
    assert markup is not None
    rows = [[b.to_dict() for b in row] for row in markup.inline_keyboard]
    assert rows == [
        [{"text": "Send", "callback_data": "/send 3"}],
        [{"text": "Open", "url": "https://t.me/x?start=a"}],
    ]
    assert tg.keyboard(Reply("no buttons")) is None
    assert tg.message_id(reply.reply_to, "-100123") == 42
    assert tg.message_id(reply.reply_to, "1001") is None  # answered elsewhere: no reply link
    assert tg.message_id("callback:4382", "-100123") is None


def room(*members: str) -> MatrixRoom:
    joined = MatrixRoom("!room:x", "@bot:x")
    joined.add_member("@bot:x", "mailbridge", None)
    for member in members:
        joined.add_member(member, member.split(":")[0][1:].capitalize(), None)
    return joined


def event(content: dict[str, Any], event_id: str = "$text", *, decrypted: bool = False) -> Any:
    source = {"type": "m.room.message", "event_id": event_id, "sender": "@alice:x"}
    source |= {"origin_server_ts": 1764633600000, "content": content}
    # An encrypted room's event as nio hands it on after decrypting its m.room.encrypted.
    return Event.parse_decrypted_event(source) if decrypted else Event.parse_event(source)


def test_a_matrix_text_in_a_two_member_room_is_a_direct_message_with_its_reply_target() -> None:
    text = event(
        {
            "msgtype": "m.text",
            "body": "!mail bob@example.com Report",
            "m.relates_to": {"m.in_reply_to": {"event_id": "$file"}},
        }
    )
    assert isinstance(text, RoomMessageText)
    assert mx.replied_to(text) == "$file"
    got = mx.to_message(room("@alice:x"), text.sender, text.body, text.event_id, "ref")
    assert (got.platform, got.user_id, got.display_name, got.room) == (
        "matrix",
        "@alice:x",
        "Alice",
        "!room:x",
    )
    assert (got.is_direct, got.text, got.event_key, got.attachment) == (
        True,
        "!mail bob@example.com Report",
        "$text",
        "ref",
    )
    shared = mx.to_message(room("@alice:x", "@carol:x"), "@alice:x", "!help", "$h")
    assert not shared.is_direct
    greeting = mx.to_message(room("@alice:x"), "@alice:x", "", "join:!room:x", joined=True)
    assert greeting.joined
    assert greeting.text == ""


def test_a_matrix_file_event_is_described_for_a_later_download() -> None:
    plain = event(
        {
            "msgtype": "m.file",
            "body": "report.pdf",
            "url": "mxc://x/abc",
            "info": {"size": 12, "mimetype": "application/pdf"},
        },
        "$file",
    )
    assert isinstance(plain, RoomMessageMedia)
    assert json.loads(mx.media_ref(plain)) == {
        "url": "mxc://x/abc",
        "name": "report.pdf",
        "mimetype": "application/pdf",
        "size": 12,
    }
    key = {"kty": "oct", "alg": "A256CTR", "k": "qcHVMSgY", "key_ops": ["decrypt"], "ext": True}
    encrypted = event(
        {
            "msgtype": "m.image",
            "body": "cat.png",
            "info": {"size": 40, "mimetype": "image/png"},
            "file": {
                "url": "mxc://x/enc",
                "key": key,
                "iv": "X85+XgHN+HEAAAAAAAAAAA",
                "hashes": {"sha256": "6ZtQ"},
                "v": "v2",
            },
        },
        "$enc",
        decrypted=True,
    )
    assert isinstance(encrypted, RoomEncryptedMedia)
    ref = json.loads(mx.media_ref(encrypted))
    assert (ref["url"], ref["name"], ref["mimetype"], ref["size"]) == (
        "mxc://x/enc",
        "cat.png",
        "image/png",
        40,
    )
    assert (ref["key"]["k"], ref["iv"], ref["hashes"]) == (
        "qcHVMSgY",
        "X85+XgHN+HEAAAAAAAAAAA",
        {"sha256": "6ZtQ"},
    )


def test_a_matrix_reply_spells_its_buttons_as_reactions_and_links() -> None:
    reply = Reply(
        "Mail #3 <b>to</b> bob?",
        buttons=(
            Button("Send", data="/send 3"),
            Button("Cancel", data="/cancel 3"),
            Button("Connect Gmail", url="https://accounts.example/x"),
        ),
        reply_to="$text",
    )
    content, reactions = mx.notice(reply)
    assert reactions == {"✅": "/send 3", "❌": "/cancel 3"}
    assert content["msgtype"] == "m.notice"
    assert content["body"] == (
        "Mail #3 <b>to</b> bob?\nConnect Gmail: https://accounts.example/x"
        "\n(react with ✅ Send or ❌ Cancel)"
    )
    assert content["formatted_body"].startswith("Mail #3 &lt;b&gt;to&lt;/b&gt; bob?<br>")
    assert content["m.relates_to"] == {"m.in_reply_to": {"event_id": "$text"}}
    assert "m.relates_to" not in mx.notice(Reply("hi", reply_to="1001:42"))[0]
    assert mx.reaction("$mine", "✅") == {
        "m.relates_to": {"rel_type": "m.annotation", "event_id": "$mine", "key": "✅"}
    }


def test_backoff_doubles_to_its_cap_and_starts_over_after_a_success() -> None:
    backoff = Backoff(cap=5.0)
    assert [backoff.failed() for _ in range(4)] == [2.0, 4.0, 5.0, 5.0]
    backoff.succeeded()
    assert backoff.failed() == 2.0


# What the adapters leave to the core: which invites to take, the greeting, the file sentences.


def test_the_core_admits_invites_from_the_allow_list_only() -> None:
    admit = admits(("matrix:@*:example.org",))
    assert admit(Invite("matrix", "@alice:example.org", "!r:example.org"))
    assert not admit(Invite("matrix", "@x:evil.example:example.org", "!r:example.org"))
    assert admits(())(Invite("matrix", "@anyone:else.org", "!r:else.org"))  # no list: all


async def test_a_room_joined_on_invite_is_greeted_by_the_core(tmp_path: Path) -> None:
    async for bench in start_bench(make_config(tmp_path), platform="matrix"):
        joined = replace(bench.chat.message("", event_key="join:!r:x"), joined=True)
        await bench.core.handle(joined)
        (said,) = bench.chat.replies
        assert said.text.startswith("Hello Alice! mailbridge sends email")
        assert "!mail" in said.text


@pytest.mark.parametrize(
    ("refused", "sentence"),
    [
        (
            AttachmentRefused(
                "too_large", "telegram", size=40 * 2**20, limit=20 * 2**20, by_network=True
            ),
            "Telegram lets bots download files up to 20 MB; this one is 40.0 MB, so it cannot "
            "be attached. Nothing was sent.",
        ),
        (
            AttachmentRefused("too_large", "matrix", size=36 * 2**20, limit=35 * 2**20),
            "That file is 36.0 MB; Gmail takes at most 35 MB per message, so it cannot be "
            "attached. Nothing was sent.",
        ),
        (
            AttachmentRefused("refused", "telegram", detail="file is too big"),
            "Telegram would not hand over the file (file is too big).",
        ),
        (
            AttachmentRefused("unreachable", "telegram"),
            "The file could not be downloaded from Telegram; try again.",
        ),
        (
            AttachmentRefused("unreachable", "matrix", detail="404 Not Found"),
            "The file could not be downloaded (404 Not Found); try again.",
        ),
        (
            AttachmentRefused("undecryptable", "matrix"),
            "The file could not be decrypted, so it was not attached.",
        ),
    ],
    ids=["over telegram's limit", "over gmail's", "refused", "unreachable", "no answer", "keys"],
)
def test_a_file_the_network_does_not_hand_over_is_one_sentence(
    refused: AttachmentRefused, sentence: str
) -> None:
    assert attachment_refused(refused) == sentence
