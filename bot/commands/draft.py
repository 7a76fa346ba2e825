"""The guided draft: /mail alone in a direct chat asks for the recipients, the subject and the
body, one answer at a time; /send shows the usual preview, /cancel drops the draft."""

from __future__ import annotations

import re
from dataclasses import replace

from bot.chat import Message, Reply
from bot.commands import mail as mail_commands
from bot.commands.context import Ctx, Private
from bot.errors import BotError
from bot.grammar import MailRequest, parse_mail
from bot.store.drafts import Draft
from bot.wording import prefix

NO_SUBJECT = "-"  # the answer that leaves the subject empty
DRAFT_TTL = 3600.0  # seconds after its last answer that a draft is dropped
ANSWERS_KEPT = 64  # answers remembered per draft: more than a network redelivers at once
QUESTIONS = {
    "to": "✏️ New mail. Who gets it? Addresses or aliases, separated by commas; cc: or bcc: "
    "before one copies it. (/cancel drops the draft)",
    "subject": f"Subject? ({NO_SUBJECT} for none)",
    "body": "Now the text: one message or several. /send when done, /cancel to drop it.",
}
_COMMAS = re.compile(r"\s*,\s*")


def _ask(step: str, why: str = "") -> Reply:
    return Reply(f"{why} {QUESTIONS[step]}".strip(), ask=True)


async def start(ctx: Ctx, message: Message) -> Reply:
    """Open a new draft for the user (replacing an open one) and ask for the recipients."""
    replaced = await ctx.drafts.drop(message.user_key)
    await ctx.drafts.put(
        Draft(message.user_key, message.room, "to", updated_at=ctx.outbox.clock())
    )
    return _ask("to", "Your earlier draft was dropped." if replaced else "")


async def _open(ctx: Ctx, message: Message) -> Draft | None:
    """Return the user's draft; an expired one is dropped and said so (BotError)."""
    draft = await ctx.drafts.get(message.user_key)
    if draft is None:
        return None
    if draft.updated_at < ctx.outbox.clock() - DRAFT_TTL:
        await ctx.drafts.drop(message.user_key)
        p = prefix(message.platform)
        raise BotError(
            f"Your draft expired after an hour without an answer, so nothing was sent. "
            f"{p}mail starts a new one."
        )
    return draft


def _request(ctx: Ctx, draft: Draft, aliases: dict[str, str]) -> MailRequest:
    subject = f" {draft.subject}" if draft.subject else ""
    return parse_mail(f"{draft.to}{subject} | {draft.body or '.'}", aliases)


async def answer(ctx: Ctx, message: Message) -> tuple[bool, Reply | None]:
    """Take plain text in a direct chat as the draft's next answer: whether it was one (there
    is a draft), and what to say."""
    # One answer at a time per user: the network hands messages over concurrently, and two
    # quick parts of a body must both be kept.
    async with ctx.drafts.lock(message.user_key):
        draft = await _open(ctx, message)
        if draft is None:
            return False, None
        if message.event_key in draft.answered:  # delivered again after a restart: taken
            return True, _ask(draft.step) if draft.step != "body" else None
        taken = (*draft.answered, message.event_key)[-ANSWERS_KEPT:]
        return True, await _next(ctx, message, replace(draft, answered=taken))


async def _next(ctx: Ctx, message: Message, draft: Draft) -> Reply | None:
    aliases = await ctx.aliases.all(ctx.person)
    text = message.text.strip()
    now = ctx.outbox.clock()
    if draft.step == "to":
        token = _COMMAS.sub(",", text)
        if not token or any(c.isspace() or c == "|" for c in token):
            return _ask("to", "Separate the addresses with commas only.")
        try:
            _request(ctx, replace(draft, to=token), aliases)
        except BotError as exc:
            return _ask("to", str(exc).split("\n")[0])
        await ctx.drafts.put(replace(draft, to=token, step="subject", updated_at=now))
        return _ask("subject")
    if draft.step == "subject":
        subject = "" if text == NO_SUBJECT else text
        if "|" in subject:  # /mail's grammar ends a subject at the first |
            return _ask("subject", "A subject cannot contain a |.")
        try:
            _request(ctx, replace(draft, subject=subject), aliases)
        except BotError as exc:
            return _ask("subject", str(exc).split("\n")[0])
        await ctx.drafts.put(replace(draft, subject=subject, step="body", updated_at=now))
        return _ask("body")
    body = f"{draft.body}\n{message.text}" if draft.body else message.text
    _request(ctx, replace(draft, body=body), aliases)  # a refusal keeps the draft as it was
    await ctx.drafts.put(replace(draft, body=body, updated_at=now))
    return None if draft.body else Reply("Got it. Write more, or /send to see the preview.")


async def mail(ctx: Ctx, message: Message, args: str) -> Reply | Private | None:
    """/mail alone in a direct chat starts a draft; anything else is mailed at once."""
    alone = not args.strip() and message.quoted is None and message.attachment is None
    if alone and message.is_direct:
        return await start(ctx, message)
    return await mail_commands.mail(ctx, message, args)


async def send(ctx: Ctx, message: Message, args: str) -> Reply | Private | None:
    """Finish the draft into a preview (/send alone, in a direct chat); else answer a preview."""
    if not message.is_direct or args.strip():
        return await mail_commands.send(ctx, message, args)
    async with ctx.drafts.lock(message.user_key):  # after the answers before it
        draft = await _open(ctx, message)
        if draft is None:
            return await mail_commands.send(ctx, message, args)
        if draft.step != "body":
            return _ask(draft.step, "Not yet:")
        subject = f" {draft.subject}" if draft.subject else ""
        answer_ = await mail_commands.mail(
            ctx, replace(message, quoted=None), f"{draft.to}{subject} | {draft.body}", held=True
        )
        await ctx.drafts.drop(message.user_key)  # only once its mail was accepted
        return answer_


async def cancel(ctx: Ctx, message: Message, args: str) -> Reply:
    """Drop the draft (/cancel alone, in a direct chat); else cancel a preview."""
    if message.is_direct and not args.strip() and await _open(ctx, message) is not None:
        await ctx.drafts.drop(message.user_key)
        return Reply("🗑 Draft dropped; nothing was sent.")
    return await mail_commands.cancel(ctx, message, args)
