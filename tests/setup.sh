#!/usr/bin/env bash
# Install everything the test suite needs: a virtual environment in .venv with the project and its
# test extra (Synapse, Playwright, hypothesis, ruff, mypy, SQLAlchemy and asyncpg), and Chromium,
# PostgreSQL and systemd from Debian's packages, and the runtime venv .venv-run (below). Safe to
# run again; it only installs what is missing or out of date. `bash tests/setup.sh --runtime`
# builds .venv-run alone.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" != "--runtime" ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[test]'
  # Synapse imports much faster from compiled bytecode (PYTHONDONTWRITEBYTECODE may be set).
  .venv/bin/python -m compileall -q -j 0 .venv/lib >/dev/null 2>&1 || true

  # Debian's packages the suite needs, each only when it is missing, in one apt-get run: Chromium
  # for the browser tests; PostgreSQL for the `postgres` tier (tests/postgres.py runs its own
  # throwaway server from /usr/lib/postgresql/<version>/bin and never uses the cluster the package
  # may create); systemd-analyze to check the unit file in deploy/ (tests/test_deploy.py).
  missing=()
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
  if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -q
    $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
fi

# The runtime venv: mailbridge as a user installs it, a plain non-editable `pip install .` with
# no extras. Every test that starts mailbridge runs it from here, so a dependency missing from
# pyproject.toml fails the tests instead of the first user. Rebuilt from scratch when
# pyproject.toml changed (a dependency removed must be gone); reinstalled without its
# dependencies when only the code changed. pip's cache makes both quick.
stamp=$(python3 tests/runtime.py stamp)
state=$(python3 tests/runtime.py state)
rm -rf build  # setuptools builds in-tree; a file deleted from bot/ must not linger in build/lib
case "$state" in
  fresh) ;;
  source) .venv-run/bin/python -m pip install --quiet --no-deps --force-reinstall . ;;
  *)
    rm -rf .venv-run
    python3 -m venv .venv-run
    .venv-run/bin/python -m pip install --quiet .
    ;;
esac
rm -rf build
printf '%s\n' "$stamp" > .venv-run/mailbridge-source.txt
