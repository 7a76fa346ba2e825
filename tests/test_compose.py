"""Composing RFC 5322 messages: headers, encodings, and that nothing can inject a header."""

from __future__ import annotations

import base64
import quopri
import re
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.message import EmailMessage

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bot.addresses import EmailAddress
from bot.chat import Attachment
from bot.compose import TRIAL_SENDER, compose
from bot.errors import BotError
from bot.grammar import MailRequest, parse_mail

ALICE = EmailAddress("alice", "gmail.com")


def roundtrip(request: MailRequest, sender: EmailAddress = ALICE) -> EmailMessage:
    raw = compose(request, sender).as_bytes()
    parsed = message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def addresses(msg: EmailMessage, name: str) -> list[str]:
    header = msg[name]
    return [a.addr_spec for a in header.addresses] if header is not None else []


def body_of(msg: EmailMessage) -> str:
    return str(msg.get_content()).replace("\r\n", "\n").removesuffix("\n")


def test_simple_mail() -> None:
    msg = roundtrip(parse_mail("bob@example.com Hello | Hi Bob"))
    assert addresses(msg, "To") == ["bob@example.com"]
    assert msg["Subject"] == "Hello"
    assert body_of(msg) == "Hi Bob"
    assert addresses(msg, "From") == ["alice@gmail.com"]
    assert msg["Date"] is not None
    assert msg["Message-ID"].endswith("@gmail.com>")


def test_cc_bcc_and_non_ascii_subject_are_encoded_and_decode_back() -> None:
    request = parse_mail(
        "bob@example.com,cc:carol@example.com,bcc:dan@example.com Grüße aus Köln | Schöne Grüße"
    )
    raw = compose(request, TRIAL_SENDER).as_bytes()
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")  # headers are pure ASCII on the wire
    assert "Subject: =?utf-8?" in head
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    assert addresses(msg, "To") == ["bob@example.com"]
    assert addresses(msg, "Cc") == ["carol@example.com"]
    assert addresses(msg, "Bcc") == ["dan@example.com"]
    assert msg["Subject"] == "Grüße aus Köln"
    assert msg.get_content_charset() == "utf-8"
    assert body_of(msg) == "Schöne Grüße"


def test_idn_domain_is_written_punycode() -> None:
    raw = compose(parse_mail("user@bücher.example Hi | x"), ALICE).as_bytes()
    assert b"To: user@xn--bcher-kva.example\r\n" in raw


def test_empty_subject_has_no_subject_header() -> None:
    msg = roundtrip(parse_mail("bob@example.com | body only"))
    assert msg["Subject"] is None


# An RFC 2047 encoded-word, as readers find it in raw header lines.
ENCODED_WORD = re.compile(rb"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")


def header_lines(raw: bytes) -> list[bytes]:
    """Return the lines of the message's and of each MIME part's header block."""
    msg = message_from_bytes(raw, policy=policy.default)
    starts = {b"--" + str(p.get_boundary()).encode() for p in msg.walk() if p.is_multipart()}
    lines, in_head = [], True
    for line in raw.split(b"\r\n"):
        if in_head and not line:
            in_head = False
        elif in_head:
            lines.append(line)
        else:
            in_head = line in starts
    return lines


def check_wire_format(raw: bytes) -> None:
    """Every encoded-word at most 75 characters (RFC 2047 section 2) and made of whole UTF-8
    characters (section 5); every line at most 998 octets (RFC 5322 section 2.1.1)."""
    for line in raw.split(b"\r\n"):
        assert len(line) <= 998, line[:80]
    for word in ENCODED_WORD.finditer(b"\r\n".join(header_lines(raw))):
        assert len(word.group()) <= 75, word.group()
        charset, encoding, text = word.groups()
        if encoding in b"bB":
            data = base64.b64decode(text, validate=True)
        else:
            data = quopri.decodestring(text, header=True)
        data.decode(charset.decode("ascii"))  # raises on a character split between two words


