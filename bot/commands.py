"""The command table, /help and /start; the handlers live in cmd_* modules by subject.

A handler takes the core, the message and the text after the command, and returns what to say
(or None when the answer comes later, as a mail's outcome does).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from bot import cmd_account, cmd_alias, cmd_mail
from bot.chat import Message, Reply
from bot.wording import prefix

if TYPE_CHECKING:
    from bot.core import Core
    from bot.private import Private

Handler = Callable[["Core", Message, str], Awaitable["Reply | Private | None"]]


async def help_(core: Core, message: Message, args: str) -> Reply:
    """List the commands, with the prefix this network's users should type."""
    p = prefix(message.platform)
    lines = [
        "mailbridge sends email from your own Gmail.",
        f"{p}mail <to> <subject> | <body> - send a mail",
        "    <to>: addresses or aliases separated by commas, no spaces; cc:addr or bcc:addr",
        f"    example: {p}mail bob@example.com Lunch? | Free on Friday?",
        f"    reply to a file or photo with {p}mail to attach it",
        f"{p}undo - stop the mail you just sent, within its undo window",
        f"{p}send, {p}cancel - answer a preview",
        f"{p}history - your last 10 mails; {p}retry <number> sends one again",
        f"{p}alias add <name> <address>, {p}alias list, {p}alias del <name> - your address book",
    ]
    if core.oauth is not None:
        lines += [
            f"{p}connect - link your Gmail (once; the link comes in a direct chat)",
            f"{p}status - which Gmail is linked",
            f"{p}disconnect - unlink it and revoke the bot's access",
        ]
    else:
        lines.append("Trial mode: mail is written as .eml files to the outbox folder, not sent.")
    lines.append(f"{p}help - this list")
    return Reply("\n".join(lines))


async def start(core: Core, message: Message, args: str) -> Reply | None:
    """Telegram's Start button (and its deep link payload "connect"); Matrix's first join."""
    if args.strip() == "connect":
        return await cmd_account.connect(core, message, "")
    greeting = await help_(core, message, "")
    return Reply(f"Hello {message.display_name}! {greeting.text}")


HANDLERS: dict[str, Handler] = {
    "help": help_,
    "start": start,
    "mail": cmd_mail.mail,
    "send": cmd_mail.send,
    "cancel": cmd_mail.cancel,
    "undo": cmd_mail.undo,
    "retry": cmd_mail.retry,
    "history": cmd_mail.history,
    "alias": cmd_alias.alias,
    "connect": cmd_account.connect,
    "status": cmd_account.status,
    "disconnect": cmd_account.disconnect,
}
