"""Leadership: jobs that must run on one instance at a time, and the heartbeat of this one.

A job that needs a single consumer (a Matrix device's sync, Telegram's long poll, the sweeps)
runs under a named lease (bot.store.instances): ``Leadership.run(name, job)`` waits until this
instance holds the lease, runs ``job(lead)``, cancels it when the lease is lost, and waits to
lead again. ``Lead.epoch`` counts holders (a write that must come from the current leader
carries it); ``Lead.lost`` is set when this instance stops leading. A holder that cannot renew
its lease within ``LEASE_TTL`` stops acting by itself, and a new holder starts only after the
old lease ran out, so two never act at once. On SQLite the one process leads everything at
once, with no round trip and no renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from bot.chat import ChatAdapter, Paced, SingleConsumer
from bot.outbox import Outbox
from bot.store.engine import Database
from bot.store.instances import BEAT, LEASE_TTL, RENEW, Instances, LeaseKeeper
from bot.store.pacing import SharedPacer

log = logging.getLogger(__name__)
T = TypeVar("T")
STOP_TIMEOUT = 5.0  # seconds a clean stop waits to remove this run's row
SWEEPS = "sweeps"  # the lease of the periodic jobs over every account (bot.link_check)


@dataclass
class Lead:
    """This instance leads ``name`` since the start of ``epoch``, until ``lost`` is set."""

    name: str
    epoch: int
    lost: asyncio.Event = field(default_factory=asyncio.Event)


class Leadership:
    """Takes and keeps the leases of this process run."""

    def __init__(self, keeper: LeaseKeeper, *, shared: bool) -> None:
        self.keeper = keeper
        self._shared = shared  # False: the only process (SQLite), leading everything
        self._leads: dict[str, Lead] = {}
        self._renewals: set[asyncio.Task[None]] = set()
        self._closed = asyncio.Event()
        # Called with (name, leading) whenever this instance starts or stops leading a job.
        self.changed: list[Callable[[str, bool], None]] = []

    def leads(self, name: str) -> Lead | None:
        """Return the lead of ``name`` if this instance holds it."""
        lead = self._leads.get(name)
        return lead if lead is not None and not lead.lost.is_set() else None

    async def lead(self, name: str) -> Lead:
        """Wait until this instance holds lease ``name``; return the lead."""
        if self._closed.is_set():
            await asyncio.Future()  # closing: never lead again (the caller is being cancelled)
        while True:
            epoch = await self.keeper.take(name)
            if epoch is not None:
                break
            await asyncio.sleep(RENEW)  # a lock frees with no event to wait for
        lead = Lead(name, epoch)
        self._leads[name] = lead
        if self._shared:
            task = asyncio.create_task(self._renew(lead), name=f"lease-{name}")
            self._renewals.add(task)
            task.add_done_callback(self._renewals.discard)
            log.info("leading %s (epoch %d)", name, epoch)
        self._tell(name, True)
        return lead

    async def still(self, lead: Lead) -> bool:
        """Whether ``lead`` still holds its lease, asked of the database right before a
        leader-only act (renewing it): False once another instance took the lease over, even
        if this one was cut off and has not noticed (the epoch fences it out)."""
        if lead.lost.is_set():
            return False
        if not self._shared:
            return True
        if await self.keeper.keep(lead.name, lead.epoch):
            return True
        log.warning("lease %s (epoch %d) was taken over: not acting on it", lead.name, lead.epoch)
        return False

    async def give_up(self, lead: Lead) -> None:
        """Stop leading ``lead``'s job and let another instance take it now."""
        if not lead.lost.is_set():
            lead.lost.set()
            self._tell(lead.name, False)
        await self.keeper.give_up(lead.name, lead.epoch)

    async def run(self, name: str, job: Callable[[Lead], Awaitable[T]]) -> T:
        """Run ``job`` while this instance leads ``name``: cancelled when the lead is lost and
        started again when it is regained; return what it returns (the lease is given up)."""
        while True:
            lead = await self.lead(name)
            task = asyncio.ensure_future(job(lead))
            lost = asyncio.create_task(lead.lost.wait())
            try:
                await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                lost.cancel()
                if not task.done():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                if task.done() or lead.lost.is_set():
                    await asyncio.shield(self.give_up(lead))
            if not task.cancelled():
                return task.result()
            log.warning("no longer leading %s (epoch %d): standing by", name, lead.epoch)

    async def close(self) -> None:
        """Give up every lease, for good."""
        self._closed.set()
        for task in list(self._renewals):
            task.cancel()
        await asyncio.gather(*self._renewals, return_exceptions=True)
        for lead in list(self._leads.values()):
            if not lead.lost.is_set():
                lead.lost.set()
                self._tell(lead.name, False)
        await self.keeper.close()

    async def _renew(self, lead: Lead) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LEASE_TTL  # when the lease runs out unless renewed
        while not lead.lost.is_set():
            await asyncio.sleep(RENEW)
            sent = loop.time()
            kept = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.05, deadline - sent)):
                    kept = await self.keeper.keep(lead.name, lead.epoch)
            if not kept:
                break
            deadline = sent + LEASE_TTL  # the server's clock started later: never after it
        if not lead.lost.is_set():
            log.warning("lost the lease of %s (epoch %d)", lead.name, lead.epoch)
            lead.lost.set()
            self._tell(lead.name, False)

    def _tell(self, name: str, leading: bool) -> None:
        for callback in self.changed:
            try:
                callback(name, leading)
            except Exception:
                log.exception("a leadership callback failed")


