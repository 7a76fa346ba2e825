"""Command handlers: each takes the core, the message and its arguments, and returns a reply."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from bot.chat import Button, Message, Reply
from bot.compose import compose
from bot.errors import BotError
from bot.grammar import parse_mail
from bot.outbox import FAILED, UNKNOWN
from bot.policy import check_send_budget
from bot.wording import prefix, recipients_shown, subject_shown

if TYPE_CHECKING:
    from bot.core import Core

Handler = Callable[["Core", Message, str], Awaitable[Reply | None]]
TRIAL_CONNECT = (
    "This mailbridge runs without Google (mail is written to its outbox folder, not sent), so "
    "there is no account to connect. Its operator can set up Google as the README describes."
)


async def help_(core: Core, message: Message, args: str) -> Reply:
    """List the commands, with the prefix this network's users should type."""
    p = prefix(message.platform)
    lines = [
        "mailbridge sends email from your own Gmail.",
        f"{p}mail <to> <subject> | <body> - send a mail",
        "    <to>: addresses separated by commas, no spaces; cc:addr or bcc:addr to copy",
        f"    example: {p}mail bob@example.com Lunch? | Free on Friday?",
    ]
    if core.oauth is not None:
        lines += [
            f"{p}connect - link your Gmail (once; the link comes in a direct chat)",
            f"{p}status - which Gmail is linked",
            f"{p}disconnect - unlink it and revoke the bot's access",
            f"{p}retry <number> - send a mail again whose outcome was unknown or that failed",
        ]
    else:
        lines.append("Trial mode: mail is written as .eml files to the outbox folder, not sent.")
    lines.append(f"{p}help - this list")
    return Reply("\n".join(lines))


async def start(core: Core, message: Message, args: str) -> Reply | None:
    """Telegram's Start button (and its deep link payload "connect")."""
    if args.strip() == "connect":
        return await connect(core, message, "")
    greeting = await help_(core, message, "")
    return Reply(f"Hello {message.display_name}! {greeting.text}")


async def mail(core: Core, message: Message, args: str) -> Reply | None:
    """Validate, compose and queue a mail; the outbox reports the outcome."""
    request = parse_mail(args)
    limits = core.config.bot
    sender = await core.backend.sender(message.user_key)
    await check_send_budget(
        core.outbox, message.user_key, limits.sends_per_minute, limits.sends_per_day
    )
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


async def connect(core: Core, message: Message, args: str) -> Reply | None:
    """Hand out a login link, only ever in the user's direct chat."""
    if core.oauth is None:
        return Reply(TRIAL_CONNECT)
    room = message.room if message.is_direct else await _direct_room(core, message)
    if room is None:
        link = getattr(core.network(message.platform), "start_link", None)
        url = link("connect") if link else None
        if url:
            return Reply(
                "To connect your Gmail, open a private chat with me; your login link will be "
                "waiting there.",
                buttons=(Button("Connect Gmail", url=url),),
            )
        return Reply("Send /connect to me in a direct chat: login links are never posted here.")
    existing = await core.accounts.get(message.user_key)
    link = await core.oauth.new_link(message.user_key, message.display_name, room)
    note = f" It replaces the link to {existing.address}." if existing else ""
    text = (
        f"Open this link within 10 minutes to connect your Gmail:\n{link}\n"
        f"It works once, only for you: do not share it.{note}"
    )
    reply = Reply(text, buttons=(Button("Connect Gmail", url=link),), no_preview=True)
    if room == message.room:
        return reply
    await core.say(message.platform, room, reply)
    return Reply("I sent you a direct message with your login link.")


async def _direct_room(core: Core, message: Message) -> str | None:
    known = await core.accounts.direct_room(message.user_key)
    if known is not None:
        return known
    open_direct = getattr(core.network(message.platform), "open_direct", None)
    if open_direct is None:
        return None
    room: str | None = await open_direct(message.user_id)
    if room is not None:
        await core.accounts.remember_direct_room(message.user_key, room)
    return room


async def status(core: Core, message: Message, args: str) -> Reply:
    """Say which Google account is linked, since when, and the last send."""
    if core.oauth is None:
        return Reply(TRIAL_CONNECT)
    account = await core.accounts.get(message.user_key)
    if account is None:
        return Reply("No Gmail is connected. Send /connect in a direct chat with me to link one.")
    since = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(account.connected_at))
    last = (
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(account.last_sent_at))
        if account.last_sent_at
        else "nothing yet"
    )
    return Reply(f"Connected as {account.address} since {since}. Last mail sent: {last}.")


async def disconnect(core: Core, message: Message, args: str) -> Reply:
    """Revoke the token at Google (best effort) and forget the link."""
    if core.oauth is None:
        return Reply(TRIAL_CONNECT)
    account = await core.accounts.get(message.user_key)
    if account is None:
        return Reply("No Gmail is connected, so there is nothing to disconnect.")
    revoke = getattr(core.backend, "revoke", None)
    revoked = bool(revoke and await revoke(account.refresh_token))
    await core.accounts.delete(message.user_key)
    forget = getattr(core.backend, "forget", None)
    if forget:
        forget(message.user_key)
    if revoked:
        return Reply(f"Disconnected {account.address}; Google has revoked this bot's access.")
    return Reply(
        f"Disconnected {account.address} here, but Google could not confirm the revocation; "
        "you can remove the bot's access at https://myaccount.google.com/permissions."
    )


async def retry(core: Core, message: Message, args: str) -> Reply | None:
    """Send a failed or unknown mail again, on the owner's word."""
    number = args.strip().lstrip("#")
    if not number.isdigit():
        raise BotError("Which mail? Give its number, e.g. /retry 12.")
    row = await core.outbox.get(int(number))
    if row is None or row.user_key != message.user_key:
        raise BotError(f"You have no mail #{number}.")
    if row.state not in (FAILED, UNKNOWN):
        raise BotError(
            f"Mail #{row.id} is {row.state}; only failed or unknown mail can be retried."
        )
    await core.backend.sender(message.user_key)  # still connected?
    if not await core.outbox.requeue(row.id):
        raise BotError(f"Mail #{row.id} can no longer be sent again.")
    core.outbox.submit(row.id)
    return Reply(
        f"Sending mail #{row.id} to {recipients_shown(row)}, {subject_shown(row.subject)} again."
    )


HANDLERS: dict[str, Handler] = {
    "help": help_,
    "start": start,
    "mail": mail,
    "connect": connect,
    "status": status,
    "disconnect": disconnect,
    "retry": retry,
}
