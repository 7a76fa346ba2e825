"""One identity across networks, at the store: joining, separating, two Gmail links, codes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.errors import BotError
from bot.store.accounts import Accounts
from bot.store.aliases import Aliases
from bot.store.db import open_database
from bot.store.link_codes import TRIES, LinkCodes
from bot.store.outbox_rows import NewRow, OutboxRows
from bot.store.people import People
from bot.store.settings import Settings
from bot.store.vault import SecretBox, load_key

TG, MX = "telegram:1001", "matrix:@bob:example.org"
EMPTY = {"to": ["x@example.com"], "cc": [], "bcc": []}


@dataclass
class Store:
    accounts: Accounts
    aliases: Aliases
    rows: OutboxRows
    people: People
    codes: LinkCodes
    now: list[float]
    settings: Settings


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    db = await open_database(tmp_path / "bot.db")
    box = SecretBox(load_key(tmp_path / "key", env={}))
    now = [1_000_000.0]
    try:
        yield Store(
            Accounts(db, box),
            Aliases(db),
            OutboxRows(db),
            People(db),
            LinkCodes(db, 600, clock=lambda: now[0]),
            now,
            Settings(db),
        )
    finally:
        await db.close()


async def mail(s: Store, user: str, event: str, person: str = "") -> bool:
    new = NewRow(event, user, f"room-{user}", True, EMPTY, "Hi", b"sealed", person=person)
    return await s.rows.insert(new, (2, 100), s.now[0]) is not None


async def test_joining_shares_link_aliases_history_and_limits(store: Store) -> None:
    await store.accounts.save(TG, "alice@gmail.com", "1//tg", ("gmail.send",))
    await store.aliases.add(MX, "bob", "bob@example.com")
    await store.settings.put(MX, "timezone", "Europe/Berlin")
    assert await mail(store, MX, "mx:1")
    await store.people.join(TG, MX)
    person = await store.people.person(MX)
    assert person == TG
    assert await store.people.members(TG) == [TG, MX]
    assert (
        await store.accounts.get(person) or pytest.fail("no link")
    ).address == "alice@gmail.com"
    assert await store.aliases.all(person) == {"bob": "bob@example.com"}
    assert await store.aliases.all(MX) == {}  # moved, not copied
    assert await store.settings.get(person, "timezone") == "Europe/Berlin"
    # The Matrix mail of before the join is in the shared history, and counts in the limit.
    assert await mail(store, TG, "tg:1", person)
    assert not await mail(store, MX, "mx:2", person)  # 2 a minute, for both together
    history = await store.rows.history(person)
    assert [(r.user_key, r.room) for r in history] == [(TG, f"room-{TG}"), (MX, f"room-{MX}")]


async def test_unlink_gives_each_its_mail_and_the_link_to_its_maker(store: Store) -> None:
    await store.people.join(TG, MX)
    # Matrix connects Gmail while joined: the link is the person's, made by Matrix.
    await store.accounts.save(TG, "bob@gmail.com", "1//mx", ("gmail.send",), made_by=MX)
    await store.aliases.add(TG, "carol", "carol@example.com")
    await store.settings.put(TG, "timezone", "Europe/Berlin")
    assert await mail(store, MX, "mx:1", TG)
    assert await mail(store, TG, "tg:1", TG)
    assert await store.people.separate(TG) == [TG, MX]
    assert await store.people.person(MX) == MX
    assert await store.accounts.get(TG) is None
    assert (await store.accounts.get(MX) or pytest.fail("no link")).address == "bob@gmail.com"
    assert (
        await store.aliases.all(MX)
        == await store.aliases.all(TG)
        == {"carol": "carol@example.com"}
    )
    assert await store.settings.get(MX, "timezone") == "Europe/Berlin"  # a copy each
    assert [r.event_key for r in await store.rows.history(MX)] == ["mx:1"]
    assert [r.event_key for r in await store.rows.history(TG)] == ["tg:1"]


async def test_two_links_keep_the_chosen_one_and_drop_the_other(store: Store) -> None:
    await store.accounts.save(TG, "alice@gmail.com", "1//tg", ("gmail.send",))
    await store.accounts.save(MX, "bob@gmail.com", "1//mx", ("gmail.send",))
    await store.people.join(TG, MX, drop=TG)  # keep Matrix's
    kept = await store.accounts.get(TG) or pytest.fail("no link")
    assert (kept.address, kept.refresh_token, kept.maker) == ("bob@gmail.com", "1//mx", MX)
    assert await store.accounts.get(MX) is None
    await store.people.separate(TG)
    assert (await store.accounts.get(MX) or pytest.fail("no link")).address == "bob@gmail.com"
    assert await store.accounts.get(TG) is None


async def test_a_code_works_once_expires_and_resists_guessing(store: Store) -> None:
    code = await store.codes.new(TG, "Alice")
    assert len(code) == 8
    claimed = await store.codes.claim(code.lower()[:4] + "-" + code[4:], MX, "Bob")
    assert claimed is not None
    assert claimed.user_key == TG
    assert await store.codes.claim(code, "matrix:@eve:example.org", "Eve") is None  # used
    late = await store.codes.new(TG, "Alice")
    store.now[0] += 601
    assert await store.codes.claim(late, MX, "Bob") is None  # expired
    fresh = await store.codes.new(TG, "Alice")
    for n in range(TRIES - 1):
        assert await store.codes.claim(f"WRONG{n:03d}", MX, "Bob") is None
    with pytest.raises(BotError, match="Too many wrong codes"):
        await store.codes.claim(fresh, MX, "Bob")  # even the right one, until the window ends
    store.now[0] += 601
    assert await store.codes.claim(fresh, MX, "Bob") is None  # it has expired meanwhile
