"""Logging to stderr, with the chatty libraries that would print secrets kept quiet."""

from __future__ import annotations

import logging
import sys

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


def setup(level: str) -> None:
    """Send log records of ``level`` and above to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
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
