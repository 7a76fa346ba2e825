"""The ``at:<when>`` grammar: wall-clock times in the user's zone, across DST changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.errors import UsageError
from bot.when import WhenError, parse_when, parse_zone, shown

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# Saturday 27 March 2027, 12:00 in Berlin (CET, UTC+1); the clocks go forward the next night.
BEFORE_SPRING = utc(2027, 3, 27, 11, 0)


@pytest.mark.parametrize(
    ("spec", "now", "zone", "expected"),
    [
        # Later today, in the user's zone, not UTC.
        ("18:30", BEFORE_SPRING, BERLIN, utc(2027, 3, 27, 17, 30)),
        # Already past today: tomorrow, which is summer time (UTC+2).
        ("9:00", BEFORE_SPRING, BERLIN, utc(2027, 3, 28, 7, 0)),
        ("tomorrow-9:00", BEFORE_SPRING, BERLIN, utc(2027, 3, 28, 7, 0)),
        ("TOMORROW-09:00", BEFORE_SPRING, BERLIN, utc(2027, 3, 28, 7, 0)),
        # The next Monday (27 March 2027 is a Saturday).
        ("mon-9:00", BEFORE_SPRING, BERLIN, utc(2027, 3, 29, 7, 0)),
        # The same weekday as today means a week ahead, never today.
        ("sat-18:00", BEFORE_SPRING, BERLIN, utc(2027, 4, 3, 16, 0)),
        ("2027-04-01T09:00", BEFORE_SPRING, BERLIN, utc(2027, 4, 1, 7, 0)),
        # Relative times are durations: +24h across the change is not "same time tomorrow".
        ("+24h", BEFORE_SPRING, BERLIN, utc(2027, 3, 28, 11, 0)),
        ("+2h", BEFORE_SPRING, BERLIN, utc(2027, 3, 27, 13, 0)),
        ("+90m", BEFORE_SPRING, BERLIN, utc(2027, 3, 27, 12, 30)),
        ("+1h30m", BEFORE_SPRING, BERLIN, utc(2027, 3, 27, 12, 30)),
        ("+1d", BEFORE_SPRING, BERLIN, utc(2027, 3, 28, 11, 0)),
        # New York in autumn: 1 November 2026 01:30 happens twice; the first one (EDT) is taken.
        ("2026-11-01T01:30", utc(2026, 10, 31, 12, 0), NEW_YORK, utc(2026, 11, 1, 5, 30)),
        ("tomorrow-9:00", utc(2026, 10, 31, 12, 0), NEW_YORK, utc(2026, 11, 1, 14, 0)),
        ("18:30", BEFORE_SPRING, ZoneInfo("UTC"), utc(2027, 3, 27, 18, 30)),
    ],
)
def test_a_time_means_the_wall_clock_in_the_users_zone(
    spec: str, now: datetime, zone: ZoneInfo, expected: datetime
) -> None:
    assert parse_when(spec, now, zone) == expected


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        # 02:30 on 28 March 2027 never happens in Berlin: refused, not shifted.
        ("2027-03-28T02:30", "does not exist"),
        ("2027-02-30T09:00", "There is no date"),
        ("25:00", "0:00 to 23:59"),
        ("9:75", "0:00 to 23:59"),
        ("2027-03-27T09:00", "already passed"),
        ("2030-01-01T09:00", "a year ahead"),
        ("+", "can't read"),
        ("+0h", "already passed"),
        ("+2x", "can't read"),
        ("soon", "can't read"),
        ("tomorrow", "can't read"),
        ("9", "can't read"),
        ("", "can't read"),
        ("18:30 ", "18:30"),  # trailing space is trimmed, not an error: checked below
    ],
)
def test_an_unusable_time_gets_a_sentence(spec: str, words: str) -> None:
    if spec.endswith(" "):
        assert parse_when(spec, BEFORE_SPRING, BERLIN) == utc(2027, 3, 27, 17, 30)
        return
    with pytest.raises(WhenError) as err:
        parse_when(spec, BEFORE_SPRING, BERLIN)
    assert words in str(err.value)
    assert isinstance(err.value, UsageError)  # the user is told, never the apology


def test_a_time_zone_is_a_name_from_the_database() -> None:
    assert parse_zone("Europe/Berlin") is not None
    assert parse_zone("utc").key == "UTC"
    for bad in ("Mars/Olympus", "../../etc/passwd", "", "Europe/"):
        with pytest.raises(WhenError, match="time zone"):
            parse_zone(bad)


def test_the_answer_says_the_zone_and_offset() -> None:
    assert shown(utc(2027, 1, 4, 8, 0), BERLIN) == "Mon 4 Jan 2027, 09:00 CET (UTC+01:00)"
    assert shown(utc(2027, 3, 28, 7, 0), BERLIN) == "Sun 28 Mar 2027, 09:00 CEST (UTC+02:00)"
    assert shown(utc(2027, 1, 4, 8, 0), ZoneInfo("UTC")).endswith("08:00 UTC (UTC+00:00)")


@given(
    now=st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
    ),
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
    zone=st.sampled_from([BERLIN, NEW_YORK, ZoneInfo("Australia/Lord_Howe"), ZoneInfo("UTC")]),
)
def test_a_clock_time_is_the_next_time_the_wall_clock_shows_it(
    now: datetime, hour: int, minute: int, zone: ZoneInfo
) -> None:
    try:
        moment = parse_when(f"{hour}:{minute:02d}", now, zone)
    except WhenError as err:
        # Only a spring-forward gap is refused: that wall-clock time never occurs that day.
        assert "does not exist" in str(err)
        day = datetime.fromisoformat(str(err).split(" on ")[1].split(" in ")[0])
        local = day.replace(hour=hour, minute=minute, tzinfo=zone)
        assert local.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != local.replace(
            tzinfo=None
        )
        return
    local = moment.astimezone(zone)
    assert (local.hour, local.minute) == (hour, minute)
    assert now < moment <= now + timedelta(hours=48)
