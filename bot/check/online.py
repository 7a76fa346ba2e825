"""``mailbridge check --online``: ask each configured service whether the setup works.

Each finding is one line: what holds, or what does not and how to fix it. Nothing here changes
anything at the services (a Matrix password check logs in and out again, deleting the device
it made); nothing printed carries a token or a secret.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bot.check.matrix import matrix_findings
from bot.check.probe import Finding, get_json
from bot.config import Config, GoogleConfig, TelegramConfig
from bot.google.client import load_client
from bot.google.token_endpoint import (
    CLIENT_ERRORS,
    EndpointDown,
    OAuthRefused,
    basic_auth,
    post_form,
)

TIMEOUT = aiohttp.ClientTimeout(total=15)
CALLBACK = "/oauth/callback"
WEBHOOK = "/telegram/webhook"  # adapters.telegram.WEBHOOK_PATH (no adapter import in bot/)
WEBHOOK_PORTS = {443, 80, 88, 8443}  # the Bot API's setWebhook: "Ports currently supported"
CONSOLE = "Google Cloud Console > APIs & Services > Credentials"


Check = Callable[[aiohttp.ClientSession], Awaitable[list[Finding]]]


async def check(config: Config) -> list[Finding]:
    """Ask every configured service; return the findings in a fixed order."""
    checks: list[Check] = []
    if config.telegram is not None:
        telegram = config.telegram
        checks.append(lambda http: _telegram(http, telegram, config.web.public_url))
    if config.google is not None:
        google = config.google
        checks.append(lambda http: _google(http, google, config.web.public_url))
    if config.matrix is not None:
        matrix = config.matrix
        checks.append(lambda http: matrix_findings(http, matrix))
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        results = await asyncio.gather(*(c(http) for c in checks))
    return [finding for findings in results for finding in findings]


async def _telegram(
    http: aiohttp.ClientSession, telegram: TelegramConfig, public_url: str
) -> list[Finding]:
    api = f"{telegram.base_url}{telegram.token}"
    try:
        status, me = await get_json(http, "GET", f"{api}/getMe")
    except EndpointDown as exc:
        host = urlsplit(telegram.base_url).netloc
        return [Finding(False, "telegram", f"the Bot API at {host} did not answer ({exc})")]
    if status != 200 or not me.get("ok"):
        why = me.get("description") or f"HTTP {status}"
        return [
            Finding(
                False,
                "telegram",
                f"Telegram refused the bot token ({why}); copy it again from @BotFather "
                "(/mybots > API Token) into [telegram] token or $MAILBRIDGE_TELEGRAM_TOKEN",
            )
        ]
    found = [Finding(True, "telegram", f"the bot token works: @{me['result']['username']}")]
    try:
        _, info = await get_json(http, "GET", f"{api}/getWebhookInfo")
    except EndpointDown as exc:
        return [*found, Finding(False, "telegram", f"getWebhookInfo did not answer ({exc})")]
    on_file = str(info.get("result", {}).get("url", ""))
    error = info.get("result", {}).get("last_error_message")
    return [*found, _webhook(telegram, public_url, on_file, error)]


def _webhook(telegram: TelegramConfig, public_url: str, on_file: str, error: Any) -> Finding:
    expected = public_url.rstrip("/") + WEBHOOK
    if telegram.mode == "polling":
        if on_file:
            return Finding(
                True,
                "telegram",
                f"Telegram has a webhook on file ({on_file}); polling mode removes it when "
                "the bot starts (if another deployment uses it, it stops getting updates)",
            )
        return Finding(True, "telegram", "no webhook on file, as polling mode needs")
    parts = urlsplit(expected)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if parts.scheme != "https" or port not in WEBHOOK_PORTS:
        return Finding(
            False,
            "telegram",
            f"webhook mode needs an https:// [web] public_url on port 443, 80, 88 or 8443 "
            f"(Telegram delivers nowhere else); {expected} is not",
        )
    if on_file != expected:
        shown = on_file or "none"
        return Finding(
            True,
            "telegram",
            f"the webhook on file is {shown}; the bot sets {expected} when it starts",
        )
    if error:
        return Finding(
            False,
            "telegram",
            f"Telegram's last delivery to {expected} failed ({error}); make that URL reachable "
            "from the internet (the reverse proxy must pass /telegram/webhook to the bot)",
        )
    return Finding(True, "telegram", f"the webhook on file is {expected}")


async def _google(
    http: aiohttp.ClientSession, google: GoogleConfig, public_url: str
) -> list[Finding]:
    found: list[Finding] = []
    redirect = public_url.rstrip("/") + CALLBACK
    if google.client_secrets_file is not None:
        found += _client_file(google, redirect)
        if not found[0].ok:
            return found
    else:
        found.append(
            Finding(
                True,
                "google",
                f"client_id and client_secret are set without the client file, so its redirect "
                f"URIs cannot be read: make sure {CONSOLE} lists {redirect} exactly",
            )
        )
    client = load_client(google)
    # A refresh with a made-up token: Google must refuse the token (invalid_grant), not us.
    form = {"grant_type": "refresh_token", "refresh_token": "mailbridge-check-not-a-token"}
    auth = basic_auth(client.client_id, client.client_secret)
    try:
        await post_form(http, client.token_uri, form, auth)
    except OAuthRefused as exc:
        if exc.code == "invalid_grant":
            text = f"the token endpoint accepts the client {client.client_id}"
            return [*found, Finding(True, "google", text)]
        if exc.code in CLIENT_ERRORS:
            return [
                *found,
                Finding(
                    False,
                    "google",
                    f"the token endpoint refused the client ({exc.code}): the client id or "
                    f"secret does not match a client in {CONSOLE}; download its JSON again "
                    "(or reset the secret) into [google] client_secrets_file",
                ),
            ]
        text = f"the token endpoint answered {exc.code} (HTTP {exc.status}), not invalid_grant"
        return [*found, Finding(False, "google", text)]
    except EndpointDown as exc:
        text = f"the token endpoint {client.token_uri} did not answer ({exc})"
        return [*found, Finding(False, "google", text)]
    text = f"the token endpoint {client.token_uri} took a made-up refresh token: is it Google?"
    return [*found, Finding(False, "google", text)]


def _client_file(google: GoogleConfig, redirect: str) -> list[Finding]:
    assert google.client_secrets_file is not None
    where = f"client file {google.client_secrets_file.name}"
    try:
        data = json.loads(google.client_secrets_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [Finding(False, "google", f"the {where} cannot be read as JSON ({exc})")]
    web = data.get("web") if isinstance(data, dict) else None
    if not isinstance(web, dict):
        kind = "a Desktop app client" if isinstance(data, dict) and "installed" in data else "?"
        return [
            Finding(
                False,
                "google",
                f"the {where} is not a Web application client ({kind}); create one "
                f"(Application type: Web application) in {CONSOLE} and download its JSON",
            )
        ]
    found = [Finding(True, "google", f"the {where} is a Web application client")]
    uris = [str(u) for u in web.get("redirect_uris") or []]
    if redirect in uris:
        found.append(Finding(True, "google", f"its redirect URIs include {redirect}"))
    else:
        listed = ", ".join(uris) or "none"
        found.append(
            Finding(
                False,
                "google",
                f"its redirect URIs ({listed}) lack {redirect} ([web] public_url + {CALLBACK}): "
                f"Google would answer redirect_uri_mismatch; add it exactly under Authorized "
                f"redirect URIs in {CONSOLE}, then download the JSON again",
            )
        )
    return found
