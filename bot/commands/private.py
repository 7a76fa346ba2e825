"""Mail details out of groups: with ``[mail] group_confirmation = "minimal"``, nothing the bot
posts in a group names a recipient, a subject or a word of a body.

The commands that can show such details (``/mail``, ``/send``, ``/retry``, ``/alias``) answer
their author in the direct chat instead, buttons included, errors too (an address error quotes
the address); the group hears a note that names only the author and the mail's number. Without a
direct chat, the group hears only how to open one, and the command is not carried out.
"""

from __future__ import annotations

from bot.chat import Button, DeepLinks, DirectChats, Message, Reply
from bot.commands.context import Ctx, Handler, Private
from bot.errors import BotError
from bot.grammar import Command

PRIVATE_COMMANDS = frozenset({"mail", "send", "retry", "alias"})


def minimal_in(ctx: Ctx, message: Message, command: Command) -> bool:
    """Return whether ``command``'s answer must stay out of this room."""
    return (
        command.name in PRIVATE_COMMANDS
        and not message.is_direct
        and ctx.config.mail.group_confirmation == "minimal"
    )


async def answer_privately(
    ctx: Ctx, message: Message, command: Command, handler: Handler
) -> Reply | None:
    """Run ``handler``, answer in the author's direct chat, and return the group's note."""
    who = message.display_name
    room = await direct_room(ctx, message.user_key)
    if room is None:
        return open_direct_hint(
            ctx,
            message,
            f"{who}, mail details stay out of this group and I have no direct chat with you "
            "yet. Open one with me, then send the command again.",
        )
    try:
        answer = await handler(ctx, message, command.args)
    except BotError as exc:
        refused = f"{who}: I could not do that; I told you why in our direct chat."
        answer = Private(Reply(str(exc)), refused)
    if answer is None:
        return None
    if not isinstance(answer, Private):
        answer = Private(answer, f"{who}: I answered you in our direct chat.")
    await ctx.say(message.platform, room, answer.reply)
    return Reply(answer.note)


async def direct_room(ctx: Ctx, user_key: str) -> str | None:
    """Return the user's direct chat with the bot: one the network finds or opens, else the
    one last seen."""
    platform, _, user_id = user_key.partition(":")
    network = ctx.network(platform)
    if not isinstance(network, DirectChats):  # Telegram: a private chat stays private
        return await ctx.accounts.direct_room(user_key)
    # Matrix: a room that was a direct chat may have more members now; the network knows.
    room = await network.open_direct(user_id)
    if room is not None:
        await ctx.accounts.remember_direct_room(user_key, room)
    return room


def open_direct_hint(ctx: Ctx, message: Message, text: str, payload: str = "start") -> Reply:
    """Say how to open a direct chat with the bot: a button where the network has a link."""
    network = ctx.network(message.platform)
    url = network.start_link(payload) if isinstance(network, DeepLinks) else None
    if url:
        return Reply(text, buttons=(Button("Open a chat with me", url=url),))
    return Reply(text)
