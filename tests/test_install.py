"""What users install is what is tested: every import is declared, and a plain ``pip install .``
(the runtime venv, see tests/runtime.py) imports every module and runs every network."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import re
import signal
import subprocess
import sys
import time
import tomllib
from importlib.metadata import distribution, packages_distributions
from pathlib import Path

import aiohttp
import pytest

from tests import runtime
from tests.botproc import free_port

ROOT = runtime.ROOT
FIRST_PARTY = set(runtime.PACKAGES)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    """Return the distributions pyproject.toml declares as dependencies (no extras)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = (re.match(r"[A-Za-z0-9._-]+", d) for d in project["dependencies"])
    return {_normal(m.group(0)) for m in names if m}


def imported_modules() -> dict[str, str]:
    """Return every absolute module bot/ and adapters/ import, with where the first is."""
    found: dict[str, str] = {}
    for path in sorted(p for package in FIRST_PARTY for p in (ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name, f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def owners(module: str) -> set[str]:
    """Return the distributions that provide ``module`` (namespace packages such as ``google``
    are shared: the one holding the module's own folder or file owns it)."""
    parts = module.split(".")
    candidates = packages_distributions().get(parts[0], [])
    for depth in range(len(parts), 1, -1):
        stem = "/".join(parts[:depth])
        hits = {
            d
            for d in candidates
            if any(
                str(f).startswith(stem + "/") or str(f) == stem + ".py"
                for f in distribution(d).files or ()
            )
        }
        if hits:
            return {_normal(d) for d in hits}
    return {_normal(d) for d in candidates}


def test_every_import_is_declared_in_pyproject() -> None:
    deps = declared()
    undeclared = []
    for module, where in imported_modules().items():
        top = module.split(".")[0]
        if top in FIRST_PARTY or top in sys.stdlib_module_names:
            continue
        provided = owners(module)
        if not provided & deps:
            undeclared.append(f"{where}: {module} (from {', '.join(sorted(provided)) or '?'})")
    assert not undeclared, "imported but not in [project] dependencies:\n" + "\n".join(undeclared)


def test_runtime_venv_imports_every_module() -> None:
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for package in FIRST_PARTY
        for p in (ROOT / package).rglob("*.py")
        if p.name != "__main__.py"
    )
    # -I: no PYTHONPATH, no current folder, no user site: only what the install holds.
    program = (
        "import importlib, json, sys\n"
        "print(json.dumps({m: importlib.import_module(m).__file__ for m in sys.argv[1:]}))"
    )
    result = subprocess.run(
        [runtime.python(), "-I", "-c", program, *modules],
        capture_output=True,
        text=True,
        timeout=120,
        env=runtime.env(),
        cwd="/",
    )
    assert result.returncode == 0, result.stderr
    files = json.loads(result.stdout)
    assert sorted(files) == modules
    stray = [m for m, f in files.items() if not f.startswith(str(runtime.VENV))]
    assert not stray, f"imported from outside the runtime venv: {stray}"


def closed_port_config(tmp_path: Path, web_port: int) -> Path:
    """Google, Telegram and Matrix all configured, each at a local port nobody listens on."""
    closed = f"http://127.0.0.1:{free_port()}"
    secrets = {
        "web": {
            "client_id": "1234-x.apps.googleusercontent.com",
            "client_secret": "not-a-real-secret",
            "auth_uri": f"{closed}/o/oauth2/auth",
            "token_uri": f"{closed}/token",
            "redirect_uris": [f"http://127.0.0.1:{web_port}/oauth/callback"],
        }
    }
    (tmp_path / "client_secret.json").write_text(json.dumps(secrets))
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[bot]
database = "bot.db"
[web]
listen = "127.0.0.1:{web_port}"
public_url = "http://127.0.0.1:{web_port}"
[google]
client_secrets_file = "client_secret.json"
revoke_uri = "{closed}/revoke"
api_endpoint = "{closed}"
[telegram]
token = "123456:ABC-closed"
base_url = "{closed}/bot"
[matrix]
homeserver = "{closed}"
user_id = "@mailbot:example.org"
password = "not-a-real-password"
"""
    )
    return config


@pytest.mark.integration
async def test_plain_install_runs_every_network_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    config = closed_port_config(tmp_path, port)
    log = tmp_path / "mailbridge.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            runtime.mailbridge(),
            "run",
            "--config",
            str(config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=runtime.env(),
            cwd=tmp_path,
        )
    try:
        status = 0
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as http:
            while status != 200:
                assert proc.returncode is None, f"mailbridge exited:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"no /healthz in 30 s:\n{log.read_text()}"
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                        status = r.status
                await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    output = log.read_text()
    assert code == 0, output
    assert "Traceback" not in output, output


def check(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [runtime.mailbridge(), "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=runtime.env(env),
        check=False,
    )


def test_check_imports_what_the_configuration_runs(tmp_path: Path) -> None:
    result = check(closed_port_config(tmp_path, free_port()))
    assert result.returncode == 0, result.stderr
    assert "chat networks: telegram (polling), matrix as @mailbot:example.org" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ('{"web": {"client_id": "x", ', "cannot be read as JSON"),
        ('{"installed": {"client_id": "x"}}', "expected the JSON of a 'Web application'"),
    ],
    ids=["truncated", "desktop-client"],
)
def test_check_reports_a_broken_client_secrets_file_in_one_line(
    tmp_path: Path, content: str, says: str
) -> None:
    config = closed_port_config(tmp_path, free_port())
    (tmp_path / "client_secret.json").write_text(content)
    result = check(config)
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("mailbridge: configuration error: [google] client_secrets_file ("), line
    assert says in line


@pytest.mark.parametrize(
    ("module", "says"),
    [
        ("googleapiclient", "mailbridge: [google] cannot be used: the Python module "),
        ("nio", "mailbridge: [matrix] cannot be used: the Python module 'nio' is missing"),
        ("nh3", "mailbridge cannot be used: the Python module 'nh3' is missing"),
    ],
)
def test_check_names_a_missing_library_in_one_line(tmp_path: Path, module: str, says: str) -> None:
    # A library that cannot be imported, as if it were not installed, ahead on the path.
    shadow = tmp_path / "shadow" / module
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        f'raise ModuleNotFoundError("No module named {module!r}", name={module!r})\n'
    )
    config = closed_port_config(tmp_path, free_port())
    result = check(config, {"PYTHONPATH": str(shadow.parent)})
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(says), line
    assert line.endswith("install mailbridge again with `pip install .`"), line


def test_readmes_first_command_is_the_install_the_tests_run() -> None:
    # A newcomer's first command must install mailbridge the way .venv-run does (a plain,
    # non-editable `pip install .` with no extras), or the suite tests something else.
    readme = (ROOT / "README.md").read_text()
    first = re.search(r"```sh\n(.+?)\n```", readme, re.S)
    assert first is not None
    assert re.search(r"pip install \.(\s|$)", first.group(1)), first.group(1)
    assert "-e" not in first.group(1).split()
    assert "[" not in first.group(1)
    assert "mailbridge" in first.group(1).split("&&")[-1]  # and it runs it (trial mode)
