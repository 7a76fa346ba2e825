"""The database: migrations, refusal of newer schemas, file modes, secrets at rest."""

from __future__ import annotations

import stat
from pathlib import Path

import aiosqlite
import pytest

from bot.errors import StoreError
from bot.store.db import open_database, schema_version
from bot.store.migrations import MIGRATIONS
from bot.store.vault import SecretBox, load_key


async def tables(db: aiosqlite.Connection) -> set[str]:
    async with db.execute("SELECT name FROM sqlite_master WHERE type = 'table'") as cur:
        return {row[0] for row in await cur.fetchall()}


async def test_fresh_database_reaches_latest_version_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "bot.db"
    db = await open_database(path)
    try:
        assert await schema_version(db) == len(MIGRATIONS)
        assert {"outbox", "kv", "accounts", "pending_logins"} <= await tables(db)
    finally:
        await db.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_older_database_upgrades_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    db = await open_database(path, MIGRATIONS[:1])
    await db.execute("INSERT INTO kv (key, value) VALUES ('telegram_offset', '42')")
    assert await schema_version(db) == 1
    assert "accounts" not in await tables(db)
    await db.close()

    db = await open_database(path)
    try:
        assert await schema_version(db) == len(MIGRATIONS)
        assert "accounts" in await tables(db)
        async with db.execute("SELECT value FROM kv WHERE key = 'telegram_offset'") as cur:
            assert await cur.fetchone() == ("42",)
    finally:
        await db.close()


async def test_newer_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    db = await open_database(path)
    await db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    await db.close()
    with pytest.raises(StoreError, match="written by a newer mailbridge"):
        await open_database(path)
    db = await aiosqlite.connect(path)
    try:
        assert await schema_version(db) == len(MIGRATIONS) + 1
    finally:
        await db.close()


async def test_failed_migration_leaves_the_version_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    broken = (*MIGRATIONS, ("CREATE TABLE extra (x)", "THIS IS NOT SQL"))
    with pytest.raises(aiosqlite.OperationalError):
        await open_database(path, broken)
    db = await open_database(path)
    try:
        assert await schema_version(db) == len(MIGRATIONS)
        assert "extra" not in await tables(db)
    finally:
        await db.close()


def test_key_file_is_created_0600_and_reused(tmp_path: Path) -> None:
    key_path = tmp_path / "bot.db.key"
    key = load_key(key_path, env={})
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert load_key(key_path, env={}) == key
    sealed = SecretBox(key).seal(b"1//refresh-token")
    assert b"refresh-token" not in sealed
    assert SecretBox(load_key(key_path, env={})).open(sealed) == b"1//refresh-token"


def test_key_from_environment_wins_and_wrong_key_is_a_clear_error(tmp_path: Path) -> None:
    env_key = SecretBox.__name__  # not a key: refused with a sentence, not a traceback
    with pytest.raises(StoreError, match="not a valid key"):
        SecretBox(load_key(tmp_path / "k", env={"MAILBRIDGE_DATA_KEY": env_key}))
    sealed = SecretBox(load_key(tmp_path / "a", env={})).seal(b"x")
    with pytest.raises(StoreError, match="cannot be decrypted"):
        SecretBox(load_key(tmp_path / "b", env={})).open(sealed)
