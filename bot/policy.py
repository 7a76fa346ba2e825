"""Who may use the bot, and how much they may send."""

from __future__ import annotations

import time
from fnmatch import fnmatchcase

from bot.chat import Admit
from bot.errors import NotAllowedError, RateLimitError
from bot.outbox import Outbox


def is_allowed(user_key: str, patterns: tuple[str, ...]) -> bool:
    """Return whether ``user_key`` ("telegram:123", "matrix:@a:b.org") matches a pattern.

    An empty list allows everyone. Matrix ids are matched localpart and server apart, so
    "matrix:@*:example.org" cannot be satisfied by "@x:evil.example:example.org" look-alikes.
    """
    if not patterns:
        return True
    platform, _, user = user_key.partition(":")
    for pattern in patterns:
        p_platform, _, p_user = pattern.partition(":")
        if p_platform != platform:
            continue
        if platform == "matrix":
            local, _, server = user.partition(":")
            p_local, sep, p_server = p_user.partition(":")
            if fnmatchcase(local, p_local) and fnmatchcase(server, p_server if sep else "*"):
                return True
        elif fnmatchcase(user, p_user):
            return True
    return False


def admits(patterns: tuple[str, ...]) -> Admit:
    """Return the answer to invites: join those from users on the allow-list, decline others."""
    return lambda invite: is_allowed(invite.user_key, patterns)


def check_allowed(user_key: str, patterns: tuple[str, ...]) -> None:
    """Raise NotAllowedError unless ``user_key`` may use the bot."""
    if not is_allowed(user_key, patterns):
        raise NotAllowedError(
            "Sorry, this mailbridge is private and you are not on its list of users. "
            "Ask its operator to add you."
        )


async def check_send_budget(
    outbox: Outbox, person: str, per_minute: int, per_day: int, now: float | None = None
) -> None:
    """Raise RateLimitError if ``person`` has used up a send limit (counted from the outbox)."""
    now = time.time() if now is None else now
    last_minute, last_day = await outbox.rows.counts_since(person, now - 60, now - 86_400)
    if last_minute >= per_minute:
        raise RateLimitError(
            f"You have sent {per_minute} mails in the last minute, the most allowed here. "
            "Wait a minute and send again."
        )
    if last_day >= per_day:
        raise RateLimitError(
            f"You have sent {per_day} mails in the last 24 hours, the most allowed here. "
            "Try again tomorrow."
        )
