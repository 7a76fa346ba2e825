"""What the bot says about mail: confirmations and outcomes, in one place."""

from __future__ import annotations

import re

from bot.outbox import FAILED, SENT, UNKNOWN, OutboxRow, Outcome

APOLOGY = "Sorry, something went wrong on our side. It has been logged; please try again later."


def prefix(platform: str) -> str:
    """Return the command prefix users of ``platform`` should type (Element eats '/')."""
    return "!" if platform == "matrix" else "/"


_COMMANDS = re.compile(r"(?<![\w/])/(mail|help|connect|disconnect|status|retry|start)\b")


def localise(text: str, platform: str) -> str:
    """Spell command names as users of ``platform`` type them ("!mail" on Matrix)."""
    return _COMMANDS.sub(r"!\1", text) if platform == "matrix" else text


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
            "mailbridge restarted while sending it"
            if outcome.after_restart
            else outcome.reason or "Gmail did not answer"
        ).rstrip(".")
        return (
            f"⚠️ Maybe sent: {what}. {why[:1].upper()}{why[1:]}, so it may or may not have gone "
            f"out. Check your Sent folder; if it is not there, send it again with "
            f"{prefix(platform)}retry {row.id}."
        )
    return f"{what}: {outcome.state}"
