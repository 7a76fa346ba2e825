"""The runtime venv: mailbridge installed as a user installs it, for every test that starts it.

``tests/setup.sh`` builds ``.venv-run`` with a plain, non-editable ``pip install .`` (no extras),
so a process started from it has only the declared dependencies: what the test extra happens to
bring in cannot hide a missing one. The venv records a hash of the sources it was built from;
tests refuse a venv that is missing or older than the sources (they would test stale code).

Standard library only: ``tests/setup.sh`` runs this file with the system's python3, as
``python3 tests/runtime.py state|stamp`` (``stamp`` prints what the venv must record).
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-run"
STAMP = VENV / "mailbridge-source.txt"
PACKAGES = ("bot", "adapters")
FIX = "run `bash tests/setup.sh` (or `bash tests/setup.sh --runtime` for this venv alone)"


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def sources() -> list[Path]:
    """Return the files an install is built from, in a stable order."""
    found = [ROOT / "pyproject.toml"]
    for package in PACKAGES:
        found += sorted(
            p
            for p in (ROOT / package).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        )
    return found


def stamp_text() -> str:
    """Return what the venv must record: the dependencies' hash, then the sources' hash."""
    return f"deps {_digest([ROOT / 'pyproject.toml'])}\nsource {_digest(sources())}\n"


def state() -> str:
    """Return ``fresh``, ``missing``, ``deps`` (pyproject changed) or ``source`` (code changed)."""
    if not (VENV / "bin" / "mailbridge").exists() or not STAMP.exists():
        return "missing"
    recorded, wanted = STAMP.read_text().splitlines(), stamp_text().splitlines()
    if recorded[:1] != wanted[:1]:
        return "deps"
    return "fresh" if recorded == wanted else "source"


@functools.cache
def _checked() -> None:
    why = {
        "missing": f"the runtime venv {VENV} is missing",
        "deps": f"the runtime venv {VENV} was built from another pyproject.toml",
        "source": f"the runtime venv {VENV} holds older code than {ROOT}",
    }.get(state())
    if why:
        raise AssertionError(f"{why}: {FIX}")


def mailbridge() -> str:
    """Return the runtime venv's ``mailbridge`` script; fail if the venv is missing or stale."""
    _checked()
    return str(VENV / "bin" / "mailbridge")


def python() -> str:
    """Return the runtime venv's python; fail if the venv is missing or stale."""
    _checked()
    return str(VENV / "bin" / "python")


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Return the environment for a runtime process: ours without PYTHONPATH, which would put
    the source tree (or the test venv's packages) before what was installed."""
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return {**base, **(extra or {})}


if __name__ == "__main__":
    if sys.argv[1:] == ["state"]:
        print(state())
    elif sys.argv[1:] == ["stamp"]:
        print(stamp_text(), end="")
    else:
        sys.exit("usage: python3 tests/runtime.py state|stamp")
