"""One person across networks: which chat accounts are joined, and joining or separating them.

A person's key is the key of its first chat account, so an account that was never joined is its
own person and its data (Gmail link, aliases, known recipients, mail) needs no rewrite. Outbox rows
keep the chat account and room they came from (``user_key``, ``room``) and name the person they
count for (``person``): histories and send limits are the person's.
"""

from __future__ import annotations

from typing import Any

from bot.store.engine import Database

Statement = tuple[str, tuple[Any, ...]]


class People:
    """The people table, and the moves of data that joining and separating make."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def person(self, user_key: str) -> str:
        """Return the person ``user_key`` belongs to (its own key unless joined)."""
        rows = await self._db.fetchall("SELECT person FROM people WHERE user_key = ?", (user_key,))
        return next((str(r[0]) for r in rows), user_key)

    async def members(self, person: str) -> list[str]:
        """Return the chat accounts of ``person``, the person's own first."""
        rows = await self._db.fetchall(
            "SELECT user_key FROM people WHERE person = ? ORDER BY user_key != person, user_key",
            (person,),
        )
        return [str(r[0]) for r in rows] or [person]

    async def join(self, person: str, other: str, drop: str | None = None) -> None:
        """Make the unjoined account ``other`` part of ``person``, in one transaction.

        ``drop`` names the Gmail link (by its holder's key) to forget when both have one; the
        caller revokes it. A link ``other`` keeps moves to ``person``, remembering who made it;
        ``person``'s aliases and settings win a clash of names."""
        statements: list[Statement] = []
        if drop is not None:
            statements.append(("DELETE FROM accounts WHERE user_key = ?", (drop,)))
        statements += [
            (
                "UPDATE accounts SET user_key = ?,"
                " made_by = CASE made_by WHEN '' THEN user_key ELSE made_by END"
                " WHERE user_key = ?",
                (person, other),
            ),
            *_move("aliases", "name, address", other, person),
            *_move("known_recipients", "address", other, person),
            *_move("user_settings", "name, value", other, person),
            ("UPDATE outbox SET person = ? WHERE person = ?", (person, other)),
            (
                "INSERT INTO people (user_key, person) VALUES (?, ?), (?, ?)"
                " ON CONFLICT (user_key) DO UPDATE SET person = excluded.person",
                (person, person, other, person),
            ),
        ]
        await self._transaction(statements)

    async def separate(self, person: str) -> list[str]:
        """Undo ``person``'s joins, in one transaction; return the accounts that were joined.

        Each account takes its own mail back and a copy of the address book, known recipients
        and settings; the Gmail link goes back to the account that made it."""
        members = await self.members(person)
        if len(members) < 2:
            return members
        statements: list[Statement] = []
        for member in members:
            if member == person:
                continue
            statements += [
                *_copy("aliases", "name, address", person, member),
                *_copy("known_recipients", "address", person, member),
                *_copy("user_settings", "name, value", person, member),
                ("UPDATE outbox SET person = ? WHERE user_key = ?", (member, member)),
                (
                    "UPDATE accounts SET user_key = ?, made_by = '' WHERE user_key = ?"
                    " AND made_by = ?",
                    (member, person, member),
                ),
            ]
        statements += [
            ("UPDATE accounts SET made_by = '' WHERE user_key = ?", (person,)),
            ("DELETE FROM people WHERE person = ?", (person,)),
        ]
        await self._transaction(statements)
        return members

    async def _transaction(self, statements: list[Statement]) -> None:
        await self._db.transaction(statements)


def _copy(table: str, columns: str, source: str, target: str) -> list[Statement]:
    return [
        (
            f"INSERT INTO {table} (user_key, {columns})"
            f" SELECT ?, {columns} FROM {table} WHERE user_key = ? ON CONFLICT DO NOTHING",
            (target, source),
        )
    ]


def _move(table: str, columns: str, source: str, target: str) -> list[Statement]:
    return [
        *_copy(table, columns, source, target),
        (f"DELETE FROM {table} WHERE user_key = ?", (source,)),
    ]
