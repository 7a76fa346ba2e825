"""The shape of a Telegram update, checked before python-telegram-bot reads it.

A webhook body comes from the network: anything that is not an update object of the Bot API's
documented shape (https://core.telegram.org/bots/api#update) is refused as a bad request, never
handed to ``Update.de_json``, which raises AttributeError, KeyError or TypeError (or builds a
half-broken object) on a body of the wrong shape. Only the parts mailbridge reads are kept: a
message (text or caption, sender, chat, and the document or photo it or the message it replies
to carries) and a button press.
"""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]
# Bot API "Integer": identifiers have at most 52 significant bits, so they fit a double.
MAX_ID = 2**53
MAX_DATE = 2**32  # Unix time; Telegram sends 32-bit dates (0 for an inaccessible message)
CHAT_TYPES = frozenset({"private", "group", "supergroup", "channel"})


class BadUpdate(ValueError):
    """The body is not an update object; the text says which field is wrong."""


def clean_update(data: object) -> JSON:
    """Return the parts of update ``data`` mailbridge reads, checked; raise BadUpdate."""
    if not isinstance(data, dict):
        raise BadUpdate(f"an update is a JSON object, not {type(data).__name__}")
    update: JSON = {"update_id": _integer(data, "update_id", required=True)}
    kinds = [key for key in data if key != "update_id"]
    # "At most one of the optional parameters can be present in any given update."
    if len(kinds) > 1:
        raise BadUpdate(f"an update carries one object, not {len(kinds)}")
    for kind in kinds:  # every kind of update the Bot API defines is an object
        if not isinstance(data[kind], dict):
            raise BadUpdate(f"{kind}: expected an object")
    if isinstance(message := data.get("message"), dict):
        update["message"] = _message(message, "message", replies=True)
    elif isinstance(query := data.get("callback_query"), dict):
        update["callback_query"] = _callback_query(query)
    return update  # other kinds (edits, channel posts...) are not for us: nothing to read


def _message(data: JSON, where: str, *, replies: bool) -> JSON:
    out: JSON = {
        "message_id": _integer(data, "message_id", where, required=True),
        "date": _integer(data, "date", where, required=True, low=0, high=MAX_DATE),
        "chat": _chat(_object(data, "chat", where, required=True), f"{where}.chat"),
    }
    if (sender := _object(data, "from", where)) is not None:
        out["from"] = _user(sender, f"{where}.from")
    for key in ("text", "caption"):
        if (text := _string(data, key, where)) is not None:
            out[key] = text
    if (document := _object(data, "document", where)) is not None:
        out["document"] = _file(document, f"{where}.document", ("file_name", "mime_type"))
    if "photo" in data:
        photo = data["photo"]
        if not isinstance(photo, list) or not all(isinstance(p, dict) for p in photo):
            raise BadUpdate(f"{where}.photo: expected an array of objects")
        out["photo"] = [
            _file(p, f"{where}.photo", ()) | _sizes(p, f"{where}.photo") for p in photo
        ]
    # "The Message object in this field will not contain further reply_to_message fields."
    if replies and (original := _object(data, "reply_to_message", where)) is not None:
        out["reply_to_message"] = _message(original, f"{where}.reply_to_message", replies=False)
    return out


def _callback_query(data: JSON) -> JSON:
    where = "callback_query"
    out: JSON = {
        "id": _string(data, "id", where, required=True),
        "from": _user(_object(data, "from", where, required=True), f"{where}.from"),
        "chat_instance": _string(data, "chat_instance", where, required=True),
    }
    if (message := _object(data, "message", where)) is not None:
        out["message"] = _message(message, f"{where}.message", replies=False)
    if (button := _string(data, "data", where)) is not None:
        out["data"] = button
    return out


def _chat(data: JSON, where: str) -> JSON:
    out: JSON = {"id": _integer(data, "id", where, required=True)}
    kind = _string(data, "type", where, required=True)
    if kind not in CHAT_TYPES:
        raise BadUpdate(f"{where}.type: not a chat type")
    out["type"] = kind
    for key in ("title", "username", "first_name", "last_name"):
        if (value := _string(data, key, where)) is not None:
            out[key] = value
    return out


def _user(data: JSON, where: str) -> JSON:
    out: JSON = {
        "id": _integer(data, "id", where, required=True),
        "first_name": _string(data, "first_name", where, required=True),
    }
    is_bot = data.get("is_bot")
    if not isinstance(is_bot, bool):
        raise BadUpdate(f"{where}.is_bot: expected true or false")
    out["is_bot"] = is_bot
    for key in ("last_name", "username"):
        if (value := _string(data, key, where)) is not None:
            out[key] = value
    return out


def _file(data: JSON, where: str, names: tuple[str, ...]) -> JSON:
    out: JSON = {
        "file_id": _string(data, "file_id", where, required=True),
        "file_unique_id": _string(data, "file_unique_id", where, required=True),
    }
    if (size := _integer(data, "file_size", where, low=0)) is not None:
        out["file_size"] = size
    for key in names:
        if (value := _string(data, key, where)) is not None:
            out[key] = value
    return out


def _sizes(data: JSON, where: str) -> JSON:
    return {
        key: _integer(data, key, where, required=True, low=0, high=MAX_DATE)
        for key in ("width", "height")
    }


def _object(data: JSON, key: str, where: str, *, required: bool = False) -> Any:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, dict):
        raise BadUpdate(f"{where}.{key}: expected an object")
    return value


def _integer(
    data: JSON,
    key: str,
    where: str = "update",
    *,
    required: bool = False,
    low: int = -MAX_ID,
    high: int = MAX_ID,
) -> Any:
    value = data.get(key)
    if value is None and not required:
        return None
    # bool is an int to Python, not to JSON.
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value < high:
        raise BadUpdate(f"{where}.{key}: expected an integer")
    return value


def _string(data: JSON, key: str, where: str, *, required: bool = False) -> Any:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise BadUpdate(f"{where}.{key}: expected a string")
    try:  # RFC 8259 section 8.2: a lone surrogate is no character; Telegram never sends one
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadUpdate(f"{where}.{key}: not Unicode text") from None
    return value
