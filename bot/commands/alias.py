"""/alias: the user's address book."""

from __future__ import annotations

from bot.addresses import parse_address
from bot.chat import Message, Reply
from bot.commands.context import Ctx, Private
from bot.errors import BotError
from bot.store.aliases import alias_name

USAGE = "Usage: /alias add <name> <address>, /alias del <name>, /alias list"


async def alias(ctx: Ctx, message: Message, args: str) -> Reply | Private:
    """Add, delete or list the user's aliases; each works anywhere an address does."""
    words = args.split()
    action = words[0].lower() if words else "list"
    if action == "list" and len(words) <= 1:
        aliases = await ctx.aliases.all(ctx.person)
        if not aliases:
            return Reply(f"You have no aliases yet. {USAGE}")
        lines = ["Your aliases:"] + [f"{name} = {address}" for name, address in aliases.items()]
        if message.is_direct:
            return Reply("\n".join(lines))
        if ctx.config.mail.group_confirmation == "minimal":  # this answer goes to the author
            return Private(
                Reply("\n".join(lines)), f"{message.display_name}: see our direct chat."
            )
        return Reply(f"You have {len(aliases)} aliases; ask me in a direct chat to see them.")
    if action == "add" and len(words) == 3:
        name = alias_name(words[1])  # the name first: its advice comes before the address's
        await ctx.aliases.add(ctx.person, name, str(parse_address(words[2])))
        return Private(
            Reply(f"Alias {name} = {words[2]}. Use it anywhere an address goes: /mail {name} …"),
            f"{message.display_name}: your alias is saved; see our direct chat.",
        )
    if action in ("del", "delete", "rm", "remove") and len(words) == 2:
        if await ctx.aliases.delete(ctx.person, words[1]):
            return Reply(f"Alias {words[1].lower()} deleted.")
        raise BotError(f"You have no alias {words[1].lower()}.")
    raise BotError(USAGE)
