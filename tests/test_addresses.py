"""Addresses: the classic valid and invalid examples, and that an address is sent as typed."""

from __future__ import annotations

import unicodedata

import idna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.addresses import EmailAddress, parse_address
from bot.errors import AddressError, BotError
from bot.grammar import parse_mail

LONGEST = "x" * 64 + "@" + ".".join(["a" * 63, "b" * 63, "c" * 57]) + ".com"  # 254 in all
assert len(LONGEST) == 254

# Typed, and what goes out. RFC 3696 section 3 (with errata 246 and 1003), the examples of
# Wikipedia's "Email address" article, and the IDN cases: only the case of ASCII letters in
# the domain and its punycode form may differ from what was typed.
VALID = [
    ("simple@example.com", "simple@example.com"),
    ("very.common@example.com", "very.common@example.com"),
    ("FirstName.LastName@EasierReading.org", "FirstName.LastName@easierreading.org"),
    ("x@example.com", "x@example.com"),
    (
        "long.email-address-with-hyphens@and.subdomains.example.com",
        "long.email-address-with-hyphens@and.subdomains.example.com",
    ),
    ("user.name+tag+sorting@example.com", "user.name+tag+sorting@example.com"),
    ("name/surname@example.com", "name/surname@example.com"),
    ("example@s.example", "example@s.example"),
    ("mailhost!username@example.org", "mailhost!username@example.org"),
    ("user%example.com@example.org", "user%example.com@example.org"),
    ("user-@example.org", "user-@example.org"),
    ("customer/department=shipping@example.com", "customer/department=shipping@example.com"),
    ("$A12345@example.com", "$A12345@example.com"),
    ("!def!xyz%abc@example.com", "!def!xyz%abc@example.com"),
    ("_somename@example.com", "_somename@example.com"),
    ("a@b.co", "a@b.co"),
    ("TEST@EXAMPLE.COM", "TEST@example.com"),
    # email-validator lower-cases RFC 2142 role names; the part before the @ is sent as typed.
    ("Postmaster@Example.COM", "Postmaster@example.com"),
    ("x" * 64 + "@example.com", "x" * 64 + "@example.com"),
    (LONGEST, LONGEST.lower()),
    ("a@" + "d" * 63 + ".com", "a@" + "d" * 63 + ".com"),
    ("user@bücher.example", "user@xn--bcher-kva.example"),
    ("user@Bücher.example", "user@xn--bcher-kva.example"),
    ("user@xn--bcher-kva.example", "user@xn--bcher-kva.example"),
    ("user@XN--BCHER-KVA.example", "user@xn--bcher-kva.example"),
    ("user@münchen.de", "user@xn--mnchen-3ya.de"),
    # IDNA 2008 keeps ß (IDNA 2003 made it "ss", another domain).
    ("user@straße.de", "user@xn--strae-oqa.de"),
    ("user@例え.テスト", "user@xn--r8jz45g.xn--zckzah"),
    # The same text in decomposed form (u + combining diaeresis): canonically equivalent.
    ("user@bu\u0308cher.example", "user@xn--bcher-kva.example"),
    # A Cyrillic "a" (U+0430) is what was typed; it goes out as typed, and its punycode shows that.
    ("bob@\u0430pple.com", "bob@xn--pple-43d.com"),
]

