"""Compose an RFC 5322 message from a parsed ``/mail``.

The email package builds the MIME structure and the body. The top-level headers and the file
names of attachments are written here and set raw: the package folds long headers into RFC 2047
encoded-words of up to 77 characters (the limit is 75), leaves a typed "=?utf-8?q?x?=" in a
subject or display name for readers to decode (and decodes one in a file name itself), and may
fold a long display name so that its quoting is lost.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from email import policy
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, quote
from urllib.parse import quote as quote_param

from bot.addresses import EmailAddress
from bot.chat import Attachment
from bot.grammar import MailRequest
from bot.richtext import markdown_html

TRIAL_SENDER = EmailAddress("trial", "mailbridge.invalid")

_LINE = 78  # RFC 5322 section 2.1.1: a line SHOULD be at most 78 characters (MUST 998)
_WORD = 75  # RFC 2047 section 2: an encoded-word is at most 75 characters
_OPEN, _CLOSE = "=?utf-8?b?", "?="
_WORDS = re.compile(r"[ \t]*[^ \t]+")
# RFC 2231 attribute-char: ASCII but space, controls, "*", "'", "%" and RFC 2045 tspecials.
_ATTRIBUTE_CHARS = "!#$&+-.^_`{|}~"


class _Registry(HeaderRegistry):
    """The email package's header registry, building each header class once, not per header."""

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = super().__getitem__(name)
        return made


# Headers set raw here are folded already; never let the package refold them.
_POLICY = policy.SMTP.clone(header_factory=_Registry(), refold_source="none")


def compose(
    request: MailRequest,
    sender: EmailAddress,
    sender_name: str = "",
    now: datetime | None = None,
    *,
    markdown: bool = False,
    attachments: tuple[Attachment, ...] = (),
    signature: str = "",
) -> EmailMessage:
    """Return the message for ``request`` sent by ``sender``; with ``markdown``, a
    multipart/alternative with the text as typed and HTML rendered from it; ``signature``
    ends both after the "-- " line."""
    msg = EmailMessage(policy=_POLICY)
    msg.set_raw("From", _mailbox("From", sender, sender_name))
    # Gmail reads Bcc from the raw message and strips it before delivery.
    for name, addresses in (("To", request.to), ("Cc", request.cc), ("Bcc", request.bcc)):
        if addresses:
            items = [f"{a}," for a in addresses[:-1]] + [str(addresses[-1])]
            msg.set_raw(name, _fold(name, [items[0], *(f" {i}" for i in items[1:])]))
    if request.subject:
        msg.set_raw("Subject", _subject(request.subject))
    msg.set_raw("Date", format_datetime(now or datetime.now(UTC)))
    # An explicit domain: make_msgid() would otherwise ask DNS for this host's name.
    msg.set_raw("Message-ID", make_msgid(domain=sender.domain))
    text = request.body + "\n"
    if signature:
        # RFC 3676 section 4.3: the signature follows a line of exactly "-- ".
        text = f"{request.body}\n\n-- \n{signature}\n" if request.body else f"-- \n{signature}\n"
    msg.set_content(text, charset="utf-8")
    if markdown and (request.body or signature):
        page = markdown_html(request.body, signature)
        msg.add_alternative(page, subtype="html", charset="utf-8")
    for item in attachments:
        maintype, _, subtype = item.content_type.partition("/")
        if not maintype or not subtype or any(c in item.content_type for c in "\r\n;"):
            maintype, subtype = "application", "octet-stream"
        msg.add_attachment(item.data, maintype=maintype, subtype=subtype)
        # The package would decode a typed "=?...?=" in a file name as it sets it; write it here.
        *_, part = msg.iter_attachments()  # the one just added, last
        del part["Content-Disposition"]
        part.set_raw("Content-Disposition", _disposition(item.filename))
    return msg


