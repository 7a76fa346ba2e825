"""Copy a SQLite store, every table as it is, into an empty PostgreSQL database.

The tables are read from the SQLite file itself, so a migration added later needs nothing here.
The target is brought to the source's schema version by the normal migrations, then every row
goes over in one transaction: a failure leaves the target as the migrations left it. Values go
over unchanged (ids, times, sealed blobs: the same data key opens them afterwards); only their
Python types are made what PostgreSQL's column types take (asyncpg refuses an ``int`` for a
``DOUBLE PRECISION``). Tables are copied parents first, so any foreign key finds its row.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy.exc
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.errors import NotEmptyError, StoreError
from bot.store.db import migrate
from bot.store.migrations import MIGRATIONS
from bot.store.pg import PostgresDatabase, dollar, shown
from bot.store.sqlite import SqliteDatabase

BATCH = 500  # rows per executemany: one round trip each, a bounded amount of memory
COPY_LOCK = 0x6D61696C6D6F7665  # "mailmove": two copies into one database run one at a time
VERSION_TABLE = "schema_version"  # PostgreSQL's stand-in for SQLite's user_version
_TABLES = """SELECT table_name FROM information_schema.tables
    WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name"""
_COLUMNS = """SELECT table_name, column_name, data_type, is_identity
    FROM information_schema.columns WHERE table_schema = current_schema()"""


def quoted(name: str) -> str:
    """Return ``name`` as an SQL identifier (SQL:2016 5.2: double quotes, doubled inside)."""
    return '"' + name.replace('"', '""') + '"'


async def move(
    source: SqliteDatabase,
    target: PostgresDatabase,
    migrations: Sequence[Sequence[str]] = MIGRATIONS,
) -> list[tuple[str, int]]:
    """Copy every table of ``source`` into the empty ``target``; return the rows per table."""
    try:
        async with target.engine.connect() as conn:
            # Held from the check to the commit: a second copy into the same database is
            # refused at once instead of finding the first one's rows half-way.
            got = await conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({COPY_LOCK})")
            if not got.scalar_one():
                raise NotEmptyError(
                    f"another mailbridge migrate is copying into {shown(target.url)}: let it"
                    " finish; migrate copies into an empty database only"
                )
            try:
                await conn.commit()
                return await _move(source, target, conn, migrations)
            finally:
                with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError, OSError):
                    await conn.rollback()  # a lost connection took the lock with it
                    await conn.exec_driver_sql(f"SELECT pg_advisory_unlock({COPY_LOCK})")
    except sqlalchemy.exc.DBAPIError as exc:
        # Only the server's sentence: SQLAlchemy's text would add the statement's values.
        where = shown(target.url)
        raise StoreError(f"PostgreSQL at {where} refused the copy: {exc.orig}") from None
    except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        raise StoreError(
            f"cannot reach PostgreSQL at {shown(target.url)}: {exc}; check that the server"
            " runs and that the URL's host, port (or socket folder) and database are right"
        ) from None


async def _move(
    source: SqliteDatabase,
    target: PostgresDatabase,
    conn: AsyncConnection,
    migrations: Sequence[Sequence[str]],
) -> list[tuple[str, int]]:
    if found := await _counts(conn):
        _refuse_unless_empty(target.url, found)
    await conn.commit()
    await migrate(target, migrations)
    seeded = await _counts(conn)  # the migrations' tables, and any rows they seed
    await conn.commit()
    tables = await _tables(source)
    async with conn.begin():
        if (found := await _counts(conn)) != seeded:  # a bot started on it meanwhile
            _refuse_unless_empty(target.url, found)
        kinds = await _kinds(conn)
        copied = []
        for name in tables:
            if seeded.get(name):  # the source holds its own copy of what a migration seeds
                await conn.exec_driver_sql(f"DELETE FROM {quoted(name)}")
            copied.append((name, await _copy(source, conn, name, kinds)))
        await _follow_identities(conn, kinds)
    return copied


async def _counts(conn: AsyncConnection) -> dict[str, int | None]:
    """Return the rows of each table of the target (None for the schema version's)."""
    names = [str(r[0]) for r in (await conn.exec_driver_sql(_TABLES)).fetchall()]
    found: dict[str, int | None] = {}
    for name in names:
        if name == VERSION_TABLE:
            found[name] = None
        else:
            result = await conn.exec_driver_sql(f"SELECT count(*) FROM {quoted(name)}")
            found[name] = int(result.scalar_one())
    return found


def _refuse_unless_empty(url: str, counts: dict[str, int | None]) -> None:
    """Raise NotEmptyError, naming what the target holds."""
    where = shown(url)
    if VERSION_TABLE not in counts:
        raise NotEmptyError(
            f"the PostgreSQL database {where} holds tables of another program"
            f" ({', '.join(sorted(counts)[:5])}): migrate copies into an empty database only;"
            " create one for mailbridge (createdb) and give its URL to --to"
        )
    filled = [f"{name}: {n} rows" for name, n in sorted(counts.items()) if n]
    if filled:
        raise NotEmptyError(
            f"the PostgreSQL database {where} is not empty ({', '.join(filled[:5])}):"
            " migrate copies into an empty database only, never over a deployment's state;"
            " create an empty one (createdb) and give its URL to --to"
        )


async def _tables(source: SqliteDatabase) -> list[str]:
    """Return the source's tables, each after the tables its foreign keys point to."""
    listed = await source.fetchall(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        " ORDER BY name"
    )
    names = [str(r[0]) for r in listed]
    parents: dict[str, set[str]] = {}
    for name in names:
        keys = await source.fetchall(f"PRAGMA foreign_key_list({quoted(name)})")
        parents[name] = {str(k[2]) for k in keys} - {name}  # column 2: the parent table
    ordered: list[str] = []

    def place(name: str, path: tuple[str, ...]) -> None:
        if name in ordered or name not in parents:
            return
        if name in path:
            raise StoreError(f"the foreign keys of {', '.join(path)} go round in a circle")
        for parent in sorted(parents[name]):
            place(parent, (*path, name))
        ordered.append(name)

    for name in names:
        place(name, ())
    return ordered


async def _kinds(conn: AsyncConnection) -> dict[str, dict[str, tuple[str, bool]]]:
    """Return each target table's columns: their data type and whether it is an identity."""
    kinds: dict[str, dict[str, tuple[str, bool]]] = {}
    for row in (await conn.exec_driver_sql(_COLUMNS)).fetchall():
        table, column, data_type, identity = (str(v) for v in row)
        kinds.setdefault(table, {})[column] = (data_type, identity == "YES")
    return kinds


async def _copy(
    source: SqliteDatabase,
    conn: AsyncConnection,
    table: str,
    kinds: dict[str, dict[str, tuple[str, bool]]],
) -> int:
    """Copy one table in batches; return how many rows went over."""
    if table not in kinds:
        raise StoreError(f"the SQLite table {table} has no counterpart in PostgreSQL")
    info = await source.fetchall(f"PRAGMA table_info({quoted(table)})")
    columns = [str(r[1]) for r in info]  # column 1: the name
    missing = [c for c in columns if c not in kinds[table]]
    if missing:
        raise StoreError(f"PostgreSQL's table {table} lacks the columns {', '.join(missing)}")
    convert = [_converter(kinds[table][c][0]) for c in columns]
    names = ", ".join(quoted(c) for c in columns)
    insert = dollar(
        f"INSERT INTO {quoted(table)} ({names}) VALUES ({', '.join('?' for _ in columns)})"
    )
    count = 0
    # Read in batches on the loop's own connection (the bot is stopped: nothing waits on it).
    cursor = source.connection.execute(f"SELECT {names} FROM {quoted(table)} ORDER BY rowid")
    try:
        while batch := cursor.fetchmany(BATCH):
            try:
                rows = [tuple(f(v) for f, v in zip(convert, row, strict=True)) for row in batch]
            except (TypeError, ValueError) as exc:
                raise StoreError(f"a row of {table} cannot go to PostgreSQL: {exc}") from None
            await conn.exec_driver_sql(insert, rows)
            count += len(rows)
    finally:
        cursor.close()
    copied = (await conn.exec_driver_sql(f"SELECT count(*) FROM {quoted(table)}")).scalar_one()
    if copied != count:  # a trigger or rule of the target's own dropped or added rows
        raise StoreError(f"{table}: {count} rows read, but PostgreSQL holds {copied}")
    return count


def _converter(data_type: str) -> Callable[[Any], Any]:
    """Return what makes a SQLite value (any storage class) one asyncpg takes for the type."""

    def real(v: Any) -> Any:
        return float(v) if isinstance(v, int) else v

    def integer(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        return v

    def text(v: Any) -> Any:
        return str(v) if isinstance(v, int | float) else v

    def blob(v: Any) -> Any:
        return v.encode() if isinstance(v, str) else v

    table = {"double precision": real, "bigint": integer, "text": text, "bytea": blob}
    return table.get(data_type, lambda v: v)


async def _follow_identities(
    conn: AsyncConnection, kinds: dict[str, dict[str, tuple[str, bool]]]
) -> None:
    """Set each identity column's sequence after its highest copied value (the next row of the
    outbox gets the next number, never one a copied mail has)."""
    for table, columns in sorted(kinds.items()):
        for column, (_, identity) in sorted(columns.items()):
            if identity:
                await conn.exec_driver_sql(
                    "SELECT setval(pg_get_serial_sequence($1, $2),"
                    f" coalesce((SELECT max({quoted(column)}) FROM {quoted(table)}), 0) + 1,"
                    " false)",
                    (quoted(table), column),
                )
