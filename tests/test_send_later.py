"""Send later (/mail at:…, /timezone) and /signature, through the core, on a clock the test
turns: a scheduled mail is a queued row with its due time, sent once at that time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from bot.app import App
from tests.chatkit import ChatKit, Said
from tests.conftest import Bench, make_config


class Clock:
    """A wall clock that moves only when the test says."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def bench(tmp_path: Path, clock: Clock, **mail: Any) -> AsyncIterator[Bench]:
    cfg = make_config(tmp_path, mail={"confirm": "never", "undo_seconds": 0, **mail})
    chat = ChatKit()
    async with App.open(cfg, [chat], serve_web=False, env={}, clock=clock) as app:
        yield Bench(app.core, chat, cfg.mail.outbox_dir)


def sent(said: Said) -> bool:
    return "not sent (trial mode)" in said.text


def parsed(path: Path) -> EmailMessage:
    msg = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


async def test_a_scheduled_mail_goes_once_at_its_time_across_a_restart(tmp_path: Path) -> None:
    clock = Clock(datetime(2027, 6, 1, 10, 0, tzinfo=UTC).timestamp())
    start = clock.now
    async for b in bench(tmp_path, clock):
        await b.core.handle(b.chat.message("/mail at:+2m bob@example.com Later | x"))
        notice = b.chat.replies[-1]
        assert notice.text.startswith("🕒 Mail #1 to bob@example.com, “Later” goes out Tue 1 Jun")
        assert "10:02 UTC" in notice.text
        assert "/cancel 1" in notice.text
        assert "counts toward your send limit now" in notice.text
        row = await b.core.outbox.rows.get(1)
        assert row is not None
        assert (row.state, row.due_at) == ("queued", start + 120)
        await b.core.handle(b.chat.message("/history"))
        assert "🕒 #1 scheduled for Tue 1 Jun 2027, 10:02 UTC" in b.chat.replies[-1].text
        clock.now = start + 60
        await b.core.outbox.scheduler.looked()
        await b.core.outbox.drain()
        assert b.eml_files() == []
    # A restart a minute before its time: the mail must neither go at once nor be lost.
    async for b in bench(tmp_path, clock):
        await b.core.outbox.scheduler.looked()
        await b.core.outbox.drain()
        assert b.eml_files() == []
        assert not any(sent(s) for s in b.chat.replies)
        clock.now = start + 119
        await b.core.outbox.scheduler.looked()  # handed over: its delivery waits out 1 s
        said = await b.chat.wait_for(sent)
        assert clock.now >= start + 119
        assert said.room == "dm-1001"
        assert "#1" in said.text
        await b.core.outbox.drain()
        assert len(b.eml_files()) == 1
        assert (await b.core.outbox.rows.get(1)).state == "sent"  # type: ignore[union-attr]
    clock.now = start + 3600
    async for b in bench(tmp_path, clock):  # and never again
        await b.core.outbox.scheduler.looked()
        await b.core.outbox.drain()
        assert len(b.eml_files()) == 1


async def test_cancel_before_its_time_sends_nothing(tmp_path: Path) -> None:
    clock = Clock(datetime(2027, 6, 1, 10, 0, tzinfo=UTC).timestamp())
    async for b in bench(tmp_path, clock):
        await b.core.handle(b.chat.message("/mail at:10:02 bob@example.com Later | x"))
        assert b.chat.replies[-1].text.startswith("🕒 Mail #1")
        await b.core.handle(b.chat.message("/cancel 1"))
        assert b.chat.replies[-1].text == "🗑 Cancelled mail #1; nothing was sent."
        clock.now += 600
        await b.core.outbox.scheduler.looked()
        await b.core.outbox.drain()
        assert b.eml_files() == []
        await b.core.handle(b.chat.message("/history"))
        assert "🗑 #1" in b.chat.replies[-1].text


