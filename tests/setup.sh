#!/usr/bin/env bash
# Install everything the test suite needs: a virtual environment in .venv with the project and its
# test extra (Synapse, Playwright, hypothesis, ruff, mypy, SQLAlchemy and asyncpg), and Chromium,
# PostgreSQL and systemd from Debian's packages. Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

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
