"""``mailbridge check``: what a configuration would run, in a few lines."""

from __future__ import annotations

from bot.config import Config
from bot.store.db import shown


def describe(c: Config) -> list[str]:
    """Say in a few lines what this configuration would run."""
    lines = [
        f"database: {shown(c.bot.database)}",
        f"allowed users: {', '.join(c.bot.allowed_users) or 'anyone'}",
        f"send limits per user: {c.bot.sends_per_minute}/minute, {c.bot.sends_per_day}/day",
        f"web server: listening on {c.web.listen}, public URL {c.web.public_url}",
    ]
    if c.mail_backend == "outbox":
        lines.append(f"mail: written as .eml files to {c.mail.outbox_dir} (nothing is sent)")
    else:
        lines.append("mail: sent through the Gmail API as each connected user")
    networks = []
    if c.telegram is not None:
        networks.append(f"telegram ({c.telegram.mode})")
    if c.matrix is not None:
        networks.append(f"matrix as {c.matrix.user_id} on {c.matrix.homeserver}")
    lines.append(
        f"chat networks: {', '.join(networks)}"
        if networks
        else "chat networks: none configured ('mailbridge run --console' chats from a terminal)"
    )
    return lines
