"""The store, on both engines: migrations, refusal of newer schemas, every store class's
statements, file modes and secrets at rest.

Each test that takes ``target`` runs twice: on a SQLite file, and on a fresh database of the
session's real PostgreSQL server (tests/postgres.py). The statements are the same text on both;
what differs is in bot/store/engine.py and bot/store/pg.py.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from bot.errors import StoreError
from bot.store.accounts import Accounts
from bot.store.aliases import Aliases
from bot.store.db import is_url, open_database, schema_version
from bot.store.drafts import Draft, Drafts
from bot.store.engine import Database
from bot.store.instances import Instances
from bot.store.leftovers import Leftovers
from bot.store.link_codes import LinkCodes
from bot.store.link_health import Health, LinkHealth
from bot.store.migrations import MIGRATIONS
from bot.store.outbox_rows import QUEUED, SENDING, SENT, NewRow, OutboxRows
from bot.store.pacing import SharedPacer
from bot.store.people import People
from bot.store.seen import Claims
from bot.store.settings import Settings
from bot.store.vault import SecretBox, load_key

ENGINES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=ENGINES)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where the database is: a SQLite file, or a fresh PostgreSQL database's URL."""
    if request.param == "sqlite":
        return tmp_path / "sub" / "bot.db"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def db(target: str | Path) -> AsyncIterator[Database]:
    database = await open_database(target)
    yield database
    await database.close()


@pytest.fixture
def box(tmp_path: Path) -> SecretBox:
    return SecretBox(load_key(tmp_path / "key", env={}))


