"""Moving a SQLite store into PostgreSQL (bot/store/move.py): every table with its values, the
outbox's numbering after the copy, foreign keys, and refusal of a database that is not empty."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.errors import NotEmptyError, StoreError
from bot.store.accounts import Accounts
from bot.store.aliases import Aliases
from bot.store.db import open_database
from bot.store.drafts import Draft, Drafts
from bot.store.engine import Database
from bot.store.migrations import MIGRATIONS
from bot.store.move import COPY_LOCK, move
from bot.store.outbox_rows import OutboxRows
from bot.store.pg import PostgresDatabase
from bot.store.settings import Settings
from bot.store.sqlite import SqliteDatabase
from bot.store.vault import SecretBox, load_key
from tests.postgres import PostgresServer
from tests.test_store import new_row

pytestmark = pytest.mark.postgres


@pytest.fixture
def box(tmp_path: Path) -> SecretBox:
    return SecretBox(load_key(tmp_path / "key", env={}))


@pytest.fixture
async def source(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    db = await open_database(tmp_path / "bot.db")
    assert isinstance(db, SqliteDatabase)
    yield db
    await db.close()


@pytest.fixture
async def target(pg_url: str) -> AsyncIterator[PostgresDatabase]:
    db = PostgresDatabase.connect(pg_url)
    yield db
    await db.close()


async def everything(db: Database, table: str) -> list[tuple[Any, ...]]:
    """Every row of ``table``, in one order on both engines, with bytes as bytes."""
    rows = await db.fetchall(f"SELECT * FROM {table}")
    found = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]
    return sorted(found, key=repr)


async def test_every_table_moves_as_it_is_and_the_outbox_numbers_on(
    source: SqliteDatabase, target: PostgresDatabase, box: SecretBox
) -> None:
    now = time.time()
    accounts = Accounts(source, box)
    await accounts.save("telegram:1", "ann@gmail.com", "1//ann-token", ("openid", "gmail.send"))
    login = await accounts.new_login("telegram:2", "Bo", "telegram:2", "verifier-bo")
    await Aliases(source).add("telegram:1", "bob", "bob@example.com")
    await Settings(source).put("telegram:1", "timezone", "Europe/Berlin")
    await Drafts(source, box).put(Draft(user_key="telegram:1", room="r", step="body", to="x@y.z"))
    rows = OutboxRows(source)
    for n in range(3):
        await rows.insert(new_row(f"telegram:e{n}", due_at=now + 60), (10, 100), now)
    await source.execute("DELETE FROM outbox WHERE event_key = 'telegram:e0'")  # a gap: id 1
    names = [
        str(r[0])
        for r in await source.fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    before = {name: await everything(source, name) for name in names}

    copied = dict(await move(source, target))

    assert copied == {name: len(rows) for name, rows in before.items()}
    assert copied["outbox"] == 2
    assert copied["accounts"] == 1
    assert await target.schema_version() == len(MIGRATIONS)
    for name, rows_before in before.items():
        assert await everything(target, name) == rows_before, name
    # The same key opens what was sealed; the next mail is numbered after the highest copied.
    account = await Accounts(target, box).get("telegram:1")
    assert account is not None
    assert account.refresh_token == "1//ann-token"
    assert await Accounts(target, box).find_login(login.state) == login
    assert await Aliases(target).all("telegram:1") == {"bob": "bob@example.com"}
    after = await OutboxRows(target).insert(new_row("telegram:e9"), (10, 100), now)
    assert after is not None
    assert after.id == 4


async def test_a_database_that_is_not_empty_is_refused_untouched(
    source: SqliteDatabase, target: PostgresDatabase, postgres: PostgresServer
) -> None:
    await Aliases(source).add("telegram:1", "bob", "bob@example.com")
    await move(source, target)
    with pytest.raises(NotEmptyError, match=r"is not empty \(aliases: 1 rows\)"):
        await move(source, target)
    assert await everything(target, "aliases") == [("telegram:1", "bob", "bob@example.com")]

    name = postgres.create_database()  # another program's database
    postgres.sql("CREATE TABLE invoices (n integer)", name)
    other = PostgresDatabase.connect(postgres.url(name))
    try:
        with pytest.raises(NotEmptyError, match=r"holds tables of another program \(invoices\)"):
            await move(source, other)
        assert postgres.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", name)
        assert (
            postgres.sql(
                "SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname = 'public'",
                name,
            ).strip()
            == "invoices"
        )
    finally:
        await other.close()
        postgres.drop_database(name)


async def test_tables_go_parents_first_and_a_refused_row_leaves_none(
    tmp_path: Path, target: PostgresDatabase
) -> None:
    # A later migration with a foreign key whose child sorts before its parent.
    extra = (
        "CREATE TABLE zz_parent (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
        "CREATE TABLE aa_child (parent INTEGER NOT NULL REFERENCES zz_parent (id), n REAL)",
    )
    migrations = (*MIGRATIONS, extra)
    source = await open_database(tmp_path / "fk.db", migrations)
    assert isinstance(source, SqliteDatabase)
    try:
        await source.execute("INSERT INTO zz_parent (id, name) VALUES (7, 'p')")
        await source.execute("INSERT INTO aa_child (parent, n) VALUES (7, 2)")  # 2: an int
        copied = await move(source, target, migrations)
        order = [name for name, _ in copied]
        assert order.index("zz_parent") < order.index("aa_child")
        assert await target.fetchall("SELECT parent, n FROM aa_child") == [(7, 2.0)]
        # A child whose parent is gone (SQLite checks foreign keys only when asked to):
        # PostgreSQL refuses it, the whole copy is undone, and the error shows no values.
        await target.execute("DELETE FROM aa_child")
        await target.execute("DELETE FROM zz_parent")
        await source.execute("PRAGMA foreign_keys = OFF")
        await source.execute("INSERT INTO aa_child (parent, n) VALUES (8, 1.5)")
        with pytest.raises(StoreError, match="refused the copy") as caught:
            await move(source, target, migrations)
        assert 'table "aa_child" violates foreign key constraint' in str(caught.value)
        assert "(8)" not in str(caught.value)  # the server's DETAIL names the value
        assert await target.fetchall("SELECT count(*) FROM zz_parent") == [(0,)]
    finally:
        await source.close()


async def test_a_second_copy_at_the_same_time_is_refused(
    source: SqliteDatabase, target: PostgresDatabase, pg_url: str
) -> None:
    other = PostgresDatabase.connect(pg_url)
    try:
        async with other.engine.connect() as conn:  # a migrate under way holds this lock
            await conn.exec_driver_sql(f"SELECT pg_advisory_lock({COPY_LOCK})")
            with pytest.raises(NotEmptyError, match="another mailbridge migrate is copying"):
                await move(source, target)
            await conn.exec_driver_sql(f"SELECT pg_advisory_unlock({COPY_LOCK})")
    finally:
        await other.close()
    assert await target.schema_version() == 0  # it touched nothing
    await move(source, target)  # once the other one is done
    assert await target.schema_version() == len(MIGRATIONS)


async def test_an_unreachable_server_is_one_sentence_without_the_password(
    source: SqliteDatabase, tmp_path: Path
) -> None:
    target = PostgresDatabase.connect(f"postgresql://ann:pw-123@/db?host={tmp_path / 'none'}")
    try:
        with pytest.raises(StoreError, match=r"cannot reach PostgreSQL at .*ann:\*\*\*@") as e:
            await move(source, target)
    finally:
        await target.close()
    assert "pw-123" not in str(e.value)
    assert "check that the server runs" in str(e.value)
