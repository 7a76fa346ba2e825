"""The command grammar: prefixes, ``/cmd@BotName``, and the ``/mail`` arguments."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from bot.addresses import MAX_RECIPIENTS, EmailAddress, parse_address
from bot.errors import AddressError, UsageError

MAIL_USAGE = (
    "Usage: /mail <to> <subject> | <body>\n"
    "<to> is one or more addresses separated by commas, no spaces; put cc: or bcc: before an "
    "address to copy it.\n"
    "Example: /mail bob@example.com,cc:carol@example.com Lunch? | Free on Friday?"
)
# A command word: prefix, name, optional @BotName (Telegram appends it in groups).
_COMMAND = re.compile(r"([/!])([A-Za-z][A-Za-z0-9_]*)(?:@([A-Za-z0-9_]+))?(?=\s|$)")
# Characters that must never reach a mail header, even where Python's email package would fold.
_HEADER_BREAKERS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
# A lone UTF-16 surrogate can come in a chat's JSON ("\ud800") but has no UTF-8 form to send.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Command:
    """A command addressed to us: lower-case name and the raw argument text."""

    name: str
    args: str


@dataclass(frozen=True, slots=True)
class MailRequest:
    """A parsed ``/mail`` command."""

    to: tuple[EmailAddress, ...]
    cc: tuple[EmailAddress, ...]
    bcc: tuple[EmailAddress, ...]
    subject: str
    body: str

    @property
    def recipients(self) -> tuple[EmailAddress, ...]:
        """Return every recipient, To then Cc then Bcc."""
        return self.to + self.cc + self.bcc


def parse_command(text: str, bot_username: str | None = None) -> Command | None:
    """Return the command in ``text``, or None if it is not a command for this bot."""
    text = text.lstrip()
    match = _COMMAND.match(text)
    if match is None:
        return None
    _prefix, name, target = match.groups()
    if target is not None and (bot_username is None or target.lower() != bot_username.lower()):
        return None  # "/mail@OtherBot" belongs to another bot in the same group
    return Command(name.lower(), text[match.end() :].strip())


def parse_mail(args: str, aliases: Mapping[str, str] | None = None) -> MailRequest:
    """Parse the text after ``/mail``; raise UsageError or AddressError with advice.

    ``aliases`` maps the user's short names (lower case) to addresses; a name works anywhere an
    address does."""
    parts = args.split(None, 1)
    if not parts:
        raise UsageError(f"Whom should I mail?\n{MAIL_USAGE}")
    token = parts[0]
    rest = parts[1] if len(parts) > 1 else ""
    if "|" in token:  # "/mail bob@example.com|Hi" - the recipients token ends at the first bar
        token, _, tail = token.partition("|")
        rest = f"|{tail} {rest}"
    if "|" not in rest:
        raise UsageError(f"Separate the subject from the body with a |.\n{MAIL_USAGE}")
    subject, _, body = rest.partition("|")
    subject, body = subject.strip(), body.strip().replace("\r\n", "\n").replace("\r", "\n")
    if not subject and not body:
        raise UsageError(f"The mail has neither subject nor body.\n{MAIL_USAGE}")
    if "\n" in subject or "\r" in subject:
        raise UsageError(
            "The subject must be on one line; line breaks belong in the body, after the |."
        )
    if _HEADER_BREAKERS.search(subject):
        raise UsageError("The subject contains control characters; please retype it.")
    if "\0" in body:
        raise UsageError("The body contains a NUL character; please retype it.")
    for part, text in (("subject", subject), ("body", body)):
        if found := _SURROGATE.search(text):
            raise UsageError(
                f"The {part} contains a character that cannot be sent "
                f"(U+{ord(found.group()):04X}, half of a pair); please retype it."
            )
    to, cc, bcc = _recipients(token, aliases or {})
    return MailRequest(to, cc, bcc, subject, body)


def _recipients(
    token: str, aliases: Mapping[str, str]
) -> tuple[tuple[EmailAddress, ...], tuple[EmailAddress, ...], tuple[EmailAddress, ...]]:
    lists: dict[str, list[EmailAddress]] = {"to": [], "cc": [], "bcc": []}
    seen: set[str] = set()
    items = [item for item in token.split(",") if item]
    if len(items) > MAX_RECIPIENTS:
        raise AddressError(
            f"A mail can have at most {MAX_RECIPIENTS} recipients (Gmail's limit); "
            f"you gave {len(items)}. Split it into several mails."
        )
    for item in items:
        kind, sep, rest = item.partition(":")
        kind = kind.lower()
        if sep and kind in ("cc", "bcc"):
            item = rest
        else:
            kind = "to"
        if "@" not in item and item.lower() in aliases:
            item = aliases[item.lower()]
        elif "@" not in item and aliases:
            raise AddressError(
                f'"{item[:40]}" is neither an address nor one of your aliases (/alias list).'
            )
        address = parse_address(item)
        key = str(address).lower()
        if key not in seen:
            seen.add(key)
            lists[kind].append(address)
    if not lists["to"] and not lists["cc"] and not lists["bcc"]:
        raise UsageError(f"Whom should I mail?\n{MAIL_USAGE}")
    return tuple(lists["to"]), tuple(lists["cc"]), tuple(lists["bcc"])