async def tables(db: Database) -> set[str]:
    if db.dialect == "sqlite":
        rows = await db.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        rows = await db.fetchall(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
    return {str(row[0]) for row in rows}


async def set_version(db: Database, version: int) -> None:
    if db.dialect == "sqlite":
        await db.execute(f"PRAGMA user_version = {version}")
    else:
        await db.execute("UPDATE schema_version SET version = ?", (version,))


def new_row(event: str, person: str = "telegram:1", **kw: object) -> NewRow:
    values: dict[str, object] = {
        "event_key": event,
        "user_key": person,
        "room": "telegram:1",
        "is_direct": True,
        "recipients": {"to": ["Bob@Example.com"], "cc": [], "bcc": []},
        "subject": "Grüße",
        "sealed": b"\x00sealed\xff",
        **kw,
    }
    return NewRow(**values)  # type: ignore[arg-type]


# --- migrations ----------------------------------------------------------------------------


async def test_fresh_database_reaches_latest_version(target: str | Path) -> None:
    db = await open_database(target)
    try:
        assert await schema_version(db) == len(MIGRATIONS)
        assert {"outbox", "kv", "accounts", "pending_logins", "drafts"} <= await tables(db)
    finally:
        await db.close()
    if not is_url(target):
        assert stat.S_IMODE(os.stat(target).st_mode) == 0o600


async def test_older_database_upgrades_and_keeps_its_rows(target: str | Path) -> None:
    db = await open_database(target, MIGRATIONS[:1])
    await db.execute("INSERT INTO kv (key, value) VALUES ('telegram_offset', '42')")
    assert await schema_version(db) == 1
    assert "accounts" not in await tables(db)
    await db.close()

    db = await open_database(target)
    try:
        assert await schema_version(db) == len(MIGRATIONS)
        assert "accounts" in await tables(db)
        assert await db.fetchall("SELECT value FROM kv WHERE key = 'telegram_offset'") == [("42",)]
    finally:
        await db.close()


async def test_newer_database_is_refused_untouched(target: str | Path) -> None:
    db = await open_database(target)
    await set_version(db, len(MIGRATIONS) + 1)
    await db.close()
    with pytest.raises(StoreError, match="written by a newer mailbridge"):
        await open_database(target)
    db = await open_database(target, (*MIGRATIONS, ()))  # a mailbridge that knows it
    try:
        assert await schema_version(db) == len(MIGRATIONS) + 1
    finally:
        await db.close()


async def test_failed_migration_leaves_the_version_unchanged(target: str | Path) -> None:
    broken = (*MIGRATIONS, ("CREATE TABLE extra (x INTEGER)", "THIS IS NOT SQL"))
    with pytest.raises(Exception, match="syntax error"):
        await open_database(target, broken)
    db = await open_database(target)
    try:
        assert await schema_version(db) == len(MIGRATIONS)
        assert "extra" not in await tables(db)
    finally:
        await db.close()


async def test_instances_starting_at_once_migrate_once(target: str | Path) -> None:
    if not is_url(target):
        pytest.skip("SQLite has one process per database (bot/lock.py)")
    opened = await asyncio.gather(*(open_database(target) for _ in range(3)))
    try:
        for db in opened:
            assert await schema_version(db) == len(MIGRATIONS)
    finally:
        for db in opened:
            await db.close()


# --- the outbox ----------------------------------------------------------------------------


async def test_outbox_rows_move_through_their_states(db: Database) -> None:
    rows = OutboxRows(db)
    now = time.time()
    row = await rows.insert(new_row("telegram:e1", due_at=now + 5), (10, 100), now)
    assert row is not None
    assert row.state == QUEUED
    assert row.subject == "Grüße"
    assert row.to == ("Bob@Example.com",)
    assert row.is_direct
    assert await rows.insert(new_row("telegram:e1"), (10, 100), now) is None  # same event
    assert await rows.next_due(now) == pytest.approx(now + 5)
    assert [r.id for r in await rows.due(now + 10)] == [row.id]
    claimed = await rows.claim(row.id)
    assert claimed is not None
    assert claimed[0].state == SENDING
    assert claimed[1] == b"\x00sealed\xff"
    assert await rows.claim(row.id) is None  # claimed once only
    await rows.decide(row.id, SENT, "gmail-id")
    done = await rows.get(row.id)
    assert done is not None
    assert (done.state, done.detail) == (SENT, "gmail-id")
    assert await rows.last_sent("telegram:1") is not None
    [(kept, told)] = [(r.id, t) for r, t in await Leftovers(db, "next run").untold()]
    assert (kept, told) == (row.id, True)  # decided, being told
    await rows.told(row.id, 1)
    assert await Leftovers(db, "third run").untold() == []
    assert [r.id for r in await rows.history("telegram:1")] == [row.id]
    assert (await rows.latest("telegram:1", SENT)) == done


async def test_the_send_limits_hold_for_one_person(db: Database) -> None:
    rows = OutboxRows(db)
    now = time.time()
    accepted = [await rows.insert(new_row(f"e{n}"), (3, 5), now) for n in range(5)]
    assert sum(r is not None for r in accepted) == 3  # per minute
    assert await rows.counts_since("telegram:1", now - 60, now - 86_400) == [3, 3]
    assert await rows.insert(new_row("other", person="telegram:2"), (3, 5), now) is not None


async def test_a_burst_of_accepts_at_once_never_passes_the_limit(db: Database) -> None:
    rows = OutboxRows(db)
    now = time.time()
    accepted = await asyncio.gather(
        *(rows.insert(new_row(f"burst{n}"), (4, 100), now) for n in range(20))
    )
    assert sum(r is not None for r in accepted) == 4


async def test_cancel_release_requeue_and_known_recipients(db: Database) -> None:
    rows = OutboxRows(db)
    now = time.time()
    held = await rows.insert(new_row("h", held=True), (10, 100), now)
    assert held is not None
    assert held.state == "held"
    assert await rows.release(held.id, now)
    assert not await rows.release(held.id, now)
    assert await rows.cancel(held.id)
    assert not await rows.requeue(held.id)
    row = await rows.insert(new_row("k"), (10, 100), now)
    assert row is not None
    assert await rows.unknown_recipients("telegram:1", ["bob@example.com"]) == ["bob@example.com"]
    await rows.remember_recipients(row)
    await rows.remember_recipients(row)  # again: no error, no second row
    assert await rows.unknown_recipients("telegram:1", ["BOB@example.com", "x@y.z"]) == ["x@y.z"]


# --- chat events, accounts, people ---------------------------------------------------------


async def test_an_event_is_claimed_once_and_taken_over_from_an_ended_run(db: Database) -> None:
    first, second = Claims(db), Claims(db)
    assert await first.claim("telegram:7")
    assert not await first.claim("telegram:7")
    assert await second.claim("telegram:7")  # the first run ended without finishing it
    await second.done("telegram:7")
    assert not await first.claim("telegram:7")
    assert await first.claim("telegram:8")
    await first.release("telegram:8")
    assert await first.claim("telegram:8")


async def test_accounts_logins_and_direct_rooms(db: Database, box: SecretBox) -> None:
    accounts = Accounts(db, box)
    await accounts.save("telegram:1", "a@gmail.com", "1//token", ("openid", "gmail.send"))
    account = await accounts.get("telegram:1")
    assert account is not None
    assert account.refresh_token == "1//token"
    assert account.scopes == ("openid", "gmail.send")
    assert await accounts.replace_refresh_token(account, "1//rotated")
    assert (await accounts.get("telegram:1")).refresh_token == "1//rotated"  # type: ignore[union-attr]
    [(sealed,)] = await db.fetchall("SELECT refresh_token FROM accounts")
    assert b"rotated" not in bytes(sealed)
    login = await accounts.new_login("telegram:1", "Ann", "telegram:1", "verifier")
    assert (await accounts.find_login(login.state)) == login
    assert await accounts.consume_login(login.state)
    assert not await accounts.consume_login(login.state)  # single use
    await accounts.remember_direct_room("telegram:1", "room-a")
    await accounts.remember_direct_room("telegram:1", "room-b")
    assert await accounts.direct_room("telegram:1") == "room-b"
    assert await accounts.delete("telegram:1")
    assert not await accounts.delete("telegram:1")


async def test_people_join_and_separate_with_their_data(db: Database, box: SecretBox) -> None:
    people, aliases, settings = People(db), Aliases(db), Settings(db)
    await aliases.add("telegram:1", "bob", "bob@example.com")
    await aliases.add("matrix:@a:hs", "bob", "other@example.com")
    await aliases.add("matrix:@a:hs", "carol", "carol@example.com")
    await settings.put("matrix:@a:hs", "timezone", "Europe/Berlin")
    await Accounts(db, box).save("matrix:@a:hs", "a@gmail.com", "1//t", ("openid",))
    await people.join("telegram:1", "matrix:@a:hs")
    assert await people.person("matrix:@a:hs") == "telegram:1"
    assert await people.members("telegram:1") == ["telegram:1", "matrix:@a:hs"]
    assert await aliases.all("telegram:1") == {
        "bob": "bob@example.com",  # the person's own wins the clash
        "carol": "carol@example.com",
    }
    assert await settings.get("telegram:1", "timezone") == "Europe/Berlin"
    held = await Accounts(db, box).get("telegram:1")
    assert held is not None
    assert held.maker == "matrix:@a:hs"
    assert sorted(await people.separate("telegram:1")) == ["matrix:@a:hs", "telegram:1"]
    assert await people.person("matrix:@a:hs") == "matrix:@a:hs"
    assert await Accounts(db, box).get("matrix:@a:hs") is not None  # the link went back


async def test_settings_aliases_drafts_codes_and_link_health(db: Database, box: SecretBox) -> None:
    settings = Settings(db)
    await settings.put("p", "signature", "-- Ann")
    await settings.put("p", "signature", "-- A.")
    assert await settings.all("p") == {"signature": "-- A."}
    await settings.put("p", "signature", None)
    assert await settings.get("p", "signature") is None
    aliases = Aliases(db)
    await aliases.add("p", "bob", "bob@example.com")
    assert await aliases.delete("p", "bob")
    assert not await aliases.delete("p", "bob")

    drafts = Drafts(db, box)
    draft = Draft(user_key="p", room="r", step="subject", to="bob@example.com")
    await drafts.put(draft)
    got = await drafts.get("p")
    assert got is not None
    assert got.to == "bob@example.com"
    assert got.step == "subject"
    assert await drafts.drop("p")
    assert not await drafts.drop("p")

    codes = LinkCodes(db, ttl=600)
    code = await codes.new("telegram:1", "Ann")
    assert await codes.claim("WRONG123", "matrix:@a:hs", "A") is None
    claimed = await codes.claim(code, "matrix:@a:hs", "A")
    assert claimed is not None
    assert claimed.user_key == "telegram:1"
    assert await codes.finish(claimed)
    assert not await codes.finish(claimed)

    health = LinkHealth(db)
    await Accounts(db, box).save("p", "p@gmail.com", "1//t", ("openid",))
    assert await health.links() == ["p"]
    await health.ended("p", "telegram:1", "p@gmail.com", time.time())
    assert [e.user_key for e in await health.untold()] == ["p"]
    await health.told("p")
    assert await health.untold() == []


async def test_link_health_upserts_keep_or_reset_the_warning(db: Database) -> None:
    health = LinkHealth(db)
    await health.confirmed("p", 100.0, 101.0, 900.0)
    await health.mark_warned("p", 100.0)
    await health.confirmed("p", 100.0, 102.0, None)  # the same link confirmed again
    assert await health.get("p", 100.0) == Health(100.0, 102.0, 900.0, True)
    await health.mark_warned("p", 50.0)  # an older link's warning changes nothing
    await health.confirmed("p", 200.0, 201.0, None)  # a new link: a new warning is due
    assert await health.get("p", 200.0) == Health(200.0, 201.0, None, False)


# --- the data key --------------------------------------------------------------------------


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


def test_values_sealed_before_still_open_and_a_changed_value_is_refused(tmp_path: Path) -> None:
    key = load_key(tmp_path / "key", env={})
    box = SecretBox(key)
    before = Fernet(key).encrypt(b"1//sealed-by-an-earlier-version")  # how values were sealed
    assert box.open(before) == b"1//sealed-by-an-earlier-version"
    sealed = box.seal(b"1//refresh-token")
    assert sealed != box.seal(b"1//refresh-token")  # a fresh nonce each time
    assert box.open(sealed) == b"1//refresh-token"
    for changed in (sealed[:-1] + bytes([sealed[-1] ^ 1]), b"\x02" + sealed[1:], sealed[:20]):
        with pytest.raises(StoreError, match="cannot be decrypted"):
            box.open(changed)


async def test_send_slots_are_shared_by_instances(db: Database) -> None:
    # Two instances of one bot account asking at once for a chat's slots: one gap apart,
    # whoever asks; another chat is free at once.
    a = SharedPacer(db, Instances(db, "run-a"))
    b = SharedPacer(db, Instances(db, "run-b"))
    now = time.time()
    slots = await asyncio.gather(*(p.slot("telegram:1", 1.0) for p in (a, b, a, b)))
    assert sorted(slots)[0] == pytest.approx(now, abs=0.5)
    gaps = [later - earlier for earlier, later in itertools.pairwise(sorted(slots))]
    assert gaps == pytest.approx([1.0, 1.0, 1.0], abs=0.01)
    assert await b.slot("telegram:2", 1.0) == pytest.approx(time.time(), abs=0.5)
    await Instances(db, "run-a").beat()
    await Instances(db, "run-b").beat()
    a._counted = 0.0  # count again at the next slot
    await a.slot("telegram:3", 1.0)
    assert a.share() == 2


NAIVE_CLAIM = "UPDATE outbox SET state = 'sending' WHERE id = ? RETURNING id"


async def claim_race(target: str | Path, naive: bool) -> tuple[int, int]:
    """Four instances, each on its own connection, send every due mail they see; return how
    many mails there were and how many claims succeeded in all."""
    opened = [await open_database(target) for _ in range(4)]
    try:
        rows = OutboxRows(opened[0])
        now = time.time()
        for n in range(120):
            await rows.insert(new_row(f"race{n}", person=f"p{n % 40}"), (10, 100), now)

        async def instance(db: Database) -> int:
            mine = OutboxRows(db)
            claimed = 0
            for row in await mine.due(now + 1):  # what this instance saw due
                if naive:
                    claimed += len(await db.fetchall(NAIVE_CLAIM, (row.id,)))
                else:
                    claimed += await mine.claim(row.id) is not None
                await asyncio.sleep(0)  # the others run between two claims
            return claimed

        return 120, sum(await asyncio.gather(*(instance(db) for db in opened)))
    finally:
        for db in opened:
            await db.close()


async def test_the_claim_sends_each_mail_once_where_the_naive_one_sends_twice(
    target: str | Path,
) -> None:
    # Every instance sees the same due mails. The outbox's claim moves a row only from
    # 'queued' (re-checked by the UPDATE itself: on PostgreSQL, in READ COMMITTED, a writer
    # that waited for another's row lock re-reads the row before its WHERE, docs 13.2.1), so
    # each mail is claimed once; the naive claim, without that guard, claims it again.
    mails, claims = await claim_race(target, naive=False)
    assert claims == mails
    db = await open_database(target)
    await db.execute("DELETE FROM outbox")
    await db.close()
    mails, naive = await claim_race(target, naive=True)
    print(f"claims of {mails} due mails by 4 instances: {claims} chosen, {naive} naive")
    assert naive > mails  # sent twice (or more)
