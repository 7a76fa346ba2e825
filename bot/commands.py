"""Command handlers: each takes the core, the message and its arguments, and returns a reply."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from bot.chat import Message, Reply
from bot.compose import compose
from bot.grammar import parse_mail
from bot.policy import check_send_budget
from bot.wording import prefix

if TYPE_CHECKING:
    from bot.core import Core

Handler = Callable[["Core", Message, str], Awaitable[Reply | None]]


async def help_(core: Core, message: Message, args: str) -> Reply:
    """List the commands, with the prefix this network's users should type."""
    p = prefix(message.platform)
    lines = [
        "mailbridge sends email from your own mail account.",
        f"{p}mail <to> <subject> | <body> - send a mail",
        "    <to>: addresses separated by commas, no spaces; cc:addr or bcc:addr to copy",
        f"    example: {p}mail bob@example.com Lunch? | Free on Friday?",
        f"{p}help - this list",
    ]
    if core.backend.name == "outbox":
        lines.append("Trial mode: mail is written as .eml files to the outbox folder, not sent.")
    return Reply("\n".join(lines))


async def mail(core: Core, message: Message, args: str) -> Reply | None:
    """Validate, compose and queue a mail; the outbox reports the outcome."""
    request = parse_mail(args)
    limits = core.config.bot
    await check_send_budget(
        core.outbox, message.user_key, limits.sends_per_minute, limits.sends_per_day
    )
    sender = await core.backend.sender(message.user_key)
    name = message.display_name if core.backend.name == "outbox" else ""
    raw = compose(request, sender, name).as_bytes()
    row_id = await core.outbox.accept(
        f"{message.platform}:{message.event_key}",
        message.user_key,
        message.room,
        message.is_direct,
        request,
        raw,
    )
    if row_id is not None:  # None: this chat event was handled before (a redelivery)
        core.outbox.submit(row_id)
    return None


HANDLERS: dict[str, Handler] = {"help": help_, "mail": mail, "start": help_}
