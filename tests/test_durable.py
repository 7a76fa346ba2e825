"""The commits that decide "accepted" and "may be at Gmail" are synced to disk (FULL); the rest
stay NORMAL. Read from the statements the bot's own connection ran, in the order it ran them."""

from __future__ import annotations

import re

from tests.conftest import Bench

SETTING = re.compile(r"PRAGMA synchronous = (\w+)")


def in_force(statements: list[str]) -> list[tuple[str, str]]:
    """Each write with the synchronous setting its commit ran under."""
    setting, writes = "NORMAL", []
    for sql in statements:
        switch = SETTING.match(sql)
        if switch:
            setting = switch.group(1)
        elif sql.split(None, 1)[0].upper() in {"INSERT", "UPDATE", "DELETE"}:
            writes.append((sql, setting))
    return writes


async def test_the_accept_and_the_claim_commit_with_full_sync(bench: Bench) -> None:
    statements: list[str] = []
    await bench.core.db.connection.set_trace_callback(statements.append)
    await bench.core.handle(bench.chat.message("/mail bob@example.com Durable | x"))
    said = await bench.chat.wait_for(lambda s: "Mail #1" in s.text)
    assert "not sent (trial mode)" in said.text  # the mail went its whole way
    await bench.core.outbox.drain()
    await bench.core.db.connection.set_trace_callback(None)
    writes = in_force(statements)
    [accept] = [setting for sql, setting in writes if sql.startswith("INSERT INTO outbox")]
    [claim] = [setting for sql, setting in writes if "SET state = 'sending'" in sql]
    assert (accept, claim) == ("FULL", "FULL"), writes
    others = [sql for sql, setting in writes if setting == "NORMAL"]
    assert any("INSERT INTO seen_events" in sql for sql in others)  # the event claim
    assert any("told = 1" in sql for sql in others)  # the outcome told
    [(setting,)] = await bench.core.db.fetchall("PRAGMA synchronous")
    assert setting == 1  # NORMAL again
