"""Configuration: ``config.toml`` read into frozen dataclasses, secrets from the environment."""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bot.errors import ConfigError, UsageError
from bot.when import parse_zone


@dataclass(frozen=True)
class BotConfig:
    """``[bot]``: storage, who may use the bot, send limits, logging."""

    database: Path | str = field(default=Path("mailbridge.db"), repr=False)  # file or URL
    data_key_file: Path | None = None  # default: the database path + ".key"
    allowed_users: tuple[str, ...] = ()
    sends_per_minute: int = 10
    sends_per_day: int = 200
    link_code_seconds: int = 600  # how long a /link code (joining two networks) lives
    log_level: str = "info"
    log_format: str = "text"  # "text" | "json": one JSON object a line
    timezone: str = "UTC"  # users' time zone for scheduled mail until they set their own


@dataclass(frozen=True)
class WebConfig:
    """``[web]``: the web server for consent pages, the OAuth callback and health checks."""

    listen: str = "127.0.0.1:8080"
    public_url: str = "http://127.0.0.1:8080"
    metrics_listen: str = ""  # host:port for /metrics alone; empty: /metrics on `listen`


@dataclass(frozen=True)
class MailConfig:
    """``[mail]``: which backend sends mail."""

    backend: str = ""  # "gmail" | "outbox"; empty: gmail when [google] is set, else outbox
    outbox_dir: Path = Path("outbox")
    confirm: str = "new_recipients"  # "always" | "new_recipients" | "never": show a preview first
    undo_seconds: int = 10  # how long a confirmed mail waits for /undo; 0: no undo window
    markdown: bool = False  # also send an HTML part rendered from the body as markdown
    group_confirmation: str = "full"  # "full" | "minimal": what a group room hears of a mail


@dataclass(frozen=True)
class GoogleConfig:
    """``[google]``: the OAuth client and Google's endpoints."""

    client_secrets_file: Path | None = None
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    auth_uri: str = "https://accounts.google.com/o/oauth2/auth"
    token_uri: str = "https://oauth2.googleapis.com/token"
    revoke_uri: str = "https://oauth2.googleapis.com/revoke"
    api_endpoint: str = "https://gmail.googleapis.com"
    link_check_interval: int = 86400  # seconds in which every link is checked once; 0: never
    link_checks_per_minute: int = 60  # at most this many token requests a minute; 0: no cap
    testing_mode: bool = False  # the app is in Testing at Google: links end 7 days after consent


@dataclass(frozen=True)
class TelegramConfig:
    """``[telegram]``: the bot token and how updates arrive."""

    token: str = field(default="", repr=False)
    base_url: str = "https://api.telegram.org/bot"
    mode: str = "polling"  # "polling" | "webhook"
    webhook_secret: str = field(default="", repr=False)


@dataclass(frozen=True)
class MatrixConfig:
    """``[matrix]``: the bot's Matrix account."""

    homeserver: str = ""
    user_id: str = ""
    password: str = field(default="", repr=False)
    access_token: str = field(default="", repr=False)
    device_name: str = "mailbridge"
    store_path: Path = Path("matrix-store")


@dataclass(frozen=True)
class Config:
    """The whole configuration; absent chat sections mean that network is off."""

    bot: BotConfig = field(default_factory=BotConfig)
    web: WebConfig = field(default_factory=WebConfig)
    mail: MailConfig = field(default_factory=MailConfig)
    google: GoogleConfig | None = None
    telegram: TelegramConfig | None = None
    matrix: MatrixConfig | None = None
    path: Path | None = None  # the file it came from; None in trial mode

    @property
    def mail_backend(self) -> str:
        """Return the backend in force, applying the default."""
        return self.mail.backend or ("gmail" if self.google else "outbox")


# Secrets that may come from the environment instead of the file: (section, key) -> variable.
ENV_SECRETS = {
    ("bot", "database"): "MAILBRIDGE_DATABASE_URL",  # a URL may hold a password
    ("telegram", "token"): "MAILBRIDGE_TELEGRAM_TOKEN",
    ("telegram", "webhook_secret"): "MAILBRIDGE_TELEGRAM_WEBHOOK_SECRET",
    ("matrix", "password"): "MAILBRIDGE_MATRIX_PASSWORD",
    ("matrix", "access_token"): "MAILBRIDGE_MATRIX_ACCESS_TOKEN",
    ("google", "client_secret"): "MAILBRIDGE_GOOGLE_CLIENT_SECRET",
}
_SECTIONS: dict[str, type[Any]] = {
    "bot": BotConfig,
    "web": WebConfig,
    "mail": MailConfig,
    "google": GoogleConfig,
    "telegram": TelegramConfig,
    "matrix": MatrixConfig,
}
_T = TypeVar("_T")


def load(path: Path, env: typing.Mapping[str, str] | None = None) -> Config:
    """Read and validate ``path``; raise ConfigError naming the first bad key."""
    env = os.environ if env is None else env
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return from_dict(data, base=path.resolve().parent, env=env, path=path.resolve())


