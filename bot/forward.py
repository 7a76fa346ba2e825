"""Forwarding a chat message by mail: the quoted text, its attribution and a default subject."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, tzinfo

from bot.chat import Quoted
from bot.grammar import MailRequest

SUBJECT_MAX = 60  # characters of the forwarded text's first line that make a default subject
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029\ud800-\udfff]")


def with_forward(args: str, quoted: Quoted, zone: tzinfo = UTC) -> str:
    """Return ``/mail`` arguments whose body ends with ``quoted``: a "|" is optional then."""
    head, _, typed = args.partition("|")
    when = datetime.fromtimestamp(quoted.sent_at, zone).strftime("%Y-%m-%d %H:%M %Z")
    lines = quoted.text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    quote = "\n".join(f"> {line}" if line else ">" for line in lines)
    forwarded = f"{quoted.author} wrote on {when}:\n{quote}"
    body = f"{typed.strip()}\n\n{forwarded}" if typed.strip() else forwarded
    return f"{head.strip()} | {body}"


def default_subject(request: MailRequest, quoted: Quoted) -> MailRequest:
    """Give a forward without a subject the first line of the forwarded text, shortened."""
    if request.subject:
        return request
    first = next((line.strip() for line in quoted.text.splitlines() if line.strip()), "")
    first = _UNSAFE.sub("", first)
    if len(first) > SUBJECT_MAX:
        cut = first.rfind(" ", 0, SUBJECT_MAX)
        first = first[: cut if cut > SUBJECT_MAX // 2 else SUBJECT_MAX].rstrip() + "…"
    return replace(request, subject=first)
