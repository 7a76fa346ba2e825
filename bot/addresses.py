"""Email address validation: RFC 5322 addr-spec (dot-atom form), IDN domains encoded."""

from __future__ import annotations

import re
from dataclasses import dataclass

import idna

from bot.errors import AddressError

MAX_RECIPIENTS = 100  # Gmail's limit per message

# RFC 5322 atext: letters, digits and these specials.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


@dataclass(frozen=True, slots=True)
class EmailAddress:
    """A validated address; ``domain`` is ASCII (IDNA-encoded where needed)."""

    local: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"


def parse_address(text: str) -> EmailAddress:
    """Validate one address typed by a user, or raise AddressError saying what is wrong."""
    shown = _shown(text)
    if any(ch in text for ch in "\r\n\0"):
        raise AddressError(f"{shown} contains a line break or NUL; type the address on one line.")
    local, at, domain = text.rpartition("@")
    if not at or not local:
        raise AddressError(f"{shown} is not an email address: expected name@example.com.")
    if not domain:
        raise AddressError(f"{shown} has nothing after the @: expected name@example.com.")
    if not local.isascii():
        raise AddressError(
            f"{shown}: the part before the @ has non-ASCII characters, which Gmail "
            "cannot be relied on to deliver; ask the recipient for a plain-ASCII address."
        )
    if len(local) > 64 or not _DOT_ATOM.fullmatch(local):
        raise AddressError(
            f"{shown}: the part before the @ may hold letters, digits and !#$%&'*+/=?^_`{{|}}~-, "
            "with single dots between them."
        )
    return EmailAddress(local, _domain(shown, domain))


def _domain(shown: str, domain: str) -> str:
    domain = domain.removesuffix(".")
    if domain.isascii():
        ascii_domain = domain.lower()
    else:
        try:
            ascii_domain = idna.encode(domain, uts46=True).decode("ascii")
        except idna.IDNAError:
            raise AddressError(
                f"{shown}: the domain is not a valid internationalised name."
            ) from None
    labels = ascii_domain.split(".")
    if (
        len(labels) < 2
        or len(ascii_domain) > 253
        or not all(_LABEL.fullmatch(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise AddressError(f"{shown}: the domain after the @ is not valid, e.g. example.com.")
    return ascii_domain


def _shown(text: str) -> str:
    """Quote user input for an error message, visibly and without control characters."""
    clean = "".join(ch if ch.isprintable() else "\N{REPLACEMENT CHARACTER}" for ch in text)
    return f'"{clean[:80]}…"' if len(clean) > 80 else f'"{clean}"'
