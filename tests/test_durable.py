"""The commits that decide "accepted" and "may be at Gmail" are on disk before anyone acts on them;
the rest are not synced. Read from the statements the bot's own connection ran and the syncs of
the database's log it made, in the order they happened, beside what the user and the outbox saw
at each sync."""

from __future__ import annotations

import logging
import re

import pytest

from tests.conftest import Bench

SYNCED = re.compile(r"database log synced \((.+)\): durable commits up to (\d+)")


class Journal(logging.Handler):
    """Statements, syncs and replies in the order they happened."""

    def __init__(self, bench: Bench) -> None:
        super().__init__(logging.DEBUG)
        self.bench = bench
        self.events: list[tuple[str, str]] = []
        self.ways: list[str] = []  # where each sync ran

    def statement(self, sql: str) -> None:
        self.events.append(("sql", sql))

    def emit(self, record: logging.LogRecord) -> None:
        if synced := SYNCED.match(record.getMessage()):
            # What had left at that moment: a mail the sync is for must not have.
            left = len(self.bench.eml_files()) + len(self.bench.chat.replies)
            self.events.append(("sync", str(left)))
            self.ways.append(synced[1])

    def index(self, kind: str, contains: str = "") -> int:
        return next(i for i, (k, text) in enumerate(self.events) if k == kind and contains in text)


@pytest.mark.parametrize("way", ["on the loop", "in a worker thread"])
async def test_the_accept_and_the_claim_are_synced_before_anyone_acts_on_them(
    bench: Bench, way: str
) -> None:
    # A quick disk is synced by the loop itself, a slow one by a worker thread while the loop
    # goes on (as if: whatever this disk's speed). Either way, in the same order.
    bench.core.db.inline_sync = 1.0 if way == "on the loop" else 0.0
    journal = Journal(bench)
    logger = logging.getLogger("bot.store.sqlite")
    logger.addHandler(journal)
    logger.setLevel(logging.DEBUG)
    bench.core.db.connection.set_trace_callback(journal.statement)
    try:
        await bench.core.handle(bench.chat.message("/mail bob@example.com Durable | x"))
        said = await bench.chat.wait_for(lambda s: "Mail #1" in s.text)
        assert "not sent (trial mode)" in said.text  # the mail went its whole way
        await bench.core.outbox.drain()
    finally:
        bench.core.db.connection.set_trace_callback(None)
        logger.removeHandler(journal)
        logger.setLevel(logging.NOTSET)
    events = journal.events
    accept = journal.index("sql", "INSERT INTO outbox")
    claim = journal.index("sql", "SET state = 'sending'")
    syncs = [i for i, (kind, _) in enumerate(events) if kind == "sync"]
    # Each durable commit is followed by a sync before the next step: the accept's before the
    # claim (and before any reply), the claim's before the mail was written out or told.
    assert len(syncs) == 2, events
    assert accept < syncs[0] < claim < syncs[1], events
    assert [events[i][1] for i in syncs] == ["0", "0"], events
    assert journal.ways == [way, way]
    # The other writes are not synced: the event's claim, the outcome, "told".
    assert journal.index("sql", "INSERT INTO seen_events") < accept
    assert journal.index("sql", "told = 1") > syncs[1]
    [(setting,)] = await bench.core.db.fetchall("PRAGMA synchronous")
    assert setting == 1  # NORMAL: a commit that needs no sync waits for none
