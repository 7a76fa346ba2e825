"""When a scheduled mail goes out: the ``at:<when>`` grammar and time zones.

The grammar has no spaces, so it stays one token before the recipients:

    at:18:30                today at 18:30, or tomorrow if that has passed
    at:tomorrow-9:00        tomorrow at 9:00
    at:mon-9:00             the next Monday at 9:00 (mon tue wed thu fri sat sun)
    at:2027-01-04T09:00     that date and time
    at:+2h  at:+90m  at:+1d  at:+1h30m   that long from now

Times are wall-clock times in the user's time zone. A time that does not exist on that day (the
hour the clocks jump forward) is refused rather than guessed; a time that exists twice (the hour
they fall back) is the first of the two, and the answer shows the offset, so the user sees which.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from bot.errors import UsageError

MAX_AHEAD = timedelta(days=366)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SYNTAX = (
    "at:18:30, at:tomorrow-9:00, at:mon-9:00, at:2027-01-04T09:00 or at:+2h "
    "(no spaces; times in your time zone, see /timezone)"
)

_CLOCK = r"(?P<hour>\d{1,2}):(?P<minute>\d{2})"
_RELATIVE = re.compile(r"\+(?:(?P<d>\d{1,3})d)?(?:(?P<h>\d{1,4})h)?(?:(?P<m>\d{1,5})m)?")
_TODAY = re.compile(_CLOCK)
_DAY = re.compile(rf"(?P<day>tomorrow|{'|'.join(WEEKDAYS)})-{_CLOCK}")
_DATE = re.compile(rf"(?P<date>\d{{4}}-\d{{2}}-\d{{2}})t{_CLOCK}")


class WhenError(UsageError):
    """A send time could not be understood, or is not in the future."""


def parse_when(text: str, now: datetime, zone: ZoneInfo) -> datetime:
    """Return the moment ``text`` (what follows ``at:``) means, as an aware UTC datetime."""
    spec = text.strip().lower()
    if m := _RELATIVE.fullmatch(spec):
        if not any(m.group(k) for k in "dhm"):
            raise _bad(text)
        delta = timedelta(
            days=int(m.group("d") or 0),
            hours=int(m.group("h") or 0),
            minutes=int(m.group("m") or 0),
        )
        return _checked(now.astimezone(UTC) + delta, now, zone)
    local_now = now.astimezone(zone)
    if m := _TODAY.fullmatch(spec):
        clock = _clock(m, text)
        # Today if the wall clock has not shown that time yet, else tomorrow.
        passed = clock <= local_now.time().replace(tzinfo=None)
        day = local_now.date() + timedelta(days=1 if passed else 0)
        return _checked(_resolve(day, clock, zone), now, zone)
    if m := _DAY.fullmatch(spec):
        clock = _clock(m, text)
        if m.group("day") == "tomorrow":
            day = local_now.date() + timedelta(days=1)
        else:
            ahead = (WEEKDAYS.index(m.group("day")) - local_now.weekday()) % 7 or 7
            day = local_now.date() + timedelta(days=ahead)
        return _checked(_resolve(day, clock, zone), now, zone)
    if m := _DATE.fullmatch(spec):
        try:
            day = date.fromisoformat(m.group("date"))
        except ValueError:
            raise WhenError(
                f"There is no date {m.group('date')}; write it as YYYY-MM-DD."
            ) from None
        return _checked(_resolve(day, _clock(m, text), zone), now, zone)
    raise _bad(text)


def split_at(args: str) -> tuple[str | None, str]:
    """Split a leading ``at:<when>`` off ``/mail``'s arguments: (the when or None, the rest)."""
    parts = args.lstrip().split(None, 1)
    if parts and parts[0][:3].lower() == "at:":
        return parts[0][3:], parts[1] if len(parts) > 1 else ""
    return None, args


def parse_zone(name: str) -> ZoneInfo:
    """Return the IANA time zone ``name`` (e.g. Europe/Berlin), or say how to find one."""
    clean = name.strip()
    if clean.upper() == "UTC":
        return ZoneInfo("UTC")
    # ZoneInfo("../etc") would look outside the database: only names it lists are taken.
    if clean in available_timezones():
        try:
            return ZoneInfo(clean)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    shown = clean[:60] or "(nothing)"
    raise WhenError(
        f"I don't know the time zone {shown}. Give a name such as Europe/Berlin, "
        "America/New_York or UTC."
    )


def shown(moment: datetime, zone: ZoneInfo) -> str:
    """Say when ``moment`` is, in ``zone``: "Mon 4 Jan 2027, 09:00 CET (UTC+01:00)"."""
    local = moment.astimezone(zone)
    offset = local.strftime("%z")
    offset = f"UTC{offset[:3]}:{offset[3:]}" if offset else "UTC"
    name = local.tzname() or ""
    label = f"{name} ({offset})" if name and not name.startswith(("+", "-")) else offset
    return f"{local:%a} {local.day} {local:%b %Y, %H:%M} {label}"


def _clock(m: re.Match[str], text: str) -> time:
    hour, minute = int(m.group("hour")), int(m.group("minute"))
    if hour > 23 or minute > 59:
        raise WhenError(f"{_quoted(text)}: a time of day runs from 0:00 to 23:59.")
    return time(hour, minute)


def _resolve(day: date, clock: time, zone: ZoneInfo) -> datetime:
    """Return wall-clock ``clock`` on ``day`` in ``zone`` as UTC; refuse one that never occurs."""
    local = datetime.combine(day, clock, tzinfo=zone)  # fold=0: the first of a repeated hour
    moment = local.astimezone(UTC)
    # A time in the gap of a spring-forward does not survive the round trip through UTC.
    if moment.astimezone(zone).replace(tzinfo=None) != local.replace(tzinfo=None):
        raise WhenError(
            f"{clock:%H:%M} does not exist on {day.isoformat()} in {zone.key}: the clocks jump "
            "forward then. Pick another time."
        )
    return moment


def _checked(moment: datetime, now: datetime, zone: ZoneInfo) -> datetime:
    if moment <= now:
        raise WhenError(f"{shown(moment, zone)} has already passed; pick a time ahead.")
    if moment - now > MAX_AHEAD:
        raise WhenError("I schedule mail at most a year ahead; pick an earlier time.")
    return moment


def _bad(text: str) -> WhenError:
    return WhenError(f"I can't read the send time {_quoted(text)}. Write it like {SYNTAX}.")


def _quoted(text: str) -> str:
    clean = "".join(ch for ch in text if ch.isprintable())[:40]
    return f'"at:{clean}"'
