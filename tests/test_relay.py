"""The relay of replies between instances (a Matrix standby's, to the leader), on both
engines: in order, each taken once, sealed at rest."""

from __future__ import annotations

from bot.chat import Button, Reply
from bot.relay import StoreRelay
from bot.store.engine import Database
from bot.store.relayed import RelayedRows
from bot.store.vault import SecretBox
from tests.test_store import box, db, target  # noqa: F401  (fixtures: both engines)


async def test_replies_are_taken_once_in_order_and_sealed_at_rest(
    db: Database,  # noqa: F811
    box: SecretBox,  # noqa: F811
) -> None:
    rows = RelayedRows(db, box)
    matrix, telegram = StoreRelay(rows, "matrix"), StoreRelay(rows, "telegram")
    said = [
        Reply("Gmail connected as alice@gmail.com", reply_to="$e1"),
        Reply(
            "Preview of mail #3 “Quarterly numbers”",
            buttons=(Button("✅ Send", data="send 3"), Button("Help", url="https://x.test/")),
            no_preview=True,
        ),
        Reply("Who gets it?", ask=True),
    ]
    for reply in said:
        await matrix.put("!room:localhost", reply)
    await telegram.put("42", Reply("not Matrix's"))
    raw = b"".join(bytes(r[0]) for r in await db.fetchall("SELECT sealed FROM relayed"))
    assert b"Quarterly" not in raw
    assert b"alice@gmail.com" not in raw

    assert await matrix.take() == [("!room:localhost", r) for r in said]
    assert await matrix.take() == []  # taken once: another leader finds none of them
    assert await telegram.take() == [("42", Reply("not Matrix's"))]
