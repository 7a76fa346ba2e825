"""Configuration: the example loads, bad keys are named, secrets come from the environment."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from bot import config
from bot.errors import ConfigError
from tests import runtime

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.toml"
# Keys without a usable default, which the example fills with a sample value.
EXAMPLE_VALUES = {("matrix", "homeserver"), ("matrix", "user_id")}


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [runtime.mailbridge(), *args],  # as a user installs it (tests/runtime.py)
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=runtime.env() if env is None else env,
        check=False,
    )


def uncommented_example() -> str:
    """The example with every commented-out key and section switched on."""
    lines = []
    for line in EXAMPLE.read_text().splitlines():
        m = re.match(r"# (\[\w+\](?=\s)|\[\w+\]$|\w+ = .*)", line)
        lines.append(m.group(1) if m else line)
    return "\n".join(lines)


def test_example_loads_with_the_documented_defaults() -> None:
    loaded = config.load(EXAMPLE)
    assert loaded.bot == dataclasses.replace(config.BotConfig(), database=ROOT / "mailbridge.db")
    assert loaded.web == config.WebConfig()
    assert loaded.mail_backend == "outbox"
    assert (loaded.google, loaded.telegram, loaded.matrix) == (None, None, None)


def test_example_documents_every_key_with_its_default(tmp_path: Path) -> None:
    data = tomllib.loads(uncommented_example())
    for section, cls in config._SECTIONS.items():
        documented = set(data[section])
        fields = {f.name for f in dataclasses.fields(cls)}
        assert documented == fields, section
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else None
            value = data[section][f.name]
            if (section, f.name) in EXAMPLE_VALUES:
                continue
            if isinstance(default, (str, int)) and not isinstance(default, Path):
                assert value == default, f"[{section}] {f.name}"
            elif isinstance(default, Path):
                assert value == str(default), f"[{section}] {f.name}"


@pytest.mark.parametrize(
    ("toml", "names"),
    [
        ("[bot]\ndatabse = 'x.db'", "[bot] databse: unknown key"),
        ("[bot]\nsends_per_minute = 'ten'", "[bot] sends_per_minute"),
        ("[bot]\nsends_per_minute = 0", "[bot] sends_per_minute"),
        ("[bot]\nallowed_users = ['alice']", "[bot] allowed_users"),
        ("[bot]\nlog_level = 'loud'", "[bot] log_level"),
        ("[web]\nlisten = 'localhost'", "[web] listen"),
        ("[web]\npublic_url = 'example.org'", "[web] public_url"),
        ("[mail]\nbackend = 'smtp'", "[mail] backend"),
        ("[mail]\nbackend = 'gmail'", "[mail] backend"),
        ("[google]\nclient_id = 'x'", "[google] client_secrets_file"),
        ("[google]\nclient_secrets_file = 'missing.json'", "[google] client_secrets_file"),
        ("[telegram]\nmode = 'polling'", "[telegram] token"),
        ("[telegram]\ntoken = 't'\nmode = 'webhook'", "[telegram] webhook_secret"),
        ("[matrix]\nhomeserver = 'https://m.org'\nuser_id = 'bot'", "[matrix] user_id"),
        ("[slack]\ntoken = 'x'", "[slack]"),
        ("[bot\n", "not valid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, toml: str, names: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert names in str(info.value)


def test_secrets_come_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        "[telegram]\n[matrix]\nhomeserver = 'https://m.example.org'\nuser_id = '@b:example.org'\n"
    )
    loaded = config.load(
        path,
        env={
            "MAILBRIDGE_TELEGRAM_TOKEN": "123:abc",
            "MAILBRIDGE_MATRIX_PASSWORD": "pw",
            "MAILBRIDGE_LOG_LEVEL": "DEBUG",
        },
    )
    assert loaded.telegram is not None
    assert loaded.telegram.token == "123:abc"
    assert loaded.matrix is not None
    assert loaded.matrix.password == "pw"
    assert loaded.bot.log_level == "debug"
    assert "123:abc" not in repr(loaded)
    assert "pw'" not in repr(loaded)


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "config.toml"
    path.parent.mkdir()
    path.write_text("[bot]\ndatabase = 'data/bot.db'\n[mail]\noutbox_dir = '/var/out'\n")
    loaded = config.load(path)
    assert loaded.bot.database == tmp_path / "etc" / "data" / "bot.db"
    assert loaded.mail.outbox_dir == Path("/var/out")


def test_check_accepts_the_example_and_says_what_would_run(tmp_path: Path) -> None:
    result = run_cli("check", "--config", str(EXAMPLE), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stdout
    assert "written as .eml files" in result.stdout


def test_check_on_a_broken_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[bot]\nsends_per_day = -1\n")
    result = run_cli("check", cwd=tmp_path)  # ./config.toml is the default
    assert result.returncode == 2
    assert "[bot] sends_per_day" in result.stderr


def test_check_without_any_config_says_so(tmp_path: Path) -> None:
    result = run_cli("check", cwd=tmp_path)
    assert result.returncode == 2
    assert "config.toml does not exist" in result.stderr


def test_config_path_from_environment(tmp_path: Path) -> None:
    (tmp_path / "other.toml").write_text("[bot]\nlog_level = 'warning'\n")
    env = {"MAILBRIDGE_CONFIG": str(tmp_path / "other.toml"), "PATH": "/usr/bin:/bin"}
    result = run_cli("check", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "other.toml is valid" in result.stdout


def test_version() -> None:
    result = run_cli("--version", cwd=ROOT)
    assert result.stdout.strip() == "mailbridge 0.1.0"


def test_a_postgresql_database_is_a_url_and_its_password_is_never_shown(tmp_path: Path) -> None:
    url = "postgresql://mb:s3cret-pw@db.example.org:5432/mailbridge"
    (tmp_path / "config.toml").write_text(
        f"[bot]\ndatabase = '{url}'\ndata_key_file = 'shared.key'\n"
    )
    loaded = config.load(tmp_path / "config.toml", env={})
    assert loaded.bot.database == url  # a URL, not a file beside the configuration
    assert "s3cret-pw" not in repr(loaded)
    from_env = config.load(
        tmp_path / "config.toml", env={"MAILBRIDGE_DATABASE_URL": "postgres://x@/other"}
    )
    assert from_env.bot.database == "postgres://x@/other"
    result = run_cli("check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "db.example.org:5432/mailbridge" in result.stdout
    assert "s3cret-pw" not in result.stdout + result.stderr


def test_a_postgresql_database_without_a_shared_data_key_is_refused(tmp_path: Path) -> None:
    # Instances that each made up a key could not open each other's sealed tokens and mail.
    (tmp_path / "config.toml").write_text("[bot]\ndatabase = 'postgresql://mb@/mailbridge'\n")
    for command in ("check", "run"):
        result = (
            run_cli(command, "--console", cwd=tmp_path)
            if command == "run"
            else run_cli(command, cwd=tmp_path)
        )
        assert result.returncode == 2, (command, result.stderr)
        assert "[bot] data_key_file" in result.stderr
        assert "MAILBRIDGE_DATA_KEY" in result.stderr
        assert not list(tmp_path.glob("*.key"))
