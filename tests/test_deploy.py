"""The systemd unit: systemd accepts it, and its own security analysis rates it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import runtime

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "mailbridge.service"
ANALYZE = shutil.which("systemd-analyze")
HARDENING = [
    "DynamicUser=yes",
    "StateDirectory=mailbridge",
    "ProtectSystem=strict",
    "NoNewPrivileges=yes",
    "PrivateTmp=yes",
    "CapabilityBoundingSet=\n",
    "Restart=on-failure",
    "EnvironmentFile=/etc/mailbridge/mailbridge.env",
    "LoadCredential=client_secret.json:/etc/mailbridge/client_secret.json",
]


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    """The unit as installed, with ExecStart pointing at the runtime venv's mailbridge
    (tests/runtime.py; systemd checks that the program exists)."""
    if ANALYZE is None:
        pytest.fail("systemd-analyze is missing: run tests/setup.sh (Debian package systemd)")
    path = tmp_path / "mailbridge.service"
    program = runtime.mailbridge()
    path.write_text(UNIT.read_text().replace("/opt/mailbridge/bin/mailbridge", program))
    return path


def test_the_unit_is_hardened_as_promised() -> None:
    text = UNIT.read_text()
    for line in HARDENING:
        assert f"\n{line}" in text, line
    assert "ExecStart=/opt/mailbridge/bin/mailbridge run --config /etc/mailbridge/config.toml" in (
        text
    )


def test_systemd_analyze_verify_accepts_the_unit(unit: Path) -> None:
    assert ANALYZE
    done = subprocess.run(
        [ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr  # not even a warning


def test_systemd_analyze_security_rates_it_as_readme_says(unit: Path) -> None:
    assert ANALYZE
    done = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(
        r"Overall exposure level for mailbridge\.service: (\d+\.\d) (\w+)", done.stdout
    )
    assert found, done.stdout + done.stderr
    score, verdict = float(found.group(1)), found.group(2)
    print(f"\nsystemd-analyze security: {score} {verdict}")
    assert score <= 2.0, done.stdout  # systemd calls 0-2 "OK" (10 is "UNSAFE")
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"exposure level **{score} {verdict}**" in readme, "README shows another score"
