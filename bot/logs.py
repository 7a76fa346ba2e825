"""Logging to stderr, with the chatty libraries that would print secrets kept quiet."""

from __future__ import annotations

import json
import logging
import sys
import time

# httpx logs request URLs at INFO, and Telegram's URLs carry the bot token; oauthlib and
# requests-oauthlib log token requests and responses at DEBUG; aiosqlite logs every call.
QUIET = (
    "httpx",
    "httpcore",
    "oauthlib",
    "requests_oauthlib",
    "urllib3",
    "httplib2",
    "aiosqlite",
    "google_auth_oauthlib",
    "googleapiclient.discovery_cache",
    "hpack",
    "peewee",
)


# These log message contents or API URLs (Telegram's carry the bot token) at DEBUG: keep at INFO.
NO_DEBUG = ("telegram", "nio", "aiohttp.client", "googleapiclient")


# Ids a record may carry (``log.info(..., extra={"outbox": 12})``): they name what an event is
# about without its content. Nothing else from a record's extras is written.
IDS = ("outbox", "network", "route", "status")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the event's ids."""

    def format(self, record: logging.LogRecord) -> str:
        """Return ``record`` as one line of JSON."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry: dict[str, object] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in IDS:
            if key in record.__dict__:
                entry[key] = record.__dict__[key]
        if "network" not in entry and record.name.startswith("adapters."):
            entry["network"] = record.name.split(".")[1]  # adapters.telegram -> telegram
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def setup(level: str, fmt: str = "text") -> None:
    """Send log records of ``level`` and above to stderr, as text or as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    # oauthlib warns that Google returned "userinfo.email" for the "email" we asked: noise.
    for name in ("oauthlib", "google.oauth2.credentials"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in NO_DEBUG:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
