"""Mail details out of groups: with ``[mail] group_confirmation = "minimal"``, nothing the bot
posts in a group names a recipient, a subject or a word of a body.

The commands that can show such details (``/mail``, ``/send``, ``/retry``, ``/alias``) answer
their author in the direct chat instead, buttons included, errors too (an address error quotes
the address); the group hears a note that names only the author and the mail's number. Without a
direct chat, the group hears only how to open one, and the command is not carried out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.chat import Button, Message, Reply
from bot.errors import BotError
from bot.grammar import Command

if TYPE_CHECKING:
    from bot.commands import Handler
    from bot.core import Core

PRIVATE_COMMANDS = frozenset({"mail", "send", "retry", "alias"})


@dataclass(frozen=True, slots=True)
class Private:
    """A reply that may name recipients, subjects or bodies, and what a group hears instead."""

    reply: Reply
    note: str


def minimal_in(core: Core, message: Message, command: Command) -> bool:
    """Return whether ``command``'s answer must stay out of this room."""
    return (
        command.name in PRIVATE_COMMANDS
        and not message.is_direct
        and core.config.mail.group_confirmation == "minimal"
    )


async def answer_privately(
    core: Core, message: Message, command: Command, handler: Handler
) -> Reply | None:
    """Run ``handler``, answer in the author's direct chat, and return the group's note."""
    who = message.display_name
    room = await direct_room(core, message.user_key)
    if room is None:
        return open_direct_hint(
            core,
            message,
            f"{who}, mail details stay out of this group and I have no direct chat with you "
            "yet. Open one with me, then send the command again.",
        )
    try:
        answer = await handler(core, message, command.args)
    except BotError as exc:
        refused = f"{who}: I could not do that; I told you why in our direct chat."
        answer = Private(Reply(str(exc)), refused)
    if answer is None:
        return None
    if not isinstance(answer, Private):
        answer = Private(answer, f"{who}: I answered you in our direct chat.")
    await core.say(message.platform, room, answer.reply)
    return Reply(answer.note)


async def direct_room(core: Core, user_key: str) -> str | None:
    """Return the user's direct chat with the bot: one the network finds or opens, else the
    one last seen."""
    platform, _, user_id = user_key.partition(":")
    open_direct = getattr(core.network(platform), "open_direct", None)
    if open_direct is None:  # Telegram: a private chat stays private
        return await core.accounts.direct_room(user_key)
    # Matrix: a room that was a direct chat may have more members now; the network knows.
    room: str | None = await open_direct(user_id)
    if room is not None:
        await core.accounts.remember_direct_room(user_key, room)
    return room


def open_direct_hint(core: Core, message: Message, text: str, payload: str = "start") -> Reply:
    """Say how to open a direct chat with the bot: a button where the network has a link."""
    link = getattr(core.network(message.platform), "start_link", None)
    url = link(payload) if link else None
    if url:
        return Reply(text, buttons=(Button("Open a chat with me", url=url),))
    return Reply(text)