def display_name(raw: bytes) -> str:
    """Decode the From display name by the letter of RFC 2047 section 6.2."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii").replace("\r\n ", " ")
    value = next(line for line in head.split("\r\n") if line.startswith("From: "))
    phrase = value.removeprefix("From: ").rpartition(" <")[0]
    return str(make_header(decode_header(phrase)))


def test_long_non_ascii_subject_is_in_encoded_words_of_at_most_75() -> None:
    subject = "Ünïcödé " * 30
    raw = compose(parse_mail(f"bob@example.com {subject} | x"), ALICE).as_bytes()
    check_wire_format(raw)
    assert all(len(line) <= 78 for line in raw.split(b"\r\n\r\n")[0].split(b"\r\n"))
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg["Subject"] == subject.strip()


def test_long_ascii_subject_without_spaces_is_encoded_within_the_limits() -> None:
    subject = "x" * 300 + " and " + "=?utf-8?q?not_a_word?="
    raw = compose(parse_mail(f"bob@example.com {subject} | x"), ALICE).as_bytes()
    check_wire_format(raw)
    assert message_from_bytes(raw, policy=policy.default)["Subject"] == subject


def test_long_non_ascii_display_name_and_file_name_stay_within_the_limits() -> None:
    name = "Ünïcödé Ñame " * 6 + "Smith, J."
    filename = "Überraschung für dich " * 8 + ".pdf"
    files = (Attachment(filename, "application/pdf", b"%PDF-1.4"),)
    raw = compose(parse_mail("bob@example.com Hi | x"), ALICE, name, attachments=files).as_bytes()
    check_wire_format(raw)
    assert display_name(raw) == name
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    [sender] = msg["From"].addresses
    assert sender.addr_spec == "alice@gmail.com"
    # Python's parser keeps the space between two encoded-words: words end at the name's spaces
    # so that it, too, shows every word whole.
    assert sender.display_name.split() == name.split()
    [part] = msg.iter_attachments()
    assert part.get_filename() == filename[:150].strip()


def test_a_typed_encoded_word_in_a_display_name_is_not_decoded() -> None:
    raw = compose(parse_mail("bob@example.com Hi | x"), ALICE, "=?utf-8?q?CEO?=").as_bytes()
    check_wire_format(raw)
    assert display_name(raw) == "=?utf-8?q?CEO?="
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg["From"].addresses[0].display_name == "=?utf-8?q?CEO?="


def test_a_typed_encoded_word_in_a_file_name_is_kept_as_typed() -> None:
    files = (Attachment("=?utf-8?q?invoice.pdf?=.exe", "application/octet-stream", b"MZ"),)
    raw = compose(parse_mail("bob@example.com Hi | x"), ALICE, attachments=files).as_bytes()
    check_wire_format(raw)
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    [part] = msg.iter_attachments()
    assert part.get_filename() == "=?utf-8?q?invoice.pdf?=.exe"


def test_long_lines_and_long_subjects_survive() -> None:
    subject = "Ünïcödé " * 30
    body = "x" * 5000 + "\n" + "ü" * 3000
    msg = roundtrip(parse_mail(f"bob@example.com {subject} | {body}"))
    assert msg["Subject"] == subject.strip()
    assert body_of(msg) == body
    raw = compose(parse_mail(f"bob@example.com {subject} | {body}"), ALICE).as_bytes()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


# Text that users type: any Unicode, with the characters that matter here made likely.
TRICKY = st.sampled_from(
    [
        "|",
        ",",
        " ",
        "\t",
        "\n",
        "\r",
        "\0",
        "cc:",
        "bcc:",
        "@",
        "Bcc: x@y.com",
        "=?utf-8?q?x?=",
        '"',
        "\ud800",  # a lone surrogate, as JSON can carry it
    ]
)
TEXT = st.lists(st.one_of(st.text(max_size=12), TRICKY), max_size=12).map("".join)
LOCAL = st.from_regex(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,8}(\.[A-Za-z0-9_-]{1,5})?", fullmatch=True
)
DOMAIN = st.sampled_from(["example.com", "bücher.example", "EXAMPLE.org", "mail.co.uk"])
ADDRESS = st.builds(
    lambda kind, local, domain: f"{kind}{local}@{domain}",
    st.sampled_from(["", "cc:", "bcc:", "CC:"]),
    LOCAL,
    DOMAIN,
)
RECIPIENTS = st.lists(st.one_of(ADDRESS, TEXT), min_size=1, max_size=4).map(",".join)
ARGS = st.one_of(
    TEXT,
    st.builds(lambda r, s, b: f"{r} {s}|{b}", RECIPIENTS, TEXT, TEXT),
    st.builds(
        lambda r, s, b: f"{r} {s} | {b}",
        st.lists(ADDRESS, min_size=1, max_size=5).map(",".join),
        TEXT,
        TEXT,
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ARGS)
def test_any_input_is_an_error_or_a_clean_message(args: str) -> None:
    try:
        request = parse_mail(args)
    except BotError as exc:
        assert str(exc)  # a sentence for the user, never empty
        return
    raw = compose(request, ALICE).as_bytes()
    head, _, _ = raw.partition(b"\r\n\r\n")
    names = [line.split(b":", 1)[0] for line in head.split(b"\r\n") if not line[:1].isspace()]
    expected = {b"From", b"Date", b"Message-ID", b"Content-Type"}
    assert expected <= set(names)
    assert len(names) == len(set(names))  # no header twice: nothing was injected
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    for name, value in msg.items():
        assert not any(ch in str(value) for ch in "\r\n\0"), name
    assert addresses(msg, "To") == [str(a) for a in request.to]
    assert addresses(msg, "Cc") == [str(a) for a in request.cc]
    assert addresses(msg, "Bcc") == [str(a) for a in request.bcc]
    assert (msg["Subject"] or "") == request.subject
    assert body_of(msg) == request.body


NAMES = st.one_of(st.text(max_size=80), TEXT, st.sampled_from(["Bob", 'A "b" \\ c', "a,b"]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(min_size=1, max_size=300), TEXT), NAMES, NAMES)
def test_any_subject_name_and_file_name_decode_back_within_the_limits(
    subject: str, name: str, filename: str
) -> None:
    try:
        request = parse_mail(f"bob@example.com {subject} | x")
    except BotError:
        assume(False)  # the grammar refuses it with a sentence; nothing is composed
        return
    files = (Attachment(filename, "text/plain", b"x"),)
    raw = compose(request, ALICE, name, attachments=files).as_bytes()
    check_wire_format(raw)
    assert all(len(line) <= 78 for line in header_lines(raw))  # RFC 5322 2.1.1's SHOULD
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    assert (msg["Subject"] or "") == request.subject
    shown = "".join(ch for ch in name if ch.isprintable()).strip()
    [sender] = msg["From"].addresses
    assert sender.addr_spec == "alice@gmail.com"
    if b"From: =?" in raw:
        assert display_name(raw) == shown
    else:
        assert sender.display_name == shown
    kept = "".join(ch for ch in filename if ch.isprintable() and ch not in '\\/"').strip()
    [part] = msg.iter_attachments()
    assert part.get_filename() == (kept[:150] or "attachment")
