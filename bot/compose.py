"""Compose an RFC 5322 message from a parsed ``/mail`` with the email package's modern API."""

from __future__ import annotations

from datetime import UTC, datetime
from email import policy
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from bot.addresses import EmailAddress
from bot.chat import Attachment
from bot.grammar import MailRequest
from bot.richtext import markdown_html

TRIAL_SENDER = EmailAddress("trial", "mailbridge.invalid")


def compose(
    request: MailRequest,
    sender: EmailAddress,
    sender_name: str = "",
    now: datetime | None = None,
    *,
    markdown: bool = False,
    attachments: tuple[Attachment, ...] = (),
) -> EmailMessage:
    """Return the message for ``request`` sent by ``sender``; with ``markdown``, a
    multipart/alternative with the text as typed and HTML rendered from it."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = _address(sender, sender_name)
    if request.to:
        msg["To"] = [_address(a) for a in request.to]
    if request.cc:
        msg["Cc"] = [_address(a) for a in request.cc]
    if request.bcc:
        # Gmail reads Bcc from the raw message and strips it before delivery.
        msg["Bcc"] = [_address(a) for a in request.bcc]
    if request.subject:
        _set_subject(msg, request.subject)
    msg["Date"] = format_datetime(now or datetime.now(UTC))
    # An explicit domain: make_msgid() would otherwise ask DNS for this host's name.
    msg["Message-ID"] = make_msgid(domain=sender.domain)
    msg.set_content(request.body + "\n", charset="utf-8")
    if markdown and request.body:
        msg.add_alternative(markdown_html(request.body), subtype="html", charset="utf-8")
    for item in attachments:
        maintype, _, subtype = item.content_type.partition("/")
        if not maintype or not subtype or any(c in item.content_type for c in "\r\n;"):
            maintype, subtype = "application", "octet-stream"
        msg.add_attachment(
            item.data, maintype=maintype, subtype=subtype, filename=_filename(item.filename)
        )
    return msg


def _filename(name: str) -> str:
    # A file name from chat goes into a header parameter: keep it printable and short.
    clean = "".join(ch for ch in name if ch.isprintable() and ch not in '\\/"').strip()
    return clean[:150] or "attachment"


def _address(address: EmailAddress, name: str = "") -> Address:
    # Display names are the user's chat name: keep them, but never a header-breaking character.
    clean = "".join(ch for ch in name if ch.isprintable()).strip()
    return Address(display_name=clean, username=address.local, domain=address.domain)


def _set_subject(msg: EmailMessage, subject: str) -> None:
    if subject.isascii() and "=?" not in subject:
        msg["Subject"] = subject
        return
    # Encode it ourselves: the email package would send a typed "=?utf-8?q?x?=" as is, and
    # mail readers would then show "x". RFC 2047 base64 words decode back exactly.
    msg.set_raw("Subject", Header(subject, "utf-8", header_name="Subject").encode(linesep="\r\n"))
