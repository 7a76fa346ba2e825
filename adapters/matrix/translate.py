"""Between Matrix and the core, with no network: nio events become Messages, a Reply becomes the
content of an ``m.room.message`` (and the reactions that stand for its buttons)."""

from __future__ import annotations

import json
from html import escape
from typing import Any

from nio import MatrixRoom, RoomEncryptedMedia, RoomMessageMedia, RoomMessageText

from bot.chat import Message, Quoted, Reply

PLATFORM = "matrix"
# Matrix has no buttons: a reply's buttons become reactions the bot puts on its own message.
REACTIONS = {"Send": "✅", "Join": "🔗", "Cancel": "❌", "Undo": "↩️"}


def to_message(
    room: MatrixRoom,
    sender: str,
    text: str,
    event_key: str,
    attachment: str | None = None,
    *,
    joined: bool = False,
    quoted: Quoted | None = None,
) -> Message:
    """Return the Message ``sender`` sent in ``room`` (a reaction's command, or a join's none)."""
    return Message(
        platform=PLATFORM,
        user_id=sender,
        display_name=room.user_name(sender) or sender,
        room=room.room_id,
        is_direct=room.member_count <= 2,
        text=text,
        event_key=event_key,
        attachment=attachment,
        joined=joined,
        quoted=quoted,
    )


def replied_to(event: RoomMessageText) -> str | None:
    """Return the event id a text message replies to (a /mail answering a file), if any."""
    relates = event.source.get("content", {}).get("m.relates_to", {})
    target = relates.get("m.in_reply_to", {}).get("event_id")
    return target if isinstance(target, str) else None


def strip_fallback(body: str) -> str:
    """Return a reply's body without the quote of its target that older clients put first
    (Matrix client-server spec, "Fallbacks for rich replies": "> " lines, then an empty line)."""
    lines = body.split("\n")
    if not lines or not lines[0].startswith("> "):
        return body
    n = 0
    while n < len(lines) and lines[n].startswith(">"):
        n += 1
    if n < len(lines) and lines[n] == "":
        return "\n".join(lines[n + 1 :])
    return body


def quoted(room: MatrixRoom, event: RoomMessageText) -> Quoted:
    """Return the text message ``event`` as a command replying to it quotes it."""
    text = strip_fallback(event.body) if replied_to(event) else event.body
    author = room.user_name(event.sender) or event.sender
    return Quoted(author, event.server_timestamp / 1000, text)


def notice(reply: Reply) -> tuple[dict[str, Any], dict[str, str]]:
    """Return the ``m.notice`` content for ``reply`` (HTML with a plain fallback; buttons as
    links in the text, or reactions to press) and the command each reaction stands for."""
    text = reply.text
    reactions = {
        REACTIONS.get(b.label, b.label): b.data for b in reply.buttons if b.data is not None
    }
    for button in reply.buttons:
        if button.url and button.url not in text:
            text += f"\n{button.label}: {button.url}"
    if reactions:
        labels = [f"{REACTIONS.get(b.label, b.label)} {b.label}" for b in reply.buttons if b.data]
        text += f"\n(react with {' or '.join(labels)})"
    body: dict[str, Any] = {
        "msgtype": "m.notice",
        "body": text,
        "format": "org.matrix.custom.html",
        "formatted_body": escape(text).replace("\n", "<br>"),
    }
    if reply.reply_to and reply.reply_to.startswith("$"):
        body["m.relates_to"] = {"m.in_reply_to": {"event_id": reply.reply_to}}
    return body, reactions


def reaction(event_id: str, key: str) -> dict[str, Any]:
    """Return the content of the reaction ``key`` on the bot's own message ``event_id``."""
    return {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}


def media_ref(event: RoomMessageMedia | RoomEncryptedMedia) -> str:
    """Describe a file event for a later download: its mxc URL, name, type, size (and keys)."""
    body = event.source.get("content", {})
    info = body.get("info") or {}
    ref: dict[str, Any] = {
        "url": event.url,
        "name": body.get("filename") or event.body or "file",
        "mimetype": info.get("mimetype") or "application/octet-stream",
        "size": info.get("size"),
    }
    if isinstance(event, RoomEncryptedMedia):
        ref.update(key=event.key, hashes=event.hashes, iv=event.iv)
        ref["mimetype"] = event.mimetype or ref["mimetype"]
    return json.dumps(ref)
