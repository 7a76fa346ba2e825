"""Claiming outbox rows from several workers at once: the naive claim sends twice, ours never.

Issue 15 lets several instances deliver from one PostgreSQL outbox. Eight workers, each on its own
connection, claim 2,000 queued rows one at a time, the way instances would. The naive claim picks
its row in a subquery; in READ COMMITTED a worker that waited on another's row lock re-checks only
the outer WHERE (PostgreSQL manual, 13.2.1 "Read Committed Isolation Level"), which still matches
the id, so it claims the row again. The chosen claim skips rows another worker holds
(``FOR UPDATE SKIP LOCKED``) and re-checks the state in the outer WHERE. SQLite serialises writers,
so there the same UPDATE with the state guard, without ``SKIP LOCKED``, is enough.
"""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

ROWS, WORKERS = 2_000, 8
NAIVE = (
    "UPDATE outbox SET state = 'sending' WHERE id ="
    " (SELECT id FROM outbox WHERE state = 'queued' ORDER BY id LIMIT 1) RETURNING id"
)
CHOSEN_PG = (
    "WITH c AS (SELECT id FROM outbox WHERE state = 'queued' ORDER BY id LIMIT 1"
    " FOR UPDATE SKIP LOCKED)"
    " UPDATE outbox o SET state = 'sending' FROM c WHERE o.id = c.id AND o.state = 'queued'"
    " RETURNING o.id"
)
CHOSEN_SQLITE = (
    "UPDATE outbox SET state = 'sending' WHERE id ="
    " (SELECT id FROM outbox WHERE state = 'queued' ORDER BY id LIMIT 1) AND state = 'queued'"
    " RETURNING id"
)


async def fill(engine: AsyncEngine) -> None:
    """Create the outbox anew with ROWS queued rows."""
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE IF EXISTS outbox"))
        await conn.execute(
            text("CREATE TABLE outbox (id integer PRIMARY KEY, state text NOT NULL)")
        )
        await conn.execute(
            text("INSERT INTO outbox (id, state) VALUES (:id, 'queued')"),
            [{"id": i} for i in range(1, ROWS + 1)],
        )


async def claim_all(engine: AsyncEngine, claim: str) -> tuple[list[int], float]:
    """Let WORKERS connections claim until the claim comes back empty; return ids and seconds."""
    start = asyncio.Event()

    async def worker() -> list[int]:
        got: list[int] = []
        async with engine.connect() as conn:
            await start.wait()  # every connection is open before the first claim
            while True:
                async with conn.begin():  # one claim, one transaction, as a sender would
                    claimed = (await conn.execute(text(claim))).scalar()
                if claimed is None:
                    return got
                got.append(claimed)

    tasks = [asyncio.create_task(worker()) for _ in range(WORKERS)]
    await asyncio.sleep(0.2)  # generous: the pool opens WORKERS connections
    t0 = time.perf_counter()
    start.set()
    results = await asyncio.gather(*tasks)
    return [i for got in results for i in got], time.perf_counter() - t0


def twice(ids: list[int]) -> int:
    """Return how many rows were claimed more than once."""
    return sum(1 for n in collections.Counter(ids).values() if n > 1)


def extra(ids: list[int]) -> int:
    """Return how many claims took a row that was already claimed."""
    return len(ids) - len(set(ids))


async def queued_left(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(text("SELECT count(*) FROM outbox WHERE state = 'queued'"))
            ).scalar_one()
        )


@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_on_postgresql_the_naive_claim_sends_twice_and_ours_never(pg_url: str) -> None:
    engine = create_async_engine(pg_url, pool_size=WORKERS, max_overflow=0)
    try:
        await fill(engine)
        naive, naive_s = await claim_all(engine, NAIVE)
        await fill(engine)
        chosen, chosen_s = await claim_all(engine, CHOSEN_PG)
        left = await queued_left(engine)
    finally:
        await engine.dispose()
    print(
        f"\nPostgreSQL, {WORKERS} workers, {ROWS} rows: naive claim {twice(naive)} rows claimed"
        f" more than once ({extra(naive)} extra claims) in {naive_s:.2f} s;"
        f" chosen claim {twice(chosen)} in {chosen_s:.2f} s"
    )
    assert twice(naive) > 0  # what a naive claim does to mail: some of it goes out twice
    assert sorted(chosen) == list(range(1, ROWS + 1))  # every mail claimed, each exactly once
    assert left == 0


@pytest.mark.timeout(120)
async def test_on_sqlite_the_guarded_claim_never_claims_a_row_twice(tmp_path: Path) -> None:
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}", pool_size=WORKERS, max_overflow=0
    )

    # The pragmas bot/store/db.py sets on every connection.
    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        for pragma in ("journal_mode = WAL", "synchronous = NORMAL", "busy_timeout = 5000"):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    try:
        await fill(engine)
        chosen, chosen_s = await claim_all(engine, CHOSEN_SQLITE)
        left = await queued_left(engine)
    finally:
        await engine.dispose()
    print(
        f"\nSQLite, {WORKERS} connections, {ROWS} rows: {twice(chosen)} twice in {chosen_s:.2f} s"
    )
    assert sorted(chosen) == list(range(1, ROWS + 1))
    assert left == 0
