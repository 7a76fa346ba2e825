"""The device's store folder: the one the device began with, or a refusal to start."""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import ClientError
from nio import Api, AsyncClient

from bot.errors import ConfigError

log = logging.getLogger(__name__)


async def check_store(
    client: AsyncClient, store: Path, user_id: str, device_id: str, token: str
) -> None:
    """Refuse to start afresh a device whose keys the homeserver already has: ``store`` is
    not the folder the device began with (with several instances, a leader on another
    volume), and new keys under the old device would leave users unable to read the bot."""
    if (store / f"{user_id}_{device_id}.db").exists():  # nio's store of that device
        return
    method, path, data = Api.keys_query(token, {user_id})
    try:
        response = await client.send(method, path, data)
        known = (await response.json()).get("device_keys", {}).get(user_id, {})
        response.release()
    except (ClientError, TimeoutError, ValueError) as exc:
        log.warning("could not ask the homeserver for the device's keys (%s)", exc)
        return
    if device_id in known:
        raise ConfigError(
            f"[matrix] store_path: {store} holds no encryption keys of device {device_id},"
            " which has keys on the homeserver already, so this is not the store the device"
            " began with. With several instances all must use the same store folder (README,"
            " Matrix setup); otherwise restore the folder from a backup, or remove"
            " access_token (and credentials.json) to log in as a new device."
        )
