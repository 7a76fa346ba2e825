"""Preview and confirm, the undo window, markdown, aliases, history: through the core."""

from __future__ import annotations

import asyncio
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from tests.chatkit import Said
from tests.conftest import make_config, start_bench


def outcome(said: Said) -> bool:
    return "Mail #" in said.text and (
        "not sent (trial mode)" in said.text or "Not sent" in said.text
    )


def sent(said: Said) -> bool:
    return "not sent (trial mode)" in said.text


def mail_config(tmp_path: Path, **mail: Any) -> Any:
    return make_config(tmp_path, mail={"confirm": "never", "undo_seconds": 0, **mail})


async def run(tmp_path: Path, **mail: Any):  # type: ignore[no-untyped-def]
    async for bench in start_bench(mail_config(tmp_path, **mail)):
        yield bench


def parsed(path: Path) -> EmailMessage:
    msg = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


async def test_new_recipient_gets_a_preview_and_only_send_sends(tmp_path: Path) -> None:
    async for b in run(tmp_path, confirm="new_recipients"):
        await b.core.handle(b.chat.message("/mail bob@example.com Lunch? | Free on Friday?"))
        preview = b.chat.replies[-1]
        assert preview.text.startswith("📝 Preview of mail #1")
        assert "To: bob@example.com" in preview.text
        assert "Subject: Lunch?" in preview.text
        assert "Free on Friday?" in preview.text
        assert [(x.label, x.data) for x in preview.reply.buttons] == [
            ("Send", "/send 1"),
            ("Cancel", "/cancel 1"),
        ]
        await b.core.outbox.drain()  # a delivery under way would end here, writing the mail
        assert b.eml_files() == []  # nothing before Send
        await b.core.handle(b.chat.message("/send 1"))  # what the Send button sends
        await b.chat.wait_for(sent)
        assert len(b.eml_files()) == 1
        # Bob is known now: the next mail to him goes without a preview.
        start = len(b.chat.replies)
        await b.core.handle(b.chat.message("/mail BOB@example.com Again | x"))
        said = await b.chat.wait_for(sent, start=start)
        assert "“Again”" in said.text
        assert len(b.eml_files()) == 2
        assert not any("Preview" in r.text for r in b.chat.replies[start:])


async def test_cancel_sends_nothing(tmp_path: Path) -> None:
    async for b in run(tmp_path, confirm="always"):
        await b.core.handle(b.chat.message("/mail bob@example.com Oops | wrong"))
        await b.core.handle(b.chat.message("/cancel"))
        assert b.chat.replies[-1].text == "🗑 Cancelled mail #1; nothing was sent."
        await b.core.handle(b.chat.message("/send 1"))
        assert b.chat.replies[-1].text == "Mail #1 is cancelled; there is nothing to confirm."
        await b.core.outbox.drain()
        assert b.eml_files() == []


async def test_only_the_author_can_confirm_in_a_group(tmp_path: Path) -> None:
    async for b in run(tmp_path, confirm="always"):
        await b.core.handle(
            b.chat.message("/mail bob@example.com Plan | x", direct=False, room="-100")
        )
        await b.core.handle(
            b.chat.message("/send 1", user="2002", name="Mallory", room="-100", direct=False)
        )
        assert b.chat.replies[-1].text == (
            "Mail #1 is not yours: only the one who wrote it can send it."
        )
        await b.core.handle(b.chat.message("/cancel 1", user="2002", room="-100", direct=False))
        await b.core.outbox.drain()
        assert b.eml_files() == []
        await b.core.handle(b.chat.message("/send 1", room="-100", direct=False))
        said = await b.chat.wait_for(sent)
        assert said.room == "-100"


async def test_an_old_preview_expires(tmp_path: Path) -> None:
    async for b in run(tmp_path, confirm="always"):
        await b.core.handle(b.chat.message("/mail bob@example.com Old | x"))
        await b.core.db.execute("UPDATE outbox SET created_at = ?", (time.time() - 601,))
        await b.core.handle(b.chat.message("/send"))
        assert "expired after 10 minutes, so nothing was sent" in b.chat.replies[-1].text
        await b.core.outbox.drain()
        assert b.eml_files() == []