class Heartbeat:
    """Beats this run's row every ``BEAT`` seconds and, beside it, runs ``after`` (the look for
    lapsed runs' work) after each beat; a clean stop removes the row."""

    def __init__(self, instances: Instances, after: Callable[[], Awaitable[None]]) -> None:
        self._instances = instances
        self._after = after
        self._task: asyncio.Task[None] | None = None
        self._look: asyncio.Task[None] | None = None
        self._begun = 0  # looks started
        self.looks = 0  # looks finished
        self._finished = asyncio.Condition()
        self.wake = asyncio.Event()  # set to beat and look now (this instance began to lead)

    async def start(self) -> None:
        """Beat once now (so this run is live before it takes any work), then every ``BEAT``."""
        await self._instances.beat()
        self._task = asyncio.create_task(self._run(), name="heartbeat")

    async def looked(self) -> None:
        """Return once a look that began after this call has ended."""
        target = self._begun + 1
        self.wake.set()
        async with self._finished:
            await self._finished.wait_for(lambda: self.looks >= target)

    async def pause(self) -> None:
        """Stop beating (the row stays: this run lapses after ``LAPSE``)."""
        for task in (self._task, self._look):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._task = self._look = None

    async def stop(self) -> None:
        """Stop beating and remove this run's row."""
        await self.pause()
        with contextlib.suppress(Exception):  # not in time: the row lapses instead
            await asyncio.wait_for(self._instances.stop(), STOP_TIMEOUT)

    async def _run(self) -> None:
        beats = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), BEAT)
            self.wake.clear()
            try:
                await self._instances.beat()
                beats += 1
                if beats % 1000 == 0:
                    await self._instances.prune()
            except Exception as exc:
                log.warning("heartbeat failed (%s); trying again", exc)
                continue
            # Beside the beats: telling a lapsed run's many outcomes must not stop them.
            if self._look is None or self._look.done():
                self._begun += 1
                self._look = asyncio.create_task(self._take_over(), name="take-over")

    async def _take_over(self) -> None:
        try:
            await self._after()
        except Exception:
            log.exception("taking over the work of lapsed instances failed; trying again")
        finally:
            async with self._finished:
                self.looks += 1
                self._finished.notify_all()


async def bounded(what: str, step: Awaitable[None], seconds: float = STOP_TIMEOUT) -> None:
    """Await ``step`` for at most ``seconds``; say so and go on if it takes longer (a stop
    must end: systemd would kill the process, and a lease or row left lapses anyway)."""
    try:
        await asyncio.wait_for(step, seconds)
    except TimeoutError:
        log.error("stopping %s took over %.0f s; going on without it", what, seconds)


def intake(platform: str) -> str:
    """Return the lease name of a network's intake."""
    return f"intake:{platform}"


def solo(adapter: ChatAdapter) -> bool:
    """Whether ``adapter``'s intake must run on one instance only (under its lease)."""
    return isinstance(adapter, SingleConsumer) and adapter.single_consumer


async def join(
    db: Database,
    run: str,
    leadership: Leadership,
    outbox: Outbox,
    adapters: Sequence[ChatAdapter],
) -> Heartbeat:
    """Share ``db`` with other instances: beat, tell mail only on networks whose adapter runs
    here, and take lapsed runs' work over after each beat and on becoming a network's leader."""

    def networks() -> set[str]:
        return {
            a.platform for a in adapters if not solo(a) or leadership.leads(intake(a.platform))
        }

    async def after_beat() -> None:
        await leadership.keeper.listen(heartbeat.wake.set)  # another run's stop: look now
        await outbox.recover()

    outbox.networks = networks
    instances = Instances(db, run)
    pacer = SharedPacer(db, instances)
    for adapter in adapters:
        if isinstance(adapter, Paced):  # the bot account's send limits, not this process's
            adapter.limiter.pace_with(pacer)
    heartbeat = Heartbeat(instances, after_beat)
    leadership.changed.append(lambda _name, leading: heartbeat.wake.set() if leading else None)
    await leadership.keeper.listen(heartbeat.wake.set)
    await heartbeat.start()
    return heartbeat
