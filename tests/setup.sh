#!/usr/bin/env bash
# Install everything the test suite needs: a virtual environment in .venv with the project and its
# test extra (Synapse, Playwright, hypothesis, ruff, mypy), and Chromium from Debian's packages for
# the browser tests. Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
# Synapse imports much faster from compiled bytecode (PYTHONDONTWRITEBYTECODE may be set).
.venv/bin/python -m compileall -q -j 0 .venv/lib >/dev/null 2>&1 || true

if ! command -v chromium >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  $sudo apt-get install -y -q --no-install-recommends chromium
fi

# systemd-analyze checks the unit file in deploy/ (tests/test_deploy.py).
if ! command -v systemd-analyze >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  $sudo apt-get install -y -q --no-install-recommends systemd
fi
