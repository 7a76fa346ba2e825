"""A person's own settings: /timezone (for ``/mail at:…``) and /signature (stored under
the person, so every chat account of one person shares them)."""

from __future__ import annotations

from collections.abc import Mapping
from zoneinfo import ZoneInfo

from bot.chat import Message, Reply
from bot.commands.context import Ctx
from bot.errors import BotError
from bot.store.settings import SIGNATURE, TIMEZONE
from bot.when import parse_zone

MAX_SIGNATURE = 1000  # characters
MAX_SIGNATURE_LINES = 10


def zone_of(ctx: Ctx, settings: Mapping[str, str]) -> ZoneInfo:
    """Return the user's time zone from their ``settings``, else the configured default."""
    return parse_zone(settings.get(TIMEZONE) or ctx.config.bot.timezone)


async def user_zone(ctx: Ctx) -> ZoneInfo:
    """Return the time zone the author's times are read and shown in (the person's)."""
    return zone_of(ctx, await ctx.settings.all(ctx.person))


async def timezone(ctx: Ctx, message: Message, args: str) -> Reply:
    """Set the user's time zone (``/timezone Europe/Berlin``), or show it."""
    name = args.strip()
    if not name:
        zone = await user_zone(ctx)
        return Reply(
            f"Your time zone is {zone.key}. Change it with /timezone <name>, "
            "e.g. /timezone Europe/Berlin."
        )
    zone = parse_zone(name)
    await ctx.settings.put(ctx.person, TIMEZONE, zone.key)
    return Reply(f"Your time zone is now {zone.key}: /mail at:18:30 … means 18:30 there.")


async def signature(ctx: Ctx, message: Message, args: str) -> Reply:
    """Set the signature added to every mail, show it (no text), or remove it ("off")."""
    text = args.strip().replace("\r\n", "\n").replace("\r", "\n")
    if not text:
        current = await ctx.settings.get(ctx.person, SIGNATURE)
        if current is None:
            return Reply("You have no signature. Set one with /signature <text> (lines allowed).")
        return Reply(f"Your signature (/signature off removes it):\n-- \n{current}")
    if text.lower() == "off":
        await ctx.settings.put(ctx.person, SIGNATURE, None)
        return Reply("Signature removed: your mail ends with its body again.")
    if len(text) > MAX_SIGNATURE or text.count("\n") >= MAX_SIGNATURE_LINES:
        raise BotError(
            f"A signature is at most {MAX_SIGNATURE_LINES} lines and {MAX_SIGNATURE} "
            "characters; please shorten it."
        )
    if "\0" in text or any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):
        raise BotError("The signature contains a character that cannot be sent; retype it.")
    await ctx.settings.put(ctx.person, SIGNATURE, text)
    return Reply(f'Signature saved. Every mail now ends with "-- " and:\n{text}')
