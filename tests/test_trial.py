"""Trial mode, as a newcomer meets it: `mailbridge` in a terminal with no configuration."""

from __future__ import annotations

import subprocess
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests import runtime


def trial(stdin: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # The console script as a user installs it (tests/runtime.py), with none of our settings.
    env = {k: v for k, v in runtime.env().items() if not k.startswith("MAILBRIDGE_")}
    return subprocess.run(
        [runtime.mailbridge()],
        input=stdin,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def emls(cwd: Path) -> list[EmailMessage]:
    found = []
    for path in sorted((cwd / "outbox").glob("*.eml")):
        msg = message_from_bytes(path.read_bytes(), policy=policy.default)
        assert isinstance(msg, EmailMessage)
        found.append(msg)
    return found


def test_first_mail_in_trial_mode(tmp_path: Path) -> None:
    result = trial("/mail bob@example.com Hello | Hi Bob\n", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "trial mode" in result.stderr
    assert "./outbox" in result.stderr
    [msg] = emls(tmp_path)
    assert msg["To"] == "bob@example.com"
    assert msg["Subject"] == "Hello"
    assert msg.get_content().rstrip("\r\n") == "Hi Bob"
    assert "bob@example.com" in result.stdout
    assert "“Hello”" in result.stdout
    assert list(tmp_path.iterdir()) == [tmp_path / "outbox"]  # no database left behind


def test_cc_bcc_unicode_and_idn(tmp_path: Path) -> None:
    result = trial(
        "/mail bob@example.com,cc:carol@example.com,bcc:dan@example.com,user@bücher.example "
        "Grüße aus Köln | Schöne Grüße\n",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    [msg] = emls(tmp_path)
    assert msg["To"] == "bob@example.com, user@xn--bcher-kva.example"
    assert msg["Cc"] == "carol@example.com"
    assert msg["Bcc"] == "dan@example.com"
    assert msg["Subject"] == "Grüße aus Köln"
    assert msg.get_content().rstrip("\r\n") == "Schöne Grüße"


def test_backslash_continues_a_line_into_a_multi_line_body(tmp_path: Path) -> None:
    result = trial("/mail bob@example.com Notes | first line\\\nsecond line\n", tmp_path)
    assert result.returncode == 0, result.stderr
    [msg] = emls(tmp_path)
    assert msg.get_content().replace("\r\n", "\n").rstrip("\n") == "first line\nsecond line"


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("/mail bob@example.com Hello Hi Bob", "Separate the subject from the body with a |"),
        ("/mail bob@@example.com Hi | x", "the part before the @ may hold"),
        ("/mail bob@example.com Hello\\\nBcc: someone@example.com | body", "on one line"),
        ("/mail " + ",".join(f"u{i}@example.com" for i in range(101)) + " Hi | x", "at most 100"),
        ("/mail user@ Hi | x", "nothing after the @"),
        ("/mail jürgen@example.com Hi | x", "non-ASCII"),
    ],
)
def test_bad_input_gets_a_clear_error_and_writes_nothing(
    tmp_path: Path, line: str, says: str
) -> None:
    result = trial(line + "\n", tmp_path)
    assert result.returncode == 0, result.stderr
    assert says in result.stdout
    assert emls(tmp_path) == []


def test_end_of_input_finishes_pending_sends(tmp_path: Path) -> None:
    lines = "".join(f"/mail bob@example.com n{n} | x\n" for n in range(8))
    result = trial(lines, tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(emls(tmp_path)) == 8
    assert result.stdout.count("Mail #") == 8