async def test_berlin_across_the_march_change(tmp_path: Path) -> None:
    # Saturday 27 March 2027, 12:00 UTC = 13:00 CET; the clocks go forward that night.
    clock = Clock(datetime(2027, 3, 27, 12, 0, tzinfo=UTC).timestamp())
    async for b in bench(tmp_path, clock):
        await b.core.handle(b.chat.message("/timezone"))
        assert b.chat.replies[-1].text.startswith("Your time zone is UTC.")
        await b.core.handle(b.chat.message("/timezone Mars/Olympus"))
        assert "I don't know the time zone Mars/Olympus" in b.chat.replies[-1].text
        await b.core.handle(b.chat.message("/timezone Europe/Berlin"))
        assert b.chat.replies[-1].text.startswith("Your time zone is now Europe/Berlin")
        await b.core.handle(b.chat.message("/mail at:tomorrow-9:00 bob@example.com Sun | x"))
        assert "goes out Sun 28 Mar 2027, 09:00 CEST (UTC+02:00)" in b.chat.replies[-1].text
        row = await b.core.outbox.rows.get(1)
        assert row is not None
        assert row.due_at == datetime(2027, 3, 28, 7, 0, tzinfo=UTC).timestamp()
        await b.core.handle(b.chat.message("/mail at:14:00 bob@example.com Sat | x"))
        assert "goes out Sat 27 Mar 2027, 14:00 CET (UTC+01:00)" in b.chat.replies[-1].text
        row = await b.core.outbox.rows.get(2)
        assert row is not None
        assert row.due_at == datetime(2027, 3, 27, 13, 0, tzinfo=UTC).timestamp()
        await b.core.handle(b.chat.message("/mail at:tomorrow-2:30 bob@example.com Gap | x"))
        assert "02:30 does not exist on 2027-03-28" in b.chat.replies[-1].text
        assert await b.core.outbox.rows.get(3) is None  # refused: nothing accepted
        clock.now = datetime(2027, 3, 28, 7, 0, tzinfo=UTC).timestamp()
        await b.core.outbox.scheduler.looked()
        await b.chat.wait_for(lambda s: sent(s) and "“Sun”" in s.text)
        await b.core.outbox.drain()
        assert len(b.eml_files()) == 2


async def test_minimal_group_hears_no_recipient_of_a_scheduled_mail(tmp_path: Path) -> None:
    clock = Clock(datetime(2027, 6, 1, 10, 0, tzinfo=UTC).timestamp())
    async for b in bench(tmp_path, clock, group_confirmation="minimal"):
        await b.core.handle(b.chat.message("/help"))  # the direct chat is known from now on
        group = {"room": "group-1", "direct": False}
        await b.core.handle(b.chat.message("/mail at:+5m bob@example.com Secret | x", **group))
        in_group = [s.text for s in b.chat.replies if s.room == "group-1"]
        assert in_group == [
            "🕒 Alice's mail #1 goes out Tue 1 Jun 2027, 10:05 UTC (UTC+00:00)"
            " (/cancel 1 drops it)."
        ]
        direct = [s.text for s in b.chat.replies if s.room == "dm-1001"]
        assert "bob@example.com" in direct[-1]
        clock.now += 300
        await b.core.outbox.scheduler.looked()
        await b.chat.wait_for(lambda s: s.room == "dm-1001" and sent(s))
        await b.core.outbox.drain()
        for said in b.chat.replies:
            if said.room == "group-1":
                assert "bob" not in said.text
                assert "Secret" not in said.text


async def test_a_signature_ends_both_parts_once_and_off_removes_it(tmp_path: Path) -> None:
    clock = Clock(datetime(2027, 6, 1, 10, 0, tzinfo=UTC).timestamp())
    async for b in bench(tmp_path, clock, markdown=True):
        await b.core.handle(b.chat.message("/signature"))
        assert b.chat.replies[-1].text.startswith("You have no signature.")
        await b.core.handle(b.chat.message("/signature Alice Example\nPhone <123>"))
        assert b.chat.replies[-1].text.startswith("Signature saved.")
        await b.core.handle(b.chat.message("/signature"))
        assert b.chat.replies[-1].text.endswith("-- \nAlice Example\nPhone <123>")
        await b.core.handle(b.chat.message("/mail bob@example.com Hi | Hello *there*"))
        await b.chat.wait_for(sent)
        msg = parsed(b.eml_files()[0])
        plain = msg.get_body(("plain",))
        html = msg.get_body(("html",))
        assert plain is not None
        assert html is not None
        assert (
            plain.get_content() == "Hello *there*\r\n\r\n-- \r\nAlice Example\r\nPhone <123>\r\n"
        )
        raw = b.eml_files()[0].read_bytes()
        assert raw.count(b"\r\n-- \r\n") == 1  # RFC 3676 section 4.3, in the plain part
        page = html.get_content()
        assert page.count("-- <br>") == 1
        assert page.index("<em>there</em>") < page.index("-- <br>")
        assert "Alice Example<br>\r\nPhone &lt;123&gt;</p>" in page
        await b.core.handle(b.chat.message("/signature off"))
        assert b.chat.replies[-1].text.startswith("Signature removed")
        start = len(b.chat.replies)
        await b.core.handle(b.chat.message("/mail bob@example.com Again | Plain"))
        await b.chat.wait_for(sent, start=start)
        second = parsed(b.eml_files()[1])
        assert second.get_body(("plain",)).get_content() == "Plain\r\n"  # type: ignore[union-attr]
        assert "-- " not in second.get_body(("html",)).get_content()  # type: ignore[union-attr]


