"""Account commands: /connect (the login link, only ever in a direct chat), /status,
/disconnect."""

from __future__ import annotations

import time

from bot.chat import Button, DeepLinks, Message, Reply
from bot.commands.context import Ctx
from bot.commands.private import direct_room

TRIAL_CONNECT = (
    "This mailbridge runs without Google (mail is written to its outbox folder, not sent), so "
    "there is no account to connect. Its operator can set up Google as the README describes."
)


async def connect(ctx: Ctx, message: Message, args: str) -> Reply | None:
    """Hand out a login link, only ever in the user's direct chat."""
    if ctx.oauth is None:
        return Reply(TRIAL_CONNECT)
    room = message.room if message.is_direct else await direct_room(ctx, message.user_key)
    if room is None:
        network = ctx.network(message.platform)
        url = network.start_link("connect") if isinstance(network, DeepLinks) else None
        if url:
            return Reply(
                "To connect your Gmail, open a private chat with me; your login link will be "
                "waiting there.",
                buttons=(Button("Connect Gmail", url=url),),
            )
        return Reply("Send /connect to me in a direct chat: login links are never posted here.")
    existing = await ctx.accounts.get(ctx.person)
    link = await ctx.oauth.new_link(message.user_key, message.display_name, room)
    note = f" It replaces the link to {existing.address}." if existing else ""
    text = (
        f"Open this link within 10 minutes to connect your Gmail:\n{link}\n"
        f"It works once, only for you: do not share it.{note}"
    )
    reply = Reply(text, buttons=(Button("Connect Gmail", url=link),), no_preview=True)
    if room == message.room:
        return reply
    await ctx.say(message.platform, room, reply)
    return Reply("I sent you a direct message with your login link.")


async def status(ctx: Ctx, message: Message, args: str) -> Reply:
    """Say which Google account is linked, since when, and the last send."""
    if ctx.oauth is None:
        return Reply(TRIAL_CONNECT)
    account = await ctx.accounts.get(ctx.person)
    if account is None:
        return Reply("No Gmail is connected. Send /connect in a direct chat with me to link one.")
    since = _stamp(account.connected_at)
    sent_at = await ctx.outbox.rows.last_sent(ctx.person)
    last = _stamp(sent_at) if sent_at else "nothing yet"
    health = await ctx.link_health.get(account.user_key, account.connected_at)
    confirmed = _stamp(health.confirmed_at) if health.confirmed_at else "not yet"
    testing = ctx.config.google is not None and ctx.config.google.testing_mode
    ends = health.ends_at(testing)
    end = f" It ends {_stamp(ends)}; send /connect before then to keep it." if ends else ""
    return Reply(
        f"Connected as {account.address} since {since}. Google last confirmed the link: "
        f"{confirmed}.{end} Last mail sent: {last}."
    )


def _stamp(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))


async def disconnect(ctx: Ctx, message: Message, args: str) -> Reply:
    """Revoke the token at Google (best effort) and forget the link."""
    if ctx.oauth is None:
        return Reply(TRIAL_CONNECT)
    account = await ctx.accounts.get(ctx.person)
    if account is None:
        return Reply("No Gmail is connected, so there is nothing to disconnect.")
    if await ctx.oauth.unlink(account):
        return Reply(f"Disconnected {account.address}; Google has revoked this bot's access.")
    return Reply(
        f"Disconnected {account.address} here, but Google could not confirm the revocation; "
        "you can remove the bot's access at https://myaccount.google.com/permissions."
    )
