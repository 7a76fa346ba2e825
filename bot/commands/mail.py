"""Mail commands: /mail with its preview and undo window, /send, /cancel, /undo, /retry,
/history."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from bot import gate
from bot.chat import Attachment, AttachmentRefused, Attachments, Button, Message, Reply
from bot.commands.context import Ctx, Private
from bot.commands.personal import user_zone, zone_of
from bot.compose import compose
from bot.errors import BotError
from bot.forward import default_subject, with_forward
from bot.grammar import parse_mail
from bot.policy import check_send_budget
from bot.store.outbox_rows import CANCELLED, FAILED, HELD, QUEUED, UNKNOWN, OutboxRow
from bot.store.settings import SIGNATURE
from bot.together import together
from bot.when import parse_when, shown, split_at
from bot.wording import attachment_refused, preview_text, recipients_shown, subject_shown

MAX_MESSAGE = 35 * 1024 * 1024  # Gmail's limit per message as sent
PREVIEW_TTL = 600.0


async def mail(ctx: Ctx, message: Message, args: str, *, held: bool = False) -> Private | None:
    """Validate, compose and record a mail; preview it (always with ``held``), or queue it
    behind the undo window."""
    limits = ctx.config.bot
    budget = (ctx.outbox, ctx.person, limits.sends_per_minute, limits.sends_per_day)
    at, args = split_at(args)
    async with ctx.outbox.busy.hold(gate.READ):
        # The reads in one trip to the database; a usage error still comes first.
        aliases, sender, settings = await together(
            ctx.accounts.shared,
            ctx.aliases.all(ctx.person),
            ctx.backend.sender(ctx.person),
            ctx.settings.all(ctx.person),
        )
        if isinstance(aliases, BaseException):
            raise aliases
        if isinstance(settings, BaseException):
            raise settings
        zone = zone_of(ctx, settings)
        quoted = message.quoted
        if quoted is not None:  # a reply to a text message: forward it, dated in the zone
            args = with_forward(args, quoted, zone)
        request = parse_mail(args, aliases)
        if quoted is not None:
            request = default_subject(request, quoted)
        when = None if at is None else parse_when(at, _now(ctx), zone)
        if isinstance(sender, BaseException):
            raise sender
        if message.attachment is not None:
            await check_send_budget(*budget)  # early, before any download
    attachments = await _attachments(ctx, message)
    async with ctx.outbox.busy.hold(gate.ACCEPT):
        name = message.display_name if ctx.backend.name == "outbox" else ""
        raw = compose(
            request,
            sender,
            name,
            markdown=ctx.config.mail.markdown,
            attachments=attachments,
            signature=settings.get(SIGNATURE, ""),
        ).as_bytes()
        if len(raw) > MAX_MESSAGE:
            raise BotError(
                f"This mail would be {len(raw) / 2**20:.1f} MB; Gmail takes at most 35 MB per "
                "message (about 25 MB of attachments). Nothing was sent."
            )
        mode = ctx.config.mail.confirm
        held = (
            held
            or mode == "always"
            or (
                mode == "new_recipients"
                and bool(
                    await ctx.outbox.rows.unknown_recipients(
                        ctx.person, [str(a) for a in request.recipients]
                    )
                )
            )
        )
        undo = ctx.config.mail.undo_seconds
        now = time.time()
        # The accept counts the send limits and records in one statement, so a burst cannot
        # slip past them.
        row = await ctx.outbox.accept(
            f"{message.platform}:{message.event_key}",
            message.user_key,
            message.room,
            message.is_direct,
            request,
            raw,
            held=held,
            # A scheduled mail keeps its time through the preview; else the undo window.
            due_at=when.timestamp() if when else 0.0 if held else now + undo,
            author=message.display_name,
            person=ctx.person,
            limits=(limits.sends_per_minute, limits.sends_per_day),
            now=now,
        )
        if row is None:  # over a limit (counted as the accept did), or a redelivery
            await check_send_budget(*budget, now=now)
            return None
    if held:
        later = f"\nGoes out {shown(when, zone)}." if when else ""
        preview = Reply(
            preview_text(row, str(sender), request.body) + later,
            buttons=(
                Button("Send", data=f"/send {row.id}"),
                Button("Cancel", data=f"/cancel {row.id}"),
            ),
        )
        who = message.display_name
        return Private(
            preview, f"📝 {who}'s mail #{row.id} waits for their Send in our direct chat."
        )
    ctx.outbox.submit(row)
    if when:
        return _scheduled_notice(row, zone, message.display_name)
    return _undo_notice(row, undo, message.display_name)


def _now(ctx: Ctx) -> datetime:
    return datetime.fromtimestamp(ctx.outbox.clock(), UTC)


def _scheduled_notice(row: OutboxRow, zone: ZoneInfo, who: str) -> Private:
    at = shown(datetime.fromtimestamp(row.due_at, UTC), zone)
    notice = Reply(
        f"🕒 Mail #{row.id} to {recipients_shown(row)}, {subject_shown(row.subject)} goes out "
        f"{at}. /cancel {row.id} drops it before then. It counts toward your send limit now.",
        buttons=(Button("Cancel", data=f"/cancel {row.id}"),),
    )
    return Private(notice, f"🕒 {who}'s mail #{row.id} goes out {at} (/cancel {row.id} drops it).")


async def _attachments(ctx: Ctx, message: Message) -> tuple[Attachment, ...]:
    if message.attachment is None:
        return ()
    network = ctx.network(message.platform)
    if not isinstance(network, Attachments):
        raise BotError("Attachments are not supported on this network.")
    try:
        return (await network.fetch_attachment(message.attachment, MAX_MESSAGE),)
    except AttachmentRefused as refused:
        raise BotError(attachment_refused(refused)) from None


def _undo_notice(row: OutboxRow, undo: int, who: str) -> Private | None:
    if undo <= 0:
        return None  # the outcome follows at once
    notice = Reply(
        f"⏳ Mail #{row.id} to {recipients_shown(row)}, {subject_shown(row.subject)} goes out in "
        f"{undo} s. Changed your mind? /undo",
        buttons=(Button("Undo", data=f"/undo {row.id}"),),
    )
    return Private(notice, f"⏳ {who}'s mail #{row.id} goes out in {undo} s (/undo stops it).")


async def _own_row(ctx: Ctx, message: Message, args: str, state: str, what: str) -> OutboxRow:
    """Return the mail a /send, /cancel or /undo means: by number, else the newest in ``state``."""
    number = args.strip().lstrip("#")
    if number:
        if not number.isdigit():
            raise BotError(f"Which mail? Give its number, e.g. /{what} 12.")
        row = await ctx.outbox.rows.get(int(number))
        if row is None:
            raise BotError(f"There is no mail #{number}.")
        if row.person != ctx.person:
            raise BotError(
                f"Mail #{row.id} is not yours: only the one who wrote it can {what} it."
            )
        return row
    row = await ctx.outbox.rows.latest(ctx.person, state)
    if row is None:
        raise BotError(f"You have no mail to {what}.")
    return row


async def send(ctx: Ctx, message: Message, args: str) -> Private | None:
    """Send a previewed mail (the Send button)."""
    row = await _own_row(ctx, message, args, HELD, "send")
    if row.state != HELD:
        raise BotError(f"Mail #{row.id} is {row.state}; there is nothing to confirm.")
    if row.created_at < time.time() - PREVIEW_TTL:
        await ctx.outbox.cancel(row.id)
        raise BotError(
            f"The preview of mail #{row.id} expired after 10 minutes, so nothing was sent. "
            "Send the /mail again."
        )
    undo = ctx.config.mail.undo_seconds
    due_at = max(ctx.outbox.clock() + undo, row.due_at)  # a scheduled mail keeps its time
    if not await ctx.outbox.rows.release(row.id, due_at):
        raise BotError(f"Mail #{row.id} was already sent or cancelled.")
    ctx.outbox.submit(row, due_at)
    if due_at == row.due_at:
        zone = await user_zone(ctx)
        return _scheduled_notice(row, zone, message.display_name)
    return _undo_notice(row, undo, message.display_name)


async def cancel(ctx: Ctx, message: Message, args: str) -> Reply:
    """Drop a previewed mail (the Cancel button)."""
    row = await _own_row(ctx, message, args, HELD, "cancel")
    if row.state not in (HELD, QUEUED) or not await ctx.outbox.cancel(row.id):
        raise BotError(f"Mail #{row.id} is {row.state} and can no longer be cancelled.")
    return Reply(f"🗑 Cancelled mail #{row.id}; nothing was sent.")


async def undo(ctx: Ctx, message: Message, args: str) -> Reply:
    """Stop a mail that is still waiting out its undo window."""
    row = await _own_row(ctx, message, args, QUEUED, "undo")
    if row.state == CANCELLED:
        return Reply(f"Mail #{row.id} was already cancelled; nothing was sent.")
    if row.state != QUEUED or not await ctx.outbox.cancel(row.id):
        raise BotError(f"Too late: mail #{row.id} has already gone out ({row.state}).")
    return Reply(f"↩️ Undone: mail #{row.id} was not sent.")


async def retry(ctx: Ctx, message: Message, args: str) -> Private:
    """Send a failed or unknown mail again, on the owner's word."""
    if not args.strip():
        raise BotError("Which mail? Give its number, e.g. /retry 12 (see /history).")
    row = await _own_row(ctx, message, args, FAILED, "retry")
    if row.state not in (FAILED, UNKNOWN):
        raise BotError(
            f"Mail #{row.id} is {row.state}; only failed or unknown mail can be retried."
        )
    await ctx.backend.sender(ctx.person)  # still connected?
    if not await ctx.outbox.rows.requeue(row.id):
        raise BotError(f"Mail #{row.id} can no longer be sent again.")
    ctx.outbox.submit(row, 0.0)
    return Private(
        Reply(
            f"Sending mail #{row.id} to {recipients_shown(row)}, {subject_shown(row.subject)} "
            "again."
        ),
        f"{message.display_name}'s mail #{row.id} is being sent again.",
    )


