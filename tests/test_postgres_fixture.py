"""The PostgreSQL fixture: real databases over SQLAlchemy and asyncpg, and nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.postgres import PostgresError, PostgresServer, find_bindir

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[1]


async def test_a_test_database_takes_sql_through_the_async_engine(pg_url: str) -> None:
    engine = create_async_engine(pg_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE notes (id integer PRIMARY KEY, body text)"))
            await conn.execute(
                text("INSERT INTO notes VALUES (:id, :body)"),
                [{"id": 1, "body": "Lunch on Friday?"}, {"id": 2, "body": "Yes!"}],
            )
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT id, body FROM notes ORDER BY id"))).all()
            # inet_server_addr() is NULL on a Unix-socket session: nothing listens on TCP.
            where = (
                await conn.execute(
                    text("SELECT current_database(), inet_server_addr(), current_setting('fsync')")
                )
            ).one()
    finally:
        await engine.dispose()
    assert [tuple(r) for r in rows] == [(1, "Lunch on Friday?"), (2, "Yes!")]
    assert tuple(where) == (make_url(pg_url).database, None, "off")


async def test_two_databases_do_not_see_each_others_tables(postgres: PostgresServer) -> None:
    first, second = postgres.create_database(), postgres.create_database()
    engines = [create_async_engine(postgres.url(n)) for n in (first, second)]
    try:
        async with engines[0].begin() as conn:
            await conn.execute(text("CREATE TABLE outbox (id integer PRIMARY KEY)"))
            await conn.execute(text("INSERT INTO outbox VALUES (1)"))
        async with engines[1].connect() as conn:
            found = (await conn.execute(text("SELECT to_regclass('outbox')"))).scalar()
        async with engines[0].connect() as conn:
            kept = (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar()
    finally:
        for engine in engines:
            await engine.dispose()
        postgres.drop_database(first)
        postgres.drop_database(second)
    assert (found, kept) == (None, 1)


INNER_TEST = """
import json, os

def test_records_its_server_then_fails(postgres):
    pid = postgres.pid()
    os.kill(pid, 0)  # the server runs while the session does
    record = {"pid": pid, "root": str(postgres.root), "timings": postgres.timings}
    with open(os.environ["PG_RECORD"], "w") as f:
        json.dump(record, f)
    raise AssertionError("this test fails on purpose")
"""


def _server_processes(root: str) -> list[int]:
    """Return live processes whose command line names ``root`` (zombies wait for init only)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if root in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


def test_a_failed_session_leaves_no_server_and_no_folder(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(INNER_TEST)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    record = tmp_path / "record.json"
    env = {
        **os.environ,
        "PG_RECORD": str(record),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    pytest_args = ["-q", "-p", "tests.postgres", "-p", "no:cacheprovider", "-c", "pytest.ini"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *pytest_args, "test_inner.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr  # 1: a test failed, nothing else
    assert "this test fails on purpose" in done.stdout
    seen = json.loads(record.read_text())
    # pg_ctl stop -m fast waits for the server to exit; allow the reaper a moment.
    deadline = time.monotonic() + 10
    while _server_processes(seen["root"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _server_processes(seen["root"]) == []
    assert not Path(seen["root"]).exists()
    assert {"initdb", "start"} <= set(seen["timings"])


def test_without_postgresql_the_error_says_to_run_setup(tmp_path: Path) -> None:
    with pytest.raises(PostgresError, match=r"not installed .* run tests/setup\.sh"):
        find_bindir(tmp_path)
