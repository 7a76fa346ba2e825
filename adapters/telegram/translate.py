"""Between the Bot API and the core, with no network: an update becomes a Message, a Reply
becomes the pieces of sendMessage calls."""

from __future__ import annotations

import json
from typing import Any

from telegram import ForceReply, InlineKeyboardButton, InlineKeyboardMarkup, Update, User
from telegram import Message as TgMessage

from adapters.telegram.shape import clean_update
from bot.chat import Message, Quoted, Reply

PLATFORM = "telegram"
MAX_TEXT = 4096  # characters (UTF-16 code units) per message


def from_json(data: object) -> Message | None:
    """Return the Message in Bot API update ``data`` (checked: BadUpdate if misshapen)."""
    return to_message(Update.de_json(clean_update(data), None))


def to_message(update: Update) -> Message | None:
    """Return what ``update`` says to the core: a command, text, or a button press; else None."""
    query = update.callback_query
    if query is not None:
        # A button press: its data is the command the button stands for ("/send 12").
        chat = query.message.chat if query.message is not None else None
        if chat is None or not query.data or query.from_user.is_bot:
            return None
        return Message(
            platform=PLATFORM,
            user_id=str(query.from_user.id),
            display_name=_name(query.from_user),
            room=str(chat.id),
            is_direct=chat.type == "private",
            text=query.data,
            event_key=f"callback:{query.id}",
        )
    msg = update.message
    if msg is None or msg.from_user is None or msg.from_user.is_bot:
        return None  # edits, channel posts, service messages and other bots are not for us
    text = msg.text or msg.caption
    if not text:
        return None
    return Message(
        platform=PLATFORM,
        user_id=str(msg.from_user.id),
        display_name=_name(msg.from_user),
        room=str(msg.chat.id),
        is_direct=msg.chat.type == "private",
        text=text,
        event_key=f"{msg.chat.id}:{msg.message_id}",
        attachment=_attachment_ref(msg.reply_to_message or msg),
        quoted=_quoted(msg.reply_to_message),
    )


def attachment_ref(ref: str) -> tuple[str, int | None, str, str]:
    """Return the file id, size, file name and media type a Message's attachment names."""
    file_id, size, name, mime = json.loads(ref)
    return file_id, size, name, mime


def split(text: str) -> list[str]:
    """Split text into pieces of at most MAX_TEXT UTF-16 units, at line breaks if possible."""
    if not text:
        return ["..."]
    chunks: list[str] = []
    while _units(text) > MAX_TEXT:
        cut = _fit(text)
        newline = text.rfind("\n", 0, cut)
        if newline > cut // 2:
            cut = newline + 1
        chunks.append(text[:cut])
        text = text[cut:]
    chunks.append(text)
    return chunks


def keyboard(reply: Reply) -> InlineKeyboardMarkup | ForceReply | None:
    """Return the reply's buttons as an inline keyboard, one button a row; a question opens
    the reply box instead (ForceReply, selective: only for the user whose message it answers)."""
    if not reply.buttons:
        return ForceReply(selective=True) if reply.ask else None
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(b.label, url=b.url)
                if b.url
                else InlineKeyboardButton(b.label, callback_data=b.data or b.label)
            ]
            for b in reply.buttons
        ]
    )


def message_id(event_key: str | None, room: str) -> int | None:
    """Return the id of the message a reply answers, if it is in ``room``."""
    if not event_key:
        return None
    chat, _, number = event_key.rpartition(":")
    return int(number) if chat == room and number.isdigit() else None


def _name(user: User) -> str:
    return user.full_name + (f" (@{user.username})" if user.username else "")


def _quoted(msg: TgMessage | None) -> Quoted | None:
    """Return the text message a command replies to. In a group in privacy mode the bot gets
    only commands and replies to its own messages, but a command that replies to anyone's
    message carries that message whole in ``reply_to_message`` (Bot API, Message object)."""
    if msg is None or not msg.text:
        return None  # a file's caption is not forwarded: the file itself is attached
    if msg.from_user is not None:
        author = _name(msg.from_user)
    else:  # a channel post or an anonymous group admin
        author = (msg.sender_chat.title if msg.sender_chat else None) or "someone"
    return Quoted(author, msg.date.timestamp(), msg.text)


def _attachment_ref(msg: TgMessage) -> str | None:
    """Describe the document or photo of ``msg`` (the one a /mail replies to, or carries)."""
    ref: list[Any] | None = None
    if msg.document is not None:
        d = msg.document
        ref = [
            d.file_id,
            d.file_size,
            d.file_name or "file",
            d.mime_type or "application/octet-stream",
        ]
    elif msg.photo:
        p = msg.photo[-1]  # the largest size
        ref = [p.file_id, p.file_size, f"photo-{p.file_unique_id}.jpg", "image/jpeg"]
    return json.dumps(ref) if ref is not None else None


def _units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _fit(text: str) -> int:
    """Return the longest prefix length of ``text`` within MAX_TEXT UTF-16 units."""
    units = 0
    for i, ch in enumerate(text):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > MAX_TEXT:
            return i
    return len(text)