async def history(ctx: Ctx, message: Message, args: str) -> Reply:
    """List the user's last ten mails with their state (in a direct chat only)."""
    if not message.is_direct:
        raise BotError("Your mail history is private: ask me with /history in a direct chat.")
    rows = await ctx.outbox.rows.history(ctx.person, 10)
    if not rows:
        return Reply("You have not sent any mail through me yet.")
    icons = {"sent": "✅", "failed": "❌", "unknown": "⚠️", "cancelled": "🗑", "held": "📝"}
    lines = ["Your last mails (newest first; /retry <number> resends a failed or unknown one):"]
    zone, now = await user_zone(ctx), ctx.outbox.clock()
    for row in rows:
        # Accounts joined with /link share one history: say which network a mail came from.
        network = row.user_key.partition(":")[0].capitalize()
        origin = f" (from {network})" if row.user_key != message.user_key else ""
        if row.state == QUEUED and row.due_at > now:
            at = shown(datetime.fromtimestamp(row.due_at, UTC), zone)
            lines.append(
                f"🕒 #{row.id} scheduled for {at} (/cancel {row.id}): to "
                f"{recipients_shown(row, 3)}, {subject_shown(row.subject)}{origin}"
            )
            continue
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(row.created_at))
        icon = icons.get(row.state, "⏳")
        lines.append(
            f"{icon} #{row.id} {when} UTC {row.state}: to {recipients_shown(row, 3)}, "
            f"{subject_shown(row.subject)}{origin}"
        )
    return Reply("\n".join(lines))