def from_dict(
    data: dict[str, Any],
    *,
    base: Path,
    env: typing.Mapping[str, str],
    path: Path | None = None,
) -> Config:
    """Build a Config from parsed TOML; relative paths are taken from ``base``."""
    for name in data:
        if name not in _SECTIONS:
            raise ConfigError(f"[{name}]: unknown section (known: {', '.join(_SECTIONS)})")
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        table = data.get(name)
        if table is None and name not in ("bot", "web", "mail"):
            continue  # an optional section left out
        table = {} if table is None else table
        if not isinstance(table, dict):
            raise ConfigError(f"[{name}] must be a table")
        table = dict(table)
        for (section, key), var in ENV_SECRETS.items():
            if section == name and env.get(var):
                table[key] = env[var]
        sections[name] = _section(cls, name, table, base)
    if env.get("MAILBRIDGE_LOG_LEVEL"):
        sections["bot"] = dataclasses.replace(
            sections["bot"], log_level=env["MAILBRIDGE_LOG_LEVEL"].lower()
        )
    config = Config(**sections, path=path)
    _validate(config)
    return config


def _section(cls: type[_T], name: str, table: dict[str, Any], base: Path) -> _T:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"[{name}] {key}: unknown key (known: {', '.join(sorted(known))})")
        values[key] = _convert(f"[{name}] {key}", hints[key], value, base)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        # Defaults are relative to the configuration file's folder too.
        if f.name not in values and isinstance(f.default, Path) and str(f.default) != ":memory:":
            values[f.name] = base / f.default
    return cls(**values)


def _convert(where: str, hint: Any, value: Any, base: Path) -> Any:
    if hint == Path | str:  # [bot] database: a PostgreSQL URL as it is, else a file
        is_url = isinstance(value, str) and value.startswith(("postgres://", "postgresql"))
        return value if is_url else _convert(where, Path, value, base)
    optional = isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)
    if optional:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        if value == "":
            return None
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: expected a file path as a string")
        if value == ":memory:":  # SQLite's in-memory database (trial mode)
            return Path(value)
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{where}: expected a whole number 0 or more, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings")
        return tuple(value)
    raise ConfigError(f"{where}: unsupported setting type")  # pragma: no cover


def _choice(where: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{where}: expected one of {', '.join(allowed)}, got {value!r}")


def _url(where: str, value: str) -> None:
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: expected an http:// or https:// URL, got {value!r}")


def _validate(c: Config) -> None:
    _choice("[bot] log_level", c.bot.log_level, ("debug", "info", "warning", "error"))
    for pattern in c.bot.allowed_users:
        if not pattern.startswith(("telegram:", "matrix:", "console:")):
            raise ConfigError(
                f"[bot] allowed_users: {pattern!r} must start with telegram:, matrix: or console:"
            )
    if c.bot.sends_per_minute < 1 or c.bot.sends_per_day < 1:
        raise ConfigError("[bot] sends_per_minute and sends_per_day must be at least 1")
    if c.bot.link_code_seconds < 1:  # a code that dies at once
        raise ConfigError("[bot] link_code_seconds must be at least 1 (default 600)")
    _choice("[bot] log_format", c.bot.log_format, ("text", "json"))
    try:
        parse_zone(c.bot.timezone)
    except UsageError:
        raise ConfigError(
            f"[bot] timezone: {c.bot.timezone!r} is not a time zone; use a name such as "
            '"Europe/Berlin" or "UTC"'
        ) from None
    for key in ("listen", "metrics_listen"):
        value = getattr(c.web, key)
        host, _, port = value.rpartition(":")
        if (value or key == "listen") and (
            not host or not port.isdigit() or not 0 < int(port) < 65536
        ):
            raise ConfigError(f"[web] {key}: expected host:port, got {value!r}")
    _url("[web] public_url", c.web.public_url)
    _choice("[mail] backend", c.mail_backend, ("gmail", "outbox"))
    _choice("[mail] confirm", c.mail.confirm, ("always", "new_recipients", "never"))
    _choice("[mail] group_confirmation", c.mail.group_confirmation, ("full", "minimal"))
    if c.mail.undo_seconds > 3600:
        raise ConfigError("[mail] undo_seconds: at most 3600 (an hour)")
    if c.mail_backend == "gmail" and c.google is None:
        raise ConfigError("[mail] backend: gmail needs a [google] section")
    if c.google is not None:
        g = c.google
        if g.client_secrets_file is None and not (g.client_id and g.client_secret):
            raise ConfigError(
                "[google] client_secrets_file: set it, or set both client_id and client_secret"
            )
        if g.client_secrets_file is not None and not g.client_secrets_file.is_file():
            raise ConfigError(
                f"[google] client_secrets_file: {g.client_secrets_file} does not exist; download "
                "it from Google Cloud Console (APIs & Services > Credentials)"
            )
        for key in ("auth_uri", "token_uri", "revoke_uri", "api_endpoint"):
            _url(f"[google] {key}", getattr(g, key))
    if c.telegram is not None:
        if not c.telegram.token:
            raise ConfigError("[telegram] token: missing (or set MAILBRIDGE_TELEGRAM_TOKEN)")
        _url("[telegram] base_url", c.telegram.base_url)
        _choice("[telegram] mode", c.telegram.mode, ("polling", "webhook"))
        if c.telegram.mode == "webhook" and not c.telegram.webhook_secret:
            raise ConfigError("[telegram] webhook_secret: required when mode is webhook")
    if c.matrix is not None:
        m = c.matrix
        _url("[matrix] homeserver", m.homeserver)
        if not (m.user_id.startswith("@") and ":" in m.user_id):
            raise ConfigError(f"[matrix] user_id: expected @name:server, got {m.user_id!r}")
        if not (m.password or m.access_token):
            raise ConfigError(
                "[matrix] password: set password or access_token "
                "(or MAILBRIDGE_MATRIX_PASSWORD / MAILBRIDGE_MATRIX_ACCESS_TOKEN)"
            )
