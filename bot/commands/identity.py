"""/link and /unlink: one person on several networks, sharing one Gmail link and its data.

``/link`` in a direct chat gives a one-time code; ``/link CODE`` in a direct chat on the other
network names both accounts and asks; ``/link join`` (or, when both have a Gmail link,
``/link keep <network>``) joins them; ``/link cancel`` drops the code. Codes are never shown in
a group, and one typed in a group is void.
"""

from __future__ import annotations

from bot.chat import Button, Message, Reply
from bot.commands.context import Ctx
from bot.errors import BotError
from bot.policy import is_allowed
from bot.store.accounts import Account
from bot.store.link_codes import LinkCode, normalise, shown

NETWORKS = {"telegram": "Telegram", "matrix": "Matrix", "console": "console"}
SHARED = "one Gmail link, one address book, one history, known recipients and send limits"
BAD_CODE = (
    "This code does not work: it was used already, has expired, or was mistyped. Send /link "
    "in a direct chat with me on your other network for a new one."
)


def who(user_key: str, name: str = "") -> str:
    """Name a chat account as its owner recognises it: "Telegram user Alice (1001)"."""
    network, _, user_id = user_key.partition(":")
    label = NETWORKS.get(network, network)
    return f"{label} user {name} ({user_id})" if name else f"{label} user {user_id}"


def _lifetime(seconds: float) -> str:
    return f"{int(seconds // 60)} minutes" if seconds % 60 == 0 else f"{seconds:g} seconds"


async def link(ctx: Ctx, message: Message, args: str) -> Reply:
    """Give a code, take one, or answer the question a code brought."""
    words = args.split()
    action = words[0].lower() if words else ""
    if not message.is_direct:
        if action and action not in ("join", "keep", "cancel"):
            await ctx.codes.void(args)  # others in the room have read it
            raise BotError(
                "Linking codes work only in a direct chat with me; this one was seen here, so "
                "it no longer works. Send /link in a direct chat for a new one."
            )
        raise BotError("Ask me with /link in a direct chat: linking codes are only shown there.")
    await _not_joined(ctx, ctx.person)
    if not action:
        code = await ctx.codes.new(message.user_key, message.display_name)
        return Reply(
            f"Your linking code is {shown(code)}. Within {_lifetime(ctx.codes.ttl)}, send "
            f"/link {shown(code)} to me in a direct chat on your other network; I will ask "
            "there before joining the two. It works once: do not share it."
        )
    if action == "cancel":
        pending = await ctx.codes.pending(message.user_key)
        if pending is None or not await ctx.codes.finish(pending):
            return Reply("There is nothing to cancel.")
        return Reply("Cancelled: nothing was joined.")
    if action in ("join", "keep"):
        return await _join(ctx, message, words[1].lower() if len(words) > 1 else "")
    return await _claim(ctx, message, args)


async def unlink(ctx: Ctx, message: Message, args: str) -> Reply:
    """Separate the accounts of a person; the Gmail link stays with the account that made it."""
    if not message.is_direct:
        raise BotError("Ask me with /unlink in a direct chat.")
    members = await ctx.people.members(ctx.person)
    if len(members) < 2:
        return Reply(
            "This account is not joined with another network, so there is nothing to unlink."
        )
    account = await ctx.accounts.get(ctx.person)
    await ctx.people.separate(ctx.person)
    if ctx.oauth is not None:
        for member in members:
            ctx.oauth.forget(member)
    names = " and ".join(who(m) for m in members)
    if account is None:
        gmail = "No Gmail was linked; each can /connect its own."
    else:
        holder = account.maker if account.maker in members else ctx.person
        gmail = (
            f"The Gmail link ({account.address}) stays with {who(holder)}, which made it; "
            "the other can /connect its own."
        )
    text = (
        f"Separated {names}: each has its own history again, and a copy of the address book. "
        f"{gmail}"
    )
    for member in members:
        room = await ctx.accounts.direct_room(member)
        if member != message.user_key and room is not None:
            await ctx.say(member.partition(":")[0], room, Reply(text))
    return Reply(text)


async def _not_joined(ctx: Ctx, person: str) -> None:
    members = await ctx.people.members(person)
    if len(members) > 1:
        others = " and ".join(who(m) for m in members)
        raise BotError(f"{others} are already joined. Send /unlink first to separate them.")