async def test_undo_within_the_window_sends_nothing(tmp_path: Path) -> None:
    async for b in run(tmp_path, undo_seconds=2):
        await b.core.handle(b.chat.message("/mail bob@example.com Hasty | x"))
        notice = b.chat.replies[-1]
        assert "goes out in 2 s" in notice.text
        assert [x.data for x in notice.reply.buttons] == ["/undo 1"]
        await b.core.handle(b.chat.message("/undo"))
        assert b.chat.replies[-1].text == "↩️ Undone: mail #1 was not sent."
        await b.core.outbox.drain()
        assert b.eml_files() == []


async def test_after_the_window_the_mail_is_sent_and_undo_is_too_late(tmp_path: Path) -> None:
    async for b in run(tmp_path, undo_seconds=1):
        t0 = time.monotonic()
        await b.core.handle(b.chat.message("/mail bob@example.com Sure | x"))
        await b.chat.wait_for(sent)
        assert time.monotonic() - t0 >= 0.9
        await b.core.handle(b.chat.message("/undo 1"))
        assert b.chat.replies[-1].text == "Too late: mail #1 has already gone out (sent)."
        assert len(b.eml_files()) == 1


async def test_a_restart_inside_the_window_still_sends_once_at_its_time(tmp_path: Path) -> None:
    cfg = mail_config(tmp_path, undo_seconds=2)
    async for b in start_bench(cfg):
        await b.core.handle(b.chat.message("/mail bob@example.com Later | x"))
        due = (await b.core.outbox.rows.get(1)).due_at  # type: ignore[union-attr]
        for task in list(b.core.outbox._tasks):  # the process dies: its timers with it
            task.cancel()
        await asyncio.gather(*b.core.outbox._tasks, return_exceptions=True)
    assert not (tmp_path / "outbox").exists()
    async for b in start_bench(cfg):
        await b.chat.wait_for(sent)
        assert time.time() >= due - 0.05
        await b.core.outbox.drain()
        assert len(b.eml_files()) == 1


async def test_markdown_becomes_sanitised_html_beside_the_text(tmp_path: Path) -> None:
    body = "See [the plan](https://example.com/plan)\n\n- one\n- two\n\n<script>alert(1)</script>"
    async for b in run(tmp_path, markdown=True):
        await b.core.handle(b.chat.message(f"/mail bob@example.com Plan | {body}"))
        await b.chat.wait_for(sent)
        msg = parsed(b.eml_files()[0])
        assert msg.get_content_type() == "multipart/alternative"
        plain = msg.get_body(("plain",))
        html = msg.get_body(("html",))
        assert plain is not None
        assert html is not None
        assert "<script>alert(1)</script>" in plain.get_content()  # the text as typed
        text = html.get_content()
        assert '<a href="https://example.com/plan"' in text
        assert "<li>one</li>" in text
        assert "<li>two</li>" in text
        assert "<script" not in text


async def test_aliases_are_per_user(tmp_path: Path) -> None:
    async for b in run(tmp_path):
        await b.core.handle(b.chat.message("/alias add Bob bob@example.com"))
        assert b.chat.replies[-1].text.startswith("Alias bob = bob@example.com.")
        await b.core.handle(b.chat.message("/mail bob,cc:carol@example.com Hi | x"))
        await b.chat.wait_for(sent)
        msg = parsed(b.eml_files()[0])
        assert msg["To"] == "bob@example.com"
        await b.core.handle(b.chat.message("/alias list"))
        assert b.chat.replies[-1].text == "Your aliases:\nbob = bob@example.com"
        # Another user has no such alias and cannot see Alice's.
        await b.core.handle(b.chat.message("/alias list", user="2002"))
        assert b.chat.replies[-1].text.startswith("You have no aliases yet.")
        await b.core.handle(b.chat.message("/alias add x y@example.com", user="2002"))
        await b.core.handle(b.chat.message("/mail bob Hi | x", user="2002"))
        assert b.chat.replies[-1].text == (
            '"bob" is neither an address nor one of your aliases (/alias list).'
        )
        await b.core.handle(b.chat.message("/alias del bob"))
        await b.core.handle(b.chat.message("/alias del bob"))
        assert b.chat.replies[-1].text == "You have no alias bob."


