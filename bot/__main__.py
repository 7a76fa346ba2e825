"""The ``mailbridge`` command: run the bot, check a configuration, or print the version."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bot import __version__, config, logs
from bot.check.describe import describe
from bot.errors import ConfigError, InstallError, InUseError, NotEmptyError, StoreError

try:
    from bot import app
except ImportError as exc:  # a dependency of the core itself: say which, in one line
    print(InstallError.missing("mailbridge", exc), file=sys.stderr)
    sys.exit(2)

TRIAL_NOTE = (
    "mailbridge: trial mode (no config.toml found) - chat here in the terminal; mail is written "
    "to ./outbox, nothing is sent. See README.md to connect real accounts. Type /help."
)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run; return the process exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "check":
            return _check(_config_path(args.config, required=True), online=args.online)
        if args.command in ("backup", "restore"):
            return _backup(args.command, _config_path(args.config, required=True), args.folder)
        if args.command == "migrate":
            return _migrate(_config_path(args.config, required=True), args.to)
        return _run(_config_path(args.config, required=False), console=args.console)
    except ConfigError as exc:
        print(f"mailbridge: configuration error: {exc}", file=sys.stderr)
        return 2
    except (InstallError, InUseError, NotEmptyError) as exc:
        print(f"mailbridge: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"mailbridge: database error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailbridge", description="Send email from your own Gmail through a chat bot."
    )
    parser.add_argument("--version", action="version", version=f"mailbridge {__version__}")
    parser.set_defaults(command="run", config=None, console=False)
    sub = parser.add_subparsers(dest="command", metavar="{run,check,backup,restore,migrate}")
    config_help = "configuration file (default: $MAILBRIDGE_CONFIG, else ./config.toml)"
    run = sub.add_parser("run", help="run the bot (the default)")
    run.add_argument("--config", type=Path, help=config_help)
    run.add_argument("--console", action="store_true", help="chat from this terminal")
    check = sub.add_parser("check", help="validate the configuration and say what would run")
    check.add_argument("--config", type=Path, help=config_help)
    check.add_argument(
        "--online",
        action="store_true",
        help="also ask Telegram, Google and the homeserver whether the setup works",
    )
    for name, text in (
        ("backup", "copy the database and its data key into FOLDER, while the bot runs"),
        ("restore", "put the backup in FOLDER where the configuration expects the database"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("folder", type=Path, metavar="FOLDER")
        command.add_argument("--config", type=Path, help=config_help)
    move = sub.add_parser("migrate", help="copy the SQLite database into an empty PostgreSQL one")
    move.add_argument(
        "--to",
        required=True,
        type=_postgres_url,
        metavar="postgresql://…",
        help="the empty PostgreSQL database to copy into",
    )
    move.add_argument("--config", type=Path, help=config_help)
    return parser


def _postgres_url(text: str) -> str:
    from bot.store.db import is_url

    if not is_url(text):  # never echo it: it may hold a password
        raise argparse.ArgumentTypeError("give a PostgreSQL URL: postgresql://user@host/db")
    return text


def _config_path(given: Path | None, *, required: bool) -> Path | None:
    """Return the configuration file to use, or None for trial mode."""
    if given is not None:
        return given
    if os.environ.get("MAILBRIDGE_CONFIG"):
        return Path(os.environ["MAILBRIDGE_CONFIG"])
    default = Path("config.toml")
    if default.exists() or required:
        return default
    return None


def _run(path: Path | None, *, console: bool) -> int:
    if path is None:
        # Trial mode writes each mail at once: no preview, no undo window, nothing kept.
        trial = {"bot": {"database": ":memory:"}, "mail": {"confirm": "never", "undo_seconds": 0}}
        cfg = config.from_dict(trial, base=Path.cwd(), env=os.environ)
        logs.setup(os.environ.get("MAILBRIDGE_LOG_LEVEL", "warning"))
        print(TRIAL_NOTE, file=sys.stderr, flush=True)
        return asyncio.run(app.run(cfg, console=True, serve_web=False))
    cfg = config.load(path)
    logs.setup(cfg.bot.log_level, cfg.bot.log_format)
    return asyncio.run(app.run(cfg, console=console))


def _check(path: Path | None, *, online: bool = False) -> int:
    assert path is not None
    cfg = config.load(path)
    app.preflight(cfg, read_client=not online)  # --online reports the client file as a finding
    print(f"configuration {cfg.path} is valid:")
    for line in describe(cfg):
        print(f"  {line}")
    if not online:
        return 0
    from bot.check.online import check

    findings = asyncio.run(check(cfg))
    print("asked the services:")
    for finding in findings:
        print(f"  {finding.line()}")
    failed = sum(not f.ok for f in findings)
    print(f"{failed} problem(s) found" if failed else "everything holds")
    return 1 if failed else 0


def _backup(command: str, path: Path | None, folder: Path) -> int:
    from bot.backup import backup, restore

    assert path is not None
    cfg = config.load(path)
    for line in (backup if command == "backup" else restore)(cfg, folder, app.key_file(cfg)):
        print(line)
    return 0


def _migrate(path: Path | None, url: str) -> int:
    from bot.migrate import migrate_to

    assert path is not None
    cfg = config.load(path)
    for line in migrate_to(cfg, url, app.key_file(cfg)):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
