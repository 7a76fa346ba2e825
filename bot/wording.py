"""What the bot says about mail: confirmations and outcomes, in one place."""

from __future__ import annotations

from bot.chat import AttachmentRefused
from bot.outbox import Outcome
from bot.store.outbox_rows import FAILED, SENT, UNKNOWN, OutboxRow

REPEAT = " (Said again after a restart, in case it did not reach you.)"
APOLOGY = "Sorry, something went wrong on our side. It has been logged; please try again later."


def prefix(platform: str) -> str:
    """Return the command prefix users of ``platform`` should type (Element eats '/')."""
    return "!" if platform == "matrix" else "/"


def subject_shown(subject: str) -> str:
    """Return the subject in quotes, or "(no subject)"."""
    return f"“{subject}”" if subject else "(no subject)"


def recipients_shown(row: OutboxRow, limit: int = 5) -> str:
    """Name the recipients; Bcc only in a direct chat, where nobody else reads it."""
    names = list(row.to) + [f"cc {a}" for a in row.cc]
    if row.is_direct:
        names += [f"bcc {a}" for a in row.bcc]
    elif row.bcc:
        names.append(f"{len(row.bcc)} in bcc")
    if len(names) > limit:
        names = [*names[:limit], f"and {len(names) - limit} more"]
    return ", ".join(names)


def outcome_text(row: OutboxRow, outcome: Outcome, platform: str) -> str:
    """Tell the owner of ``row`` how its delivery ended."""
    what = f"mail #{row.id} to {recipients_shown(row)}, {subject_shown(row.subject)}"
    if outcome.state == SENT:
        note = outcome.receipt.note if outcome.receipt and outcome.receipt.note else "sent"
        return f"✅ {what[:1].upper()}{what[1:]}: {note}."
    if outcome.state == FAILED:
        return f"❌ Not sent: {what}. {outcome.reason}".rstrip()
    if outcome.state == UNKNOWN:
        why = (
            "The bot restarted while sending it"
            if outcome.after_restart
            else outcome.reason or "Gmail did not answer"
        ).rstrip(".")
        return (
            f"⚠️ Maybe sent: {what}. {why}, so it may or may not have gone out. Check your Sent "
            f"folder; if it is not there, send it again with {prefix(platform)}retry {row.id}."
        )
    return f"{what}: {outcome.state}"


def preview_text(row: OutboxRow, sender: str, body: str) -> str:
    """Show a held mail before it is sent."""
    lines = [
        f"📝 Preview of mail #{row.id}: nothing is sent until you press Send "
        "(or type /send) within 10 minutes.",
        f"From: {sender}",
    ]
    if row.to:
        lines.append(f"To: {', '.join(row.to)}")
    if row.cc:
        lines.append(f"Cc: {', '.join(row.cc)}")
    if row.bcc:
        lines.append(f"Bcc: {', '.join(row.bcc)}" if row.is_direct else f"Bcc: {len(row.bcc)}")
    lines.append(f"Subject: {row.subject or '(no subject)'}")
    start = body if len(body) <= 300 else body[:300].rstrip() + "…"
    if start:
        lines += ["", start]
    return "\n".join(lines)


def minimal_text(row: OutboxRow, outcome: Outcome) -> str:
    """What a group hears with group_confirmation = "minimal": who, not to whom or what."""
    who = row.author or "Someone"
    if outcome.state == SENT:
        return f"✅ {who} sent a mail (#{row.id})."
    if outcome.state == FAILED:
        return f"❌ {who}'s mail #{row.id} was not sent; details in their direct chat."
    return f"⚠️ {who}'s mail #{row.id} may or may not have been sent; details in their direct chat."


def attachment_refused(refused: AttachmentRefused) -> str:
    """Say why a file could not be attached; nothing was sent."""
    network = refused.network.capitalize()
    if refused.reason == "too_large":
        size = f"{(refused.size or 0) / 2**20:.1f} MB"
        limit = f"{(refused.limit or 0) / 2**20:.0f} MB"
        if refused.by_network:
            return (
                f"{network} lets bots download files up to {limit}; this one is {size}, so it "
                "cannot be attached. Nothing was sent."
            )
        return (
            f"That file is {size}; Gmail takes at most {limit} per message, so it cannot be "
            "attached. Nothing was sent."
        )
    if refused.reason == "refused":
        return f"{network} would not hand over the file ({refused.detail})."
    if refused.reason == "undecryptable":
        return "The file could not be decrypted, so it was not attached."
    if refused.detail:
        return f"The file could not be downloaded ({refused.detail}); try again."
    return f"The file could not be downloaded from {network}; try again."


def declined_why(error: str) -> str:
    """Say why a login came back with Google's ``error=`` (the user declined, or another)."""
    if error == "access_denied":
        return "you did not allow access on Google's page"
    return "Google reported an error"


# What the chat hears when a login links nothing (the browser shows a page: bot/web.py).
_LOGIN_FAILED = {
    "not_allowed": "the box 'Send email on your behalf' was not ticked on Google's page. "
    "Send /connect and tick it.",
    "incomplete": "Google's answer was incomplete. Send /connect again.",
    "broken_client": "Google refused this bot's own credentials; the bot's operator must fix "
    "its Google setup.",
    "refused": "Google refused to complete the login. Send /connect for a new link.",
    "unreachable": "Google's sign-in service did not answer. Send /connect for a new link.",
}


def login_failed_text(reason: str, error: str = "") -> str:
    """Tell the chat why a login linked nothing; empty when the chat need not hear of it."""
    if reason == "declined":
        return f"❌ Gmail was not connected: {declined_why(error)}. Send /connect to try again."
    said = _LOGIN_FAILED.get(reason)
    return f"❌ Gmail was not connected: {said}" if said else ""