async def _claim(ctx: Ctx, message: Message, typed: str) -> Reply:
    code = await ctx.codes.claim(normalise(typed), message.user_key, message.display_name)
    if code is None:
        raise BotError(BAD_CODE)
    maker = code.user_key
    if maker.partition(":")[0] == message.platform:
        await ctx.codes.finish(code)
        raise BotError(
            f"This code was made on {NETWORKS.get(message.platform)}: type it in a direct chat "
            "with me on your other network. Send /link there for a new one."
        )
    if not is_allowed(maker, ctx.config.bot.allowed_users):
        await ctx.codes.finish(code)
        raise BotError(
            "The account that made this code may not use this bot, so nothing was joined."
        )
    await _not_joined(ctx, await ctx.people.person(maker))
    mine, theirs = await _links(ctx, code)
    accounts = f"{who(maker, code.display_name)} and {who(message.user_key, message.display_name)}"
    if mine is not None and theirs is not None:
        here, there = message.platform, maker.partition(":")[0]
        return Reply(
            f"Join {accounts}? Both have a Gmail link: {theirs.address} on "
            f"{NETWORKS.get(there)}, {mine.address} on {NETWORKS.get(here)}. Joined, they share "
            f"{SHARED}. Send /link keep {there} or /link keep {here} to join and keep that "
            "link (the other is retired at Google), or /link cancel.",
            buttons=(
                Button(f"Keep {theirs.address}", data=f"/link keep {there}"),
                Button(f"Keep {mine.address}", data=f"/link keep {here}"),
                Button("Cancel", data="/link cancel"),
            ),
        )
    return Reply(
        f"Join {accounts} into one? They will share {SHARED}. Send /link join to join them, "
        "or /link cancel.",
        buttons=(Button("Join", data="/link join"), Button("Cancel", data="/link cancel")),
    )


async def _links(ctx: Ctx, code: LinkCode) -> tuple[Account | None, Account | None]:
    """Return the Gmail links of the claimer's and of the maker's person."""
    maker = await ctx.people.person(code.user_key)
    return await ctx.accounts.get(ctx.person), await ctx.accounts.get(maker)


async def _join(ctx: Ctx, message: Message, keep: str) -> Reply:
    code = await ctx.codes.pending(message.user_key)
    if code is None:
        raise BotError(
            "No join is waiting for your answer (a code lives 10 minutes). Send /link in a "
            "direct chat on your other network for a code, then /link <code> here."
        )
    person = await ctx.people.person(code.user_key)
    await _not_joined(ctx, person)
    if not is_allowed(code.user_key, ctx.config.bot.allowed_users):
        await ctx.codes.finish(code)
        raise BotError(
            "The account that made this code may not use this bot, so nothing was joined."
        )
    mine, theirs = await _links(ctx, code)
    drop: Account | None = None
    if mine is not None and theirs is not None:
        networks = (message.platform, code.user_key.partition(":")[0])
        if keep not in networks:
            raise BotError(
                f"Both have a Gmail link: send /link keep {networks[1]} or /link keep "
                f"{networks[0]} to say which to keep, or /link cancel."
            )
        drop = theirs if keep == message.platform else mine
    if not await ctx.codes.finish(code):
        raise BotError(BAD_CODE)  # answered twice at once: the other answer joined
    await ctx.people.join(person, ctx.person, drop=drop.user_key if drop else None)
    kept = (theirs if drop is mine else mine) if drop else (theirs or mine)
    if ctx.oauth is not None:
        ctx.oauth.forget(person)
        ctx.oauth.forget(ctx.person)
        # Google ends an app's whole grant for an account at any revocation: the same Google
        # account on both sides keeps its one grant, and the extra token is only forgotten.
        if drop is not None and kept is not None and drop.address.lower() != kept.address.lower():
            await ctx.oauth.revoke(drop)
    gmail = (
        f"Mail goes out from {kept.address}." if kept else "Send /connect on either to link Gmail."
    )
    retired = f" The link to {drop.address} was retired." if drop else ""
    text = (
        f"Joined {who(code.user_key, code.display_name)} and "
        f"{who(message.user_key, message.display_name)}: they now share {SHARED}. "
        f"{gmail}{retired} /unlink separates them again."
    )
    room = await ctx.accounts.direct_room(code.user_key)
    if room is not None:
        await ctx.say(code.user_key.partition(":")[0], room, Reply(text))
    return Reply(text)
