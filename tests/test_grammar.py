"""The command grammar: what counts as a command for us, and how /mail is read."""

from __future__ import annotations

import pytest

from bot.errors import AddressError, BotError, UsageError
from bot.grammar import parse_command, parse_mail


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/mail a@b.co x | y", ("mail", "a@b.co x | y")),
        ("!mail a@b.co x | y", ("mail", "a@b.co x | y")),
        ("  /HELP", ("help", "")),
        ("/mail@MailBridgeBot a@b.co x|y", ("mail", "a@b.co x|y")),
        ("/mail@mailbridgebot", ("mail", "")),
    ],
)
def test_commands_for_us(text: str, expected: tuple[str, str]) -> None:
    command = parse_command(text, "MailBridgeBot")
    assert command is not None
    assert (command.name, command.args) == expected


@pytest.mark.parametrize(
    "text", ["hello", "/mail@OtherBot a@b.co x | y", "mail a@b.co", "/ mail", "//mail", "/mail-x"]
)
def test_not_for_us(text: str) -> None:
    assert parse_command(text, "MailBridgeBot") is None


def test_addressed_command_without_known_bot_name_is_not_ours() -> None:
    assert parse_command("/mail@SomeBot x", None) is None


def test_mail_splits_recipients_subject_body() -> None:
    r = parse_mail(
        "bob@example.com,cc:Carol@Example.com,BCC:dan@example.com  Lunch? | Free\non Fri?"
    )
    assert [str(a) for a in r.to] == ["bob@example.com"]
    assert [str(a) for a in r.cc] == ["Carol@example.com"]
    assert [str(a) for a in r.bcc] == ["dan@example.com"]
    assert r.subject == "Lunch?"
    assert r.body == "Free\non Fri?"


def test_only_first_bar_splits() -> None:
    r = parse_mail("bob@example.com a | b | c")
    assert (r.subject, r.body) == ("a", "b | c")


def test_empty_subject_or_body_is_allowed_but_not_both() -> None:
    assert parse_mail("bob@example.com | just a body").subject == ""
    assert parse_mail("bob@example.com just a subject |").body == ""
    with pytest.raises(UsageError, match="neither subject nor body"):
        parse_mail("bob@example.com |")


def test_bar_glued_to_recipients() -> None:
    r = parse_mail("bob@example.com|Hi there")
    assert (r.subject, r.body) == ("", "Hi there")


def test_duplicates_are_sent_once() -> None:
    r = parse_mail("bob@example.com,BOB@example.com,cc:bob@example.com x | y")
    assert [str(a) for a in r.recipients] == ["bob@example.com"]


@pytest.mark.parametrize(
    ("args", "error", "says"),
    [
        (
            "bob@example.com Hello Hi Bob",
            UsageError,
            "Separate the subject from the body with a |",
        ),
        ("", UsageError, "Whom should I mail?"),
        ("bob@example Hi | x", AddressError, "domain after the @ is not valid"),
        ("user@ Hi | x", AddressError, "nothing after the @"),
        ("bob Hi | x", AddressError, "not an email address"),
        ("jörg@example.com Hi | x", AddressError, "non-ASCII"),
        ("a..b@example.com Hi | x", AddressError, "single dots"),
        ("bob@exa_mple.com Hi | x", AddressError, "domain"),
        ("bob@example.com Hello\nBcc: eve@example.com | x", UsageError, "subject must be on one"),
        ("bob@example.com Hel\x0blo | x", UsageError, "control characters"),
        ("bob@example.com Hi | x\0y", UsageError, "NUL"),
        ("bob@example.com Hi\ud83d | x", UsageError, "subject contains a character that cannot"),
        ("bob@example.com Hi | x\udc00y", UsageError, "body contains a character that cannot"),
        (
            ",".join(f"u{i}@example.com" for i in range(101)) + " Hi | x",
            AddressError,
            "at most 100",
        ),
    ],
)
def test_bad_mail_gets_a_clear_error(args: str, error: type[BotError], says: str) -> None:
    with pytest.raises(error, match=says.replace("|", r"\|").replace("?", r"\?")):
        parse_mail(args)


def test_usage_error_shows_usage_and_example() -> None:
    with pytest.raises(UsageError) as info:
        parse_mail("bob@example.com no bar here")
    assert "Usage: /mail <to> <subject> | <body>" in str(info.value)
    assert "Example: /mail" in str(info.value)


def test_hundred_recipients_are_fine() -> None:
    r = parse_mail(",".join(f"u{i}@example.com" for i in range(100)) + " Hi | x")
    assert len(r.recipients) == 100
