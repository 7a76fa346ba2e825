"""Email addresses: validated by email-validator, sent exactly as typed, or refused with advice.

email-validator decides what is a valid address (RFC 5321/5322 syntax and lengths, IDNA 2008,
unsafe characters), with deliverability checks off: no DNS, ever. On top of it sits this bot's
own policy: only plain dot-atom addresses with an ASCII part before the @, and the address that
goes out is the one typed. email-validator maps a domain through UTS-46 (full-width letters,
ligatures, capitals, "。" become something else); the only changes allowed here are the case of
ASCII letters and the IDNA encoding to punycode, anything else is refused naming the character.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import idna
from email_validator import EmailNotValidError, ValidatedEmail, validate_email

from bot.errors import AddressError

MAX_RECIPIENTS = 100  # Gmail's limit per message
MAX_LENGTH = 254  # RFC 5321 section 4.5.3.1.3 (a path of 256 octets, less its angle brackets)
MAX_LOCAL = 64  # RFC 5321 section 4.5.3.1.1

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


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
    if not at and any(ch in text for ch in "\uff20\ufe6b"):
        raise AddressError(f'{shown} has a look-alike of "@"; type a plain @ instead.')
    if not at or not local:
        raise AddressError(f"{shown} is not an email address: expected name@example.com.")
    if not domain:
        raise AddressError(f"{shown} has nothing after the @: expected name@example.com.")
    _refuse_invisible(shown, text)
    _refuse_by_policy(shown, local, domain)
    try:
        checked = _validate(text)
    except EmailNotValidError as exc:
        raise AddressError(_why(shown, text, local, domain, exc)) from None
    # email-validator lower-cases some local parts (RFC 2142 "Postmaster"): send the one typed.
    _refuse_rewrites(shown, domain, checked.ascii_domain)
    return EmailAddress(local, checked.ascii_domain)


def _validate(address: str) -> ValidatedEmail:
    return validate_email(
        address,
        allow_smtputf8=False,
        allow_quoted_local=False,
        allow_domain_literal=False,
        allow_display_name=False,
        strict=True,  # also the 64-character limit before the @
        check_deliverability=False,  # no DNS: validation is syntax only, offline and instant
        globally_deliverable=True,
        test_environment=False,
    )


def _is_valid(address: str) -> bool:
    try:
        _validate(address)
    except EmailNotValidError:
        return False
    return True


def _refuse_invisible(shown: str, text: str) -> None:
    # Zero-width spaces, soft hyphens, bidi marks and the like come along when an address is
    # copied; the user cannot see them, so say which one it is and where.
    if text.isprintable():
        return
    for position, ch in enumerate(text, 1):
        if not ch.isprintable():
            raise AddressError(
                f"{shown} contains an invisible character ({_name(ch)}) at position {position}; "
                "retype the address without it."
            )


def _refuse_by_policy(shown: str, local: str, domain: str) -> None:
    if local.startswith('"'):
        raise AddressError(
            f'{shown}: addresses with a quoted part before the @ ("…"@example.com) are not '
            "accepted here; ask the recipient for a plain address."
        )
    if domain.startswith("["):
        raise AddressError(
            f"{shown}: an IP address in brackets after the @ is not accepted; use the "
            "recipient's domain name, e.g. name@example.com."
        )
    if not local.isascii():
        raise AddressError(
            f"{shown}: the part before the @ has non-ASCII characters, which Gmail "
            "cannot be relied on to deliver; ask the recipient for a plain-ASCII address."
        )


def _why(shown: str, text: str, local: str, domain: str, exc: EmailNotValidError) -> str:
    """Say which part of a refused address is wrong, and how."""
    # email-validator's reasons are about the whole address; checking each part alone against a
    # known-good other part tells which one the user has to fix.
    if not _is_valid(f"{local}@example.com"):
        if len(local) > MAX_LOCAL:
            return (
                f"{shown}: the part before the @ has {len(local)} characters; at most "
                f"{MAX_LOCAL} are allowed (RFC 5321)."
            )
        return (
            f"{shown}: the part before the @ may hold letters, digits and !#$%&'*+/=?^_`{{|}}~-, "
            "with single dots between them."
        )
    if not _is_valid(f"a@{domain}"):
        if domain.endswith("."):
            return f"{shown}: the domain ends with a dot; type the address without it."
        bad = [
            label
            for label in domain.split(".")
            if label[:4].lower() == "xn--" and not _is_valid(f"a@{label}.com")
        ]
        if bad:
            return (
                f'{shown}: "{bad[0][:70]}" is not a valid encoded international name '
                "(punycode); check the address with the recipient."
            )
        return f"{shown}: the domain after the @ is not valid, e.g. example.com. {exc}"
    length = f"{len(text)} characters long" if text.isascii() else "too long once encoded"
    return f"{shown} is {length}; an address may have at most {MAX_LENGTH} (RFC 5321)."


def _refuse_rewrites(shown: str, typed: str, sent: str) -> None:
    # Canonically equivalent text (NFC) is the same text; IDNA requires the composed form.
    typed = unicodedata.normalize("NFC", typed)
    typed_labels, sent_labels = typed.split("."), sent.split(".")
    if len(typed_labels) == len(sent_labels) and all(
        _same_label(t, s) for t, s in zip(typed_labels, sent_labels, strict=True)
    ):
        return
    for ch in typed:
        if ch.isascii():
            continue
        try:
            mapped = idna.uts46_remap(ch, std3_rules=False, transitional=False)
        except idna.IDNAError:
            continue
        if not mapped:
            raise AddressError(
                f"{shown} contains an invisible {_name(ch)}, which would be dropped; retype the "
                "address without it."
            )
        if mapped != ch:
            raise AddressError(
                f'{shown}: the domain has "{ch}" ({_name(ch)}), which would be sent as '
                f'"{mapped}", not as you typed it; type "{mapped}" if that is what you mean.'
            )
    raise AddressError(
        f"{shown}: the domain would be sent as {sent}, not as you typed it; type it that way "
        "if that is what you mean."
    )


def _same_label(typed: str, sent: str) -> bool:
    if typed.isascii():
        return typed.translate(_ASCII_LOWER) == sent
    try:
        return typed.translate(_ASCII_LOWER) == idna.ulabel(sent)
    except idna.IDNAError:
        return False


def _name(ch: str) -> str:
    return f"U+{ord(ch):04X} {unicodedata.name(ch, '')}".rstrip()


def _shown(text: str) -> str:
    """Quote user input for an error message, visibly and without control characters."""
    clean = text
    if not text.isprintable():
        clean = "".join(ch if ch.isprintable() else "\N{REPLACEMENT CHARACTER}" for ch in text)
    return f'"{clean[:80]}…"' if len(clean) > 80 else f'"{clean}"'