# Typed, and a piece of the sentence the user gets.
INVALID = [
    # Defect 9: each of these used to be sent somewhere other than typed, or accepted.
    ("bob@example.com.", "ends with a dot"),
    ("bob@exa\u200bmple.com", "invisible character (U+200B ZERO WIDTH SPACE) at position 8"),
    ("bob@exa\u00admple.com", "invisible character (U+00AD SOFT HYPHEN)"),
    ("bob\u200d@example.com", "U+200D ZERO WIDTH JOINER"),
    ("bob@\u202eexample.com", "U+202E RIGHT-TO-LEFT OVERRIDE"),
    ("bob@ex\ufe0fample.com", "U+FE0F VARIATION SELECTOR-16, which would be dropped"),
    (
        "bob@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com",
        '"\uff45" (U+FF45 FULLWIDTH LATIN SMALL',
    ),
    ("bob@EXAMPLE\uff0ecom", "U+FF0E FULLWIDTH FULL STOP"),
    ("bob@example\u3002com", '"。" (U+3002 IDEOGRAPHIC FULL STOP), which would be sent as "."'),
    ("bob@\ufb01.com", 'which would be sent as "fi"'),
    ("user@BÜCHER.example", 'type "ü" if that is what you mean'),
    ("x" * 64 + "@" + ".".join(["a" * 63, "b" * 63, "c" * 58]) + ".com", "255 characters long"),
    ("x" * 60 + "@" + ".".join(["ü" * 60, "b" * 60, "c" * 60]) + ".com", "domain"),
    ("bob@xn--abc.com", '"xn--abc" is not a valid encoded international name'),
    ("bob@xn--ls8h.com", '"xn--ls8h" is not a valid'),  # decodes to an emoji: not IDNA 2008
    ("bob@xn--zz.com", "punycode"),
    ("bob@mail.xn--.com", "punycode"),
    ("bob\uff20example.com", 'look-alike of "@"'),
    # The project's policy on top of valid addresses.
    ('"Abc@def"@example.com', "quoted part before the @"),
    ('"Fred Bloggs"@example.com', "quoted part before the @"),
    ('"Joe\\\\Blow"@example.com', "quoted part before the @"),
    ('" "@example.org', "quoted part before the @"),
    ('"john..doe"@example.org', "quoted part before the @"),
    (
        '"very.(),:;<>[]\\".VERY.\\"very@\\\\ \\"very\\".unusual"@strange.example.com',
        "quoted part before the @",
    ),
    ("postmaster@[123.123.123.123]", "IP address in brackets"),
    ("postmaster@[IPv6:2001:0db8:85a3:0000:0000:8a2e:0370:7334]", "IP address in brackets"),
    ("jörg@example.com", "non-ASCII"),
    ("QA\U0001f36bCHOCOLATE\U0001f36b@test.com", "non-ASCII"),
    ("admin@example", "domain after the @ is not valid"),  # no dot: never on the internet
    ("bob@foo.test", "special-use or reserved"),
    ("bob@mail.invalid", "special-use or reserved"),
    ("bob@localhost", "domain after the @ is not valid"),
    ("bob@example.com\r\nBcc: eve@example.com", "line break"),
    ("bob@example.com\0", "line break or NUL"),
    # Invalid by RFC 5322 (RFC 3696's unquoted backslashes are invalid per its erratum 246).
    ("Abc\\@def@example.com", "part before the @ may hold"),
    ("Fred\\ Bloggs@example.com", "part before the @ may hold"),
    ("Joe.\\\\Blow@example.com", "part before the @ may hold"),
    ("abc.example.com", "not an email address"),
    ("a@b@c@example.com", "part before the @ may hold"),
    ('a"b(c)d,e:f;g<h>i[j\\k]l@example.com', "part before the @ may hold"),
    ('just"not"right@example.com', "part before the @ may hold"),
    ('this is"not\\allowed@example.com', "part before the @ may hold"),
    ('this\\ still\\"not\\\\allowed@example.com', "part before the @ may hold"),
    ("1234567890123456789012345678901234567890123456789012345678901234+x@example.com", "64"),
    ("i.like.underscores@but_they_are_not_allowed_in_this_part", "domain after the @"),
    (".local@example.com", "single dots"),
    ("local.@example.com", "single dots"),
    ("local..part@example.com", "single dots"),
    ("<bob@example.com>", "part before the @ may hold"),
    ("@example.com", "not an email address"),
    ("bob@", "nothing after the @"),
    ("bob", "not an email address"),
    ("bob@example..com", "two periods"),
    ("bob@.example.com", "domain after the @"),
    ("bob@-example.com", "hyphen"),
    ("bob@example-.com", "hyphen"),
    ("bob@123.123.123.123", "top-level domain"),
    ("bob@example.123", "top-level domain"),
    ("bob@" + "d" * 64 + ".com", "so many characters"),
    ("bob@exa mple.com", "domain after the @"),
]


@pytest.mark.parametrize(("typed", "sent"), VALID)
def test_valid_addresses_are_sent_as_typed(typed: str, sent: str) -> None:
    address = parse_address(typed)
    assert str(address) == sent
    assert address.domain.isascii()


@pytest.mark.parametrize(("typed", "says"), INVALID)
def test_invalid_addresses_get_a_sentence(typed: str, says: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_address(typed)
    sentence = str(info.value)
    assert says in sentence
    assert sentence.startswith('"')
    assert sentence.endswith(".")
    assert not any(ch in sentence for ch in "\r\n\0")  # it quotes the input on one line


def test_a_look_alike_in_a_mail_command_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(AddressError, match="U\\+FF45"):
        parse_mail("bob@\uff45xample.com Hi | there")


def _ascii_lower(text: str) -> str:
    return "".join(ch.lower() if ch.isascii() else ch for ch in text)


PIECES = st.sampled_from(
    [
        *"abzAZ09.-_+@",
        *["xn--", "ü", "Ü", "ß", "\uff45", "\u3002", "\u200b", "\u00ad", "\ufb01", "\u0308"],
        *["\ufe0f", "\u0430", "例", ".com", "@example.com", ".de", " ", '"', "[1.2.3.4]"],
    ]
)
TYPED = st.one_of(st.text(max_size=40), st.lists(PIECES, max_size=14).map("".join))


@settings(max_examples=500, deadline=None)
@given(TYPED)
def test_any_text_is_refused_with_a_sentence_or_sent_as_typed(typed: str) -> None:
    try:
        address = parse_address(typed)
    except BotError as exc:
        assert str(exc).startswith('"')
        return
    assert isinstance(address, EmailAddress)
    local, _, domain = typed.rpartition("@")
    assert address.local == local
    assert len(str(address)) <= 254  # RFC 5321 section 4.5.3.1.3
    # Decoded independently, the domain that goes out is the one typed, but for ASCII case.
    shown = ".".join(idna.decode(label) for label in address.domain.split("."))
    assert shown == _ascii_lower(unicodedata.normalize("NFC", domain))
    assert parse_address(str(address)) == address