async def test_one_person_has_one_time_zone_and_signature(tmp_path: Path) -> None:
    clock = Clock(datetime(2027, 6, 1, 10, 0, tzinfo=UTC).timestamp())
    async for b in bench(tmp_path, clock):
        await b.core.handle(b.chat.message("/signature Bob", user="1002", name="Bob"))
        await b.core.handle(b.chat.message("/timezone Asia/Tokyo", user="1002", name="Bob"))
        await b.core.handle(b.chat.message("/timezone Europe/Berlin"))
        await b.core.ctx.people.join("telegram:1001", "telegram:1002")
        # The person's own setting wins a clash; the joined account's others come along.
        await b.core.handle(b.chat.message("/timezone", user="1002", name="Bob"))
        assert b.chat.replies[-1].text.startswith("Your time zone is Europe/Berlin.")
        await b.core.handle(b.chat.message("/signature"))
        assert b.chat.replies[-1].text.endswith("-- \nBob")
        await b.core.handle(b.chat.message("/signature off", user="1002", name="Bob"))
        await b.core.handle(b.chat.message("/signature"))
        assert b.chat.replies[-1].text.startswith("You have no signature.")
        await b.core.ctx.people.separate("telegram:1001")
        await b.core.handle(b.chat.message("/timezone", user="1002", name="Bob"))
        assert b.chat.replies[-1].text.startswith("Your time zone is Europe/Berlin.")  # a copy


async def test_a_preview_keeps_the_time_and_waiting_mail_holds_no_task(tmp_path: Path) -> None:
    clock = Clock(datetime(2027, 6, 1, 10, 0, tzinfo=UTC).timestamp())
    async for b in bench(tmp_path, clock, confirm="always", undo_seconds=10):
        await b.core.handle(b.chat.message("/mail at:+3d bob@example.com Later | x"))
        assert "\nGoes out Fri 4 Jun 2027, 10:00 UTC" in b.chat.replies[-1].text
        await b.core.handle(b.chat.message("/send 1"))
        assert "goes out Fri 4 Jun 2027, 10:00 UTC" in b.chat.replies[-1].text
        row = await b.core.outbox.rows.get(1)
        assert row is not None
        assert (row.state, row.due_at) == ("queued", clock.now + 3 * 86_400)
        # Counted with the scheduler asleep, as below (its sleep is a task of its own).
        await b.core.outbox.scheduler.looked()
        tasks = len(asyncio.all_tasks())
        for n in range(2, 10):
            await b.core.handle(b.chat.message(f"/mail at:+{n}d bob@example.com M{n} | x"))
            await b.core.handle(b.chat.message(f"/send {n}"))
        await b.core.outbox.scheduler.looked()
        assert len(asyncio.all_tasks()) <= tasks  # 9 mails wait, in the database only
        clock.now += 3 * 86_400
        await b.core.outbox.scheduler.looked()
        for subject in ("Later", "M2", "M3"):  # the three then due
            await b.chat.wait_for(lambda s, subject=subject: sent(s) and f"“{subject}”" in s.text)
        await b.core.outbox.drain()
        assert len(b.eml_files()) == 3
        assert (await b.core.outbox.rows.get(4)).state == "queued"  # type: ignore[union-attr]
