"""What users are told outside a command's reply: an account linked, a login failed, a mail's
outcome."""

from __future__ import annotations

from bot.chat import Reply
from bot.commands.context import Ctx
from bot.commands.private import direct_room
from bot.google.oauth import Linked, LoginFailed
from bot.outbox import Outcome
from bot.store.outbox_rows import OutboxRow
from bot.wording import REPEAT, login_failed_text, minimal_text, outcome_text, prefix


class Notices:
    """Tells users what happened since their command, each in the room it belongs to."""

    def __init__(self, ctx: Ctx) -> None:
        self._ctx = ctx

    async def linked(self, linked: Linked) -> None:
        """Tell the user in chat that the consent flow connected their account."""
        platform = linked.login.user_key.partition(":")[0]
        p = prefix(platform)
        text = (
            f"✅ Gmail connected as {linked.address}. Send mail with "
            f"{p}mail <to> <subject> | <body>; {p}status shows the link, {p}disconnect ends it."
        )
        await self._ctx.say(platform, linked.login.room, Reply(text))

    async def login_failed(self, failure: LoginFailed) -> None:
        """Tell the user in chat why the consent flow did not connect their account."""
        text = login_failed_text(failure.reason, failure.error)
        if failure.login is not None and text:
            platform = failure.login.user_key.partition(":")[0]
            await self._ctx.say(platform, failure.login.room, Reply(text))

    async def outcome(self, row: OutboxRow, outcome: Outcome) -> None:
        """Tell a mail's owner how its delivery ended (in a group: as configured)."""
        platform = row.user_key.partition(":")[0]
        text = outcome_text(row, outcome, platform) + (REPEAT if outcome.repeat else "")
        reply_to = row.event_key.partition(":")[2]
        say = self._ctx.say
        if row.is_direct or self._ctx.config.mail.group_confirmation == "full":
            await say(platform, row.room, Reply(text, reply_to=reply_to))
            return
        # Minimal: the group hears who sent a mail; the details go to the author's direct chat.
        minimal = minimal_text(row, outcome) + (REPEAT if outcome.repeat else "")
        await say(platform, row.room, Reply(minimal, reply_to=reply_to))
        direct = await direct_room(self._ctx, row.user_key)
        if direct is not None:
            await say(platform, direct, Reply(text))