async def test_history_lists_own_mail_with_states(tmp_path: Path) -> None:
    async for b in run(tmp_path, confirm="always"):
        await b.core.handle(b.chat.message("/mail bob@example.com One | x"))
        await b.core.handle(b.chat.message("/send 1"))
        await b.chat.wait_for(sent)
        await b.core.handle(b.chat.message("/mail bob@example.com Two | x"))
        await b.core.handle(b.chat.message("/cancel 2"))
        await b.core.handle(b.chat.message("/mail eve@example.com Secret | x", user="2002"))
        await b.core.handle(b.chat.message("/history"))
        lines = b.chat.replies[-1].text.splitlines()
        assert lines[0].startswith("Your last mails")
        assert lines[1].startswith("🗑 #2")
        assert "cancelled" in lines[1]
        assert "“Two”" in lines[1]
        assert lines[2].startswith("✅ #1")
        assert "sent" in lines[2]
        assert "“One”" in lines[2]
        assert len(lines) == 3  # Mallory's mail is not Alice's history
        await b.core.handle(b.chat.message("/history", user="2002"))
        assert "eve@example.com" in b.chat.replies[-1].text
        assert "bob@example.com" not in b.chat.replies[-1].text
        await b.core.handle(b.chat.message("/retry 3"))
        assert (
            b.chat.replies[-1].text
            == "Mail #3 is not yours: only the one who wrote it can retry it."
        )


async def test_minimal_group_confirmation_names_the_sender_only(tmp_path: Path) -> None:
    secrets = ["bob", "carol", "example", "secret", "plan", "pineapple", "buddy"]
    async for b in run(tmp_path, group_confirmation="minimal", confirm="new_recipients"):
        group = {"direct": False, "room": "-100"}
        # No direct chat known yet: the group hears only how to open one; nothing is recorded.
        await b.core.handle(b.chat.message("/mail bob@example.com Secret plan | x", **group))
        assert b.chat.replies[-1].text.startswith("Alice, mail details stay out of this group")
        assert await b.core.outbox.rows.get(1) is None
        await b.core.handle(b.chat.message("/help"))  # now there is one
        for text in [
            "/mail bob@example.com Secret plan | pineapple",
            "/send 1",
            "/mail bob@example.com Secret plan pineapple",
            "/mail bob@exa_mple.com Secret plan | pineapple",
            "/mail buddy Secret plan | pineapple",
            "/mail " + ",".join(f"carol{n}@example.com" for n in range(101)) + " Secret | x",
            "/alias add buddy bob@example.com",
            "/alias list",
            "/mail buddy Secret plan | pineapple",
            "/retry 2",
            "/history",
        ]:
            await b.core.handle(b.chat.message(text, **group))
            await b.core.outbox.drain()
        to_group = [s.text for s in b.chat.replies if s.room == "-100"]
        assert "✅ Alice sent a mail (#1)." in to_group
        assert "✅ Alice sent a mail (#2)." in to_group
        assert [(t, s) for t in to_group for s in secrets if s in t.lower()] == []
        to_alice = [s.text for s in b.chat.replies if s.room == "dm-1001"]
        assert any("To: bob@example.com" in t and "pineapple" in t for t in to_alice)
        assert any("Separate the subject from the body" in t for t in to_alice)
        assert any("at most 100 recipients" in t for t in to_alice)
        assert "Your aliases:\nbuddy = bob@example.com" in to_alice
