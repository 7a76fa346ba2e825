"""Structured logs: one JSON object a line, with ids and never a secret."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import logs
from bot.errors import ConfigError
from tests.conftest import make_config


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_carry_time_level_logger_message_and_ids(
    capfd: pytest.CaptureFixture[str],
) -> None:
    logs.setup("info", "json")
    log = logging.getLogger("bot.outbox")
    log.info("outbox %d sent", 12, extra={"outbox": 12, "body": "Dear Bob, the secret is..."})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("outbox %d: unexpected error while sending", 13, extra={"outbox": 13})
    logging.getLogger("httpx").info("GET https://api.telegram.org/bot123:SECRET/getMe")
    logging.getLogger("adapters.telegram").warning("getUpdates failed; trying again in 2 s")
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 3  # httpx is kept quiet: its URLs carry the bot token
    sent, failed, network = (json.loads(line) for line in lines)
    assert network["network"] == "telegram"
    assert sent["message"] == "outbox 12 sent"
    assert (sent["level"], sent["logger"], sent["outbox"]) == ("info", "bot.outbox", 12)
    assert sent["time"].endswith("Z")
    assert "body" not in sent  # only known ids are taken from a record's extras
    assert failed["level"] == "error"
    assert failed["outbox"] == 13
    assert "ValueError: boom" in failed["traceback"]


def test_log_format_is_checked(tmp_path: Path) -> None:
    assert make_config(tmp_path, bot={"log_format": "json"}).bot.log_format == "json"
    with pytest.raises(ConfigError, match=r"\[bot\] log_format: expected one of text, json"):
        make_config(tmp_path, bot={"log_format": "xml"})


@pytest.mark.integration
async def test_a_running_bot_logs_json_lines_only(tmp_path: Path) -> None:
    from tests.stack import stack

    async with stack(tmp_path, extra_config='log_format = "json"') as s:
        await s.telegram.user_sends(5001, "/help")
        await s.telegram.wait_for(5001, "/mail")
        await s.bot.stop()
        records = [json.loads(line) for line in s.bot.logs().splitlines()]
    assert any(r["message"].startswith("web server listening on") for r in records)
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    assert s.telegram.token not in s.bot.logs()
