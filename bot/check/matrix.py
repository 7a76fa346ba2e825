"""The Matrix part of ``check --online``: do the bot's credentials still work?"""

from __future__ import annotations

import json

import aiohttp

from bot.check.probe import Finding, get_json
from bot.config import MatrixConfig
from bot.google.token_endpoint import EndpointDown

WHOAMI = "/_matrix/client/v3/account/whoami"


async def credentials(http: aiohttp.ClientSession, matrix: MatrixConfig, base: str) -> Finding:
    """Check the credentials the bot would use: its stored login, its token, or its password."""
    saved = matrix.store_path / "credentials.json"
    try:
        if saved.exists():
            token = str(json.loads(saved.read_text())["access_token"])
            return await _whoami(http, matrix, base, token, f"the stored login ({saved})")
        if matrix.access_token:
            return await _whoami(http, matrix, base, matrix.access_token, "[matrix] access_token")
        return await _password(http, matrix, base)
    except EndpointDown as exc:
        return Finding(False, "matrix", f"the homeserver stopped answering ({exc})")
    except (OSError, ValueError, KeyError) as exc:
        text = f"{saved} cannot be read ({type(exc).__name__}); delete it to log in again"
        return Finding(False, "matrix", text)


async def _whoami(
    http: aiohttp.ClientSession, matrix: MatrixConfig, base: str, token: str, what: str
) -> Finding:
    headers = {"Authorization": f"Bearer {token}"}
    status, who = await get_json(http, "GET", base + WHOAMI, headers=headers)
    if status != 200:
        code = who.get("errcode") or f"HTTP {status}"
        fix = (
            "delete it (the bot logs in again with [matrix] password)"
            if what.startswith("the stored")
            else "create a new token for the bot's account, or use [matrix] password"
        )
        return Finding(False, "matrix", f"the homeserver refused {what} ({code}); {fix}")
    user = str(who.get("user_id", ""))
    if user != matrix.user_id:
        text = f"{what} belongs to {user}, not to [matrix] user_id {matrix.user_id}"
        return Finding(False, "matrix", text)
    return Finding(True, "matrix", f"{what} is accepted for {user}")


async def _password(http: aiohttp.ClientSession, matrix: MatrixConfig, base: str) -> Finding:
    # A login makes a device: log it out at once (client-server API, POST /logout: "the device
    # associated with the access token is also deleted"; other devices are untouched).
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": matrix.user_id},
        "password": matrix.password,
        "initial_device_display_name": "mailbridge check",
    }
    status, login = await get_json(http, "POST", f"{base}/_matrix/client/v3/login", json=body)
    if status != 200:
        code = login.get("errcode") or f"HTTP {status}"
        text = (
            f"the homeserver refused the login of {matrix.user_id} ({code}); check [matrix] "
            "user_id and password (or $MAILBRIDGE_MATRIX_PASSWORD)"
        )
        return Finding(False, "matrix", text)
    headers = {"Authorization": f"Bearer {login['access_token']}"}
    await get_json(http, "POST", f"{base}/_matrix/client/v3/logout", headers=headers, json={})
    user = str(login.get("user_id", matrix.user_id))
    return Finding(True, "matrix", f"[matrix] password logs in as {user}")


async def matrix_findings(http: aiohttp.ClientSession, matrix: MatrixConfig) -> list[Finding]:
    """Ask the homeserver whether it answers and the credentials hold."""
    base = matrix.homeserver.rstrip("/")
    try:
        status, versions = await get_json(http, "GET", f"{base}/_matrix/client/versions")
    except EndpointDown as exc:
        return [Finding(False, "matrix", f"the homeserver {base} did not answer ({exc})")]
    if status != 200 or not versions.get("versions"):
        text = f"{base} answered HTTP {status} to /versions: is [matrix] homeserver right?"
        return [Finding(False, "matrix", text)]
    newest = versions["versions"][-1]
    found = [Finding(True, "matrix", f"the homeserver {base} answers (spec {newest})")]
    return [*found, await credentials(http, matrix, base)]
