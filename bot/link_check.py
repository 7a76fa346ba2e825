"""The link check: refresh each link's access token in the background, spread evenly over
``[google] link_check_interval``, so a link Google ended, or is about to end, is told to its
owner in their direct chat before a mail fails.

One link at a time, one token request each, at least ``60 / link_checks_per_minute`` seconds
apart: 10,000 links are a steady trickle, never a burst. A check takes the same per-user lock
as a send's refresh (``Tokens.renew``), so it never races a send or holds up a command.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from bot.backends import SendRefused
from bot.chat import Reply
from bot.commands.context import Ctx
from bot.commands.private import direct_room
from bot.google.tokens import LinkEnded, Tokens
from bot.leader import SWEEPS, Lead, Leadership
from bot.store.accounts import Account
from bot.store.link_health import TESTING_LIFETIME, EndedLink, LinkHealth

log = logging.getLogger(__name__)

WARN_BEFORE = 86400.0  # owners hear of a link's end a day before
ENDED = (
    "❌ Google no longer accepts the link to {address}, so I removed it. Google ends a link "
    "when access is revoked or the password is changed, after 6 months unused, after 7 days "
    "while this bot's Google app is in Testing, or when the account has too many links to this "
    "app. To send mail again, send /connect and approve Google's page."
)
ENDING = (
    "⏳ Your Gmail link to {address} ends on {when}: {why}. To keep sending mail, send /connect "
    "before then and approve Google's page again."
)
WHY_TESTING = "while this bot's Google app is in Testing, Google ends links 7 days after consent"
WHY_GOOGLE = "Google gave this bot access for a limited time"


def stamp(at: float) -> str:
    """Return ``at`` as users read times: ``2026-12-01 14:05 UTC``."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))


class LinkCheck:
    """Checks every link once per interval; tells owners of ended and ending links."""

    def __init__(
        self,
        ctx: Ctx,
        tokens: Tokens,
        health: LinkHealth,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert ctx.config.google is not None  # the check exists only with Google
        self._ctx = ctx
        self._tokens = tokens
        self._health = health
        self._clock = clock
        self.interval = float(ctx.config.google.link_check_interval)
        per_minute = ctx.config.google.link_checks_per_minute
        self.min_gap = 60.0 / per_minute if per_minute else 0.0
        self.testing_mode = ctx.config.google.testing_mode
        self.passes = 0  # passes finished
        self.passed = asyncio.Event()  # set at the end of each pass (tests wait for it)
        self._task: asyncio.Task[None] | None = None
        # The lease the check runs under with several instances: each notice is fenced by it.
        self._lead: tuple[Leadership, Lead] | None = None

    def start(self, leadership: Leadership | None = None) -> None:
        """Run the check as a task of the running loop (on the instance leading the sweeps)."""
        if self.interval > 0 and self._task is None:
            job = (
                self.run()
                if leadership is None
                else leadership.run(SWEEPS, lambda lead: self._swept(leadership, lead))
            )
            self._task = asyncio.create_task(job, name="link-check")

    async def _swept(self, leadership: Leadership, lead: Lead) -> None:
        self._lead = (leadership, lead)
        await self.run()

    async def stop(self) -> None:
        """Stop the task and wait for it to end."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def run(self) -> None:
        """Check every link once per interval, evenly spread, until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await self._tell_ended()  # also those a restart cut off
            keys = await self._health.links()
            gap = max(self.interval / max(len(keys), 1), self.min_gap)
            due = loop.time()
            for key in keys:
                started = loop.time()
                await self._check_safely(key)
                # On time after a slow check, but never two closer than the rate allows.
                due = max(due + gap, started + self.min_gap)
                await asyncio.sleep(max(0.0, due - loop.time()))
            if not keys:
                await asyncio.sleep(max(self.interval, self.min_gap))
            self.passes += 1
            self.passed.set()

    async def check(self, user_key: str) -> None:
        """Check one link now: refresh its token, tell its owner if it ended or ends soon."""
        account = await self._ctx.accounts.get(user_key)
        if account is None:
            return
        try:
            await self._tokens.renew(account)
        except LinkEnded as exc:
            await self._health.ended(user_key, account.maker, exc.address, self._clock())
            await self._tell_ended()
            return
        except SendRefused:
            pass  # unreachable or refused for now: the next check asks again
        await self._warn_if_ending(account)

    async def _check_safely(self, user_key: str) -> None:
        try:
            await self.check(user_key)
        except Exception:
            log.exception("checking a link failed")

    async def _warn_if_ending(self, account: Account) -> None:
        health = await self._health.get(account.user_key, account.connected_at)
        ends = health.ends_at(self.testing_mode)
        if health.warned or ends is None or ends - self._clock() > WARN_BEFORE:
            return
        testing = self.testing_mode and ends == account.connected_at + TESTING_LIFETIME
        why = WHY_TESTING if testing else WHY_GOOGLE
        text = ENDING.format(address=account.address, when=stamp(ends), why=why)
        if await self._tell(account.maker, text):
            await self._health.mark_warned(account.user_key, account.connected_at)

    async def _tell_ended(self) -> None:
        for ended in await self._health.untold():
            await self._tell_one_ended(ended)

    async def _tell_one_ended(self, ended: EndedLink) -> None:
        if await self._ctx.accounts.get(ended.user_key) is not None:
            await self._health.told(ended.user_key)  # linked again since: nothing to tell
            return
        if await self._tell(ended.tell, ENDED.format(address=ended.address)):
            await self._health.told(ended.user_key)

    async def _tell(self, user_key: str, text: str) -> bool:
        """Say ``text`` in the chat account's direct chat, never a group; False if it
        could not."""
        room = await direct_room(self._ctx, user_key)
        if room is None:
            log.warning("a link notice waits: its owner has no direct chat with the bot")
            return False
        if self._lead is not None and not await self._lead[0].still(self._lead[1]):
            return False  # another instance leads the sweeps now: it tells
        await self._ctx.say(user_key.partition(":")[0], room, Reply(text))
        return True
