"""Composing RFC 5322 messages: headers, encodings, and that nothing can inject a header."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.addresses import EmailAddress
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