def _subject(subject: str) -> str:
    """Return the folded value of a Subject header that decodes back to ``subject`` exactly."""
    # Plain where it can go as is: ASCII, that no reader takes for an encoded-word, foldable at
    # its spaces. Anything else is encoded whole: base64 words decode back exactly.
    if subject.isascii() and "=?" not in subject and subject == subject.strip(" \t"):
        value = _fold("Subject", _WORDS.findall(subject))
        if all(len(line) <= _LINE for line in f"Subject: {value}".split("\r\n")):
            return value
    return _fold("Subject", _encoded_words(subject, _LINE - len("Subject: ")))


def _mailbox(header: str, address: EmailAddress, name: str) -> str:
    # Display names are the user's chat name: keep them, but never a header-breaking character.
    clean = "".join(ch for ch in name if ch.isprintable()).strip()
    if not clean:
        return str(address)
    angle = f" <{address}>"
    if clean.isascii() and "=?" not in clean:
        # A quoted-string keeps every character as typed (RFC 5322 section 3.2.4).
        quoted = f'"{quote(clean)}"'
        if len(header) + 2 + len(quoted) <= _LINE:
            return _fold(header, [quoted, angle])
    return _fold(header, [*_encoded_words(clean, _LINE - len(header) - 2), angle])


def _encoded_words(text: str, room: int) -> list[str]:
    """Split ``text`` into base64 encoded-words, the first fitting in ``room`` characters."""
    data = text.encode("utf-8")
    words: list[str] = []
    start = 0
    while start < len(data):
        end = min(start + 3 * ((min(room, _WORD) - len(_OPEN) - len(_CLOSE)) // 4), len(data))
        # Readers that keep the white space between two words (Python's address parser does)
        # then add a space only where the text has one: end a word before a space if there is
        # one. Otherwise whole characters only (RFC 2047 section 5): not inside a UTF-8 sequence.
        space = data.rfind(b" ", start + 1, end + 1) if end < len(data) else -1
        if space > start:
            end = space
        while end < len(data) and data[end] & 0xC0 == 0x80:
            end -= 1
        words.append(f"{_OPEN}{base64.b64encode(data[start:end]).decode('ascii')}{_CLOSE}")
        start, room = end, _LINE - 1
    # Readers drop the white space between adjacent encoded-words (RFC 2047 section 6.2).
    return [words[0], *(f" {word}" for word in words[1:])]


def _fold(header: str, tokens: Iterable[str]) -> str:
    """Join ``tokens`` (all but the first starting with white space) into a folded value."""
    lines: list[str] = []
    line, used = "", len(header) + 2
    for token in tokens:
        if line and used + len(line) + len(token) > _LINE:
            lines.append(line)
            line, used = token, 0
        else:
            line += token
    lines.append(line)
    return "\r\n".join(lines)


def _disposition(filename: str) -> str:
    # A file name from chat goes into a header parameter: keep it printable and short.
    name = "".join(ch for ch in filename if ch.isprintable() and ch not in '\\/"').strip()
    name = name[:150] or "attachment"
    plain = f'attachment; filename="{name}"'
    if name.isascii() and "=?" not in name and len("Content-Disposition: ") + len(plain) <= _LINE:
        return plain
    # Else RFC 2231 (sections 3 and 4): percent-encoded UTF-8 in numbered pieces of a line each,
    # which no reader takes for an encoded-word.
    encoded = quote_param(name, safe=_ATTRIBUTE_CHARS)
    pieces: list[str] = []
    while encoded:
        room = _LINE - len(f" filename*{len(pieces)}*=;") - (0 if pieces else len("utf-8''"))
        cut = min(room, len(encoded))
        if "%" in encoded[cut - 2 : cut]:  # never split a %XX
            cut = encoded.rindex("%", 0, cut)
        pieces.append(encoded[:cut])
        encoded = encoded[cut:]
    pieces[0] = f"utf-8''{pieces[0]}"
    if len(pieces) == 1:
        return f"attachment;\r\n filename*={pieces[0]}"
    return "attachment;\r\n " + ";\r\n ".join(
        f"filename*{i}*={piece}" for i, piece in enumerate(pieces)
    )
