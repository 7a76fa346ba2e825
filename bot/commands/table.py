"""The one command table: dispatch, /help, the chat menu and the Matrix spelling come from it.

A handler takes the context, the message and the text after the command, and returns what to
say (or None when the answer comes later, as a mail's outcome does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.chat import Message, Reply
from bot.commands import account, alias, draft, identity, mail, personal
from bot.commands.context import Ctx, Handler
from bot.wording import prefix

TRIAL = "Trial mode: mail is written as .eml files to the outbox folder, not sent."


@dataclass(frozen=True, slots=True)
class Entry:
    """One command: its handler, its lines in /help (``{p}``: the prefix), its menu summary."""

    name: str
    handler: Handler
    help: tuple[str, ...] = ()  # empty: another command's line names it, or /help omits it
    menu: str = ""  # the chat network's command menu (Telegram); empty: not in the menu
    menu_at: int = 0  # its place in that menu: the most used first
    google: bool = False  # only with Google set up (not in trial mode)


async def help_(ctx: Ctx, message: Message, args: str) -> Reply:
    """List the commands, with the prefix this network's users should type."""
    p = prefix(message.platform)
    lines = ["mailbridge sends email from your own Gmail."]
    for entry in TABLE:
        if not entry.google or ctx.oauth is not None:
            lines += [line.format(p=p) for line in entry.help]
    if ctx.oauth is None:
        lines.insert(
            -1, "Trial mode: mail is written as .eml files to the outbox folder, not sent."
        )
    return Reply("\n".join(lines))


async def start(ctx: Ctx, message: Message, args: str) -> Reply | None:
    """Telegram's Start button (and its deep link payload "connect"); Matrix's first join."""
    if args.strip() == "connect":
        return await account.connect(ctx, message, "")
    greeting = await help_(ctx, message, "")
    return Reply(f"Hello {message.display_name}! {greeting.text}")


TABLE: tuple[Entry, ...] = (
    Entry(
        "mail",
        draft.mail,
        (
            "{p}mail <to> <subject> | <body> - send a mail",
            "    <to>: addresses or aliases separated by commas, no spaces; cc:addr or bcc:addr",
            "    example: {p}mail bob@example.com Lunch? | Free on Friday?",
            "    reply to a file or photo with {p}mail to attach it",
            "    reply to a text with {p}mail <to> [subject] to forward it",
            "    send later: {p}mail at:18:30 <to> … (also at:tomorrow-9:00, at:mon-9:00, "
            "at:2027-01-04T09:00, at:+2h); {p}cancel <number> drops it",
            "    {p}mail alone in our direct chat asks for each part; {p}send finishes it",
        ),
        "send a mail: /mail <to> <subject> | <body>; alone: step by step",
        1,
    ),
    Entry(
        "timezone",
        personal.timezone,
        ("{p}timezone <name> - your time zone for at: (e.g. Europe/Berlin); alone: show it",),
        "your time zone: /timezone Europe/Berlin",
        7,
    ),
    Entry(
        "signature",
        personal.signature,
        ("{p}signature <text> - end every mail with it (lines allowed); {p}signature off",),
        "end every mail with a signature",
        8,
    ),
    Entry("undo", mail.undo, ("{p}undo - stop the mail you just sent, within its undo window",)),
    Entry("send", draft.send, ("{p}send, {p}cancel - answer a preview, or finish a draft",)),
    Entry("cancel", draft.cancel),
    Entry(
        "history",
        mail.history,
        ("{p}history - your last 10 mails; {p}retry <number> sends one again",),
    ),
    Entry("retry", mail.retry, menu="send a mail again: /retry <number>", menu_at=5),
    Entry(
        "alias",
        alias.alias,
        ("{p}alias add <name> <address>, {p}alias list, {p}alias del <name> - your address book",),
    ),
    Entry(
        "connect",
        account.connect,
        ("{p}connect - link your Gmail (once; the link comes in a direct chat)",),
        "link your Gmail",
        2,
        google=True,
    ),
    Entry(
        "status",
        account.status,
        ("{p}status - which Gmail is linked",),
        "which Gmail is linked",
        3,
        google=True,
    ),
    Entry(
        "disconnect",
        account.disconnect,
        ("{p}disconnect - unlink it and revoke the bot's access",),
        "unlink your Gmail",
        4,
        google=True,
    ),
    Entry(
        "link",
        identity.link,
        (
            "{p}link - use one identity on Telegram and Matrix: gives a code to type on the other",
            "    network ({p}link <code>); both then share Gmail, aliases, history and limits",
        ),
        "join your account on another network",
        9,
    ),
    Entry(
        "unlink",
        identity.unlink,
        ("{p}unlink - separate them again (the Gmail link stays with the one that made it)",),
        "separate your joined accounts",
        10,
    ),
    Entry("start", start),
    Entry("help", help_, ("{p}help - this list",), "what I can do", 6),
)
HANDLERS: dict[str, Handler] = {entry.name: entry.handler for entry in TABLE}
MENU: tuple[tuple[str, str], ...] = tuple(
    (e.name, e.menu) for e in sorted(TABLE, key=lambda e: e.menu_at) if e.menu
)
_NAMES = re.compile(rf"(?<![\w/])/({'|'.join(e.name for e in TABLE)})\b")


def localise(text: str, platform: str) -> str:
    """Spell command names as users of ``platform`` type them ("!mail" on Matrix)."""
    return _NAMES.sub(r"!\1", text) if platform == "matrix" else text
