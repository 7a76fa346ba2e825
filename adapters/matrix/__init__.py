"""Matrix through matrix-nio, end-to-end encrypted rooms included.

Login (or the device restored), replies, file downloads and direct chats; the sync loop is in
sync.py, the translation between nio's events and the core's messages in translate.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from aiohttp import ClientError, ClientResponse
from nio import (
    AsyncClient,
    AsyncClientConfig,
    DownloadError,
    LoginError,
    RoomCreateError,
    RoomPreset,
    RoomSendError,
    WhoamiError,
)
from nio.crypto.attachments import decrypt_attachment

from adapters.link import Link
from adapters.matrix.device import check_store
from adapters.matrix.sync import SYNC_TIMEOUT_MS, Sync
from adapters.matrix.translate import notice, reaction
from bot.chat import (
    Admit,
    Attachment,
    AttachmentRefused,
    Handler,
    NetworkMetrics,
    Relay,
    Reply,
)
from bot.config import MatrixConfig
from bot.errors import ConfigError

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 3.0  # seconds a readiness check may wait for the homeserver
RELAY_POLL = 1.0  # seconds between the leader's looks for replies other instances relayed


class LinkedClient(AsyncClient):  # type: ignore[misc]
    """matrix-nio's client, telling ``link`` how each homeserver request went."""

    def __init__(self, *args: Any, link: Link, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.link = link

    async def send(self, *args: Any, **kwargs: Any) -> ClientResponse:
        """Send one request (see ``AsyncClient.send``) and record its answer."""
        try:
            response: ClientResponse = await super().send(*args, **kwargs)
        except (ClientError, TimeoutError):
            self.link.failed()
            raise
        self.link.answered(response.status)
        return response

    async def probe(self, seconds: float) -> None:
        """Ask the homeserver for its versions (no login needed); the answer marks the link."""
        with contextlib.suppress(ClientError, TimeoutError):
            async with asyncio.timeout(seconds):
                response = await self.send("GET", "/_matrix/client/versions", timeout=seconds)
                response.release()


class MatrixAdapter:
    """The bot on Matrix: direct chats and rooms, encrypted or not."""

    platform = "matrix"
    single_consumer = True  # one device, one /sync; its E2EE store is files (bot.leader)

    def __init__(
        self,
        config: MatrixConfig,
        admit: Admit,
        metrics: NetworkMetrics | None = None,
        relay: Relay | None = None,
    ) -> None:
        self._config = config
        self._relay = relay  # several instances: where a standby's replies go to the leader
        self._store = Path(config.store_path)
        self._link = Link(self.platform, metrics)
        self.client = self._new_client()
        self._sync = Sync(self.client, self._store, admit)
        self._runs = 0  # runs started: with several instances, one per time this one leads
        self._running = False  # False while another instance leads the sync (or not started)

    def _new_client(self) -> LinkedClient:
        return LinkedClient(
            self._config.homeserver,
            self._config.user_id,
            link=self._link,
            store_path=str(self._store),
            config=AsyncClientConfig(
                store_sync_tokens=False,  # we store the token ourselves, after handling
                encryption_enabled=True,
                request_timeout=SYNC_TIMEOUT_MS / 1000 + 30,
                max_timeouts=None,
                max_timeout_retry_wait_time=5,  # back soon after the homeserver returns
            ),
        )

    async def connected(self) -> bool:
        """Whether the bot is logged in and the homeserver answers (/versions, if in doubt);
        on an instance standing by while another leads the sync, whether the homeserver
        answers (it makes no other request that would tell)."""
        if not self._running:
            await self.client.probe(PROBE_TIMEOUT)
            return self.client.link.connected
        if self.client.logged_in and not self.client.link.connected:
            await self.client.probe(PROBE_TIMEOUT)
        return bool(self.client.logged_in) and self.client.link.connected

    async def run(self, handler: Handler) -> None:
        """Log in (or restore the device), skip the backlog once, then sync until cancelled."""
        self._runs += 1
        if self._runs > 1:
            # Leading again (several instances): another leader used the store meanwhile, so
            # the device's keys and sessions are read afresh from it, never kept in memory.
            self.client = self._sync.client = self._new_client()
        self._running = True
        relayed: asyncio.Task[None] | None = None
        try:
            await self._login()
            if self._relay is not None:
                relayed = asyncio.create_task(self._send_relayed(self._relay))
            await self._sync.run(handler)
        finally:
            self._running = False
            if relayed is not None:
                relayed.cancel()
                await asyncio.gather(relayed, return_exceptions=True)
            # Never log out: that would delete the device and its encryption keys.
            await self.client.close()

    async def send(self, room: str, reply: Reply) -> None:
        """Send ``reply`` as an ``m.notice`` (HTML with a plain fallback), encrypted if need be;
        buttons become links in the text, or reactions to press. An instance standing by
        while another leads the sync relays it to the leader (only the leader's store holds
        the device's keys)."""
        if not self._running and self._relay is not None:
            await self._relay.put(room, reply)
            return
        content, reactions = notice(reply)
        if not await self._sync.wait_until(lambda: room in self.client.rooms):
            log.error("cannot answer in a room the bot has not joined")
            return
        joined = self.client.rooms[room]
        if joined.encrypted and self.client.olm is not None:
            # Members we never shared an encrypted room with (say, the invitee of a direct chat
            # we just created) are not tracked yet: without their devices, nobody could decrypt.
            self.client.olm.update_tracked_users(joined)
        if self.client.should_query_keys:
            await self.client.keys_query()
        result = await self.client.room_send(
            room, "m.room.message", content, ignore_unverified_devices=True
        )
        if isinstance(result, RoomSendError):
            log.error("sending a reply failed: %s %s", result.status_code, result.message)
            return
        if reactions:
            self._sync.buttons(result.event_id, reactions)
            for key in reactions:
                await self.client.room_send(
                    room,
                    "m.reaction",
                    reaction(result.event_id, key),
                    ignore_unverified_devices=True,
                )

    async def fetch_attachment(self, ref: str, limit: int) -> Attachment:
        """Download (and decrypt) the file a command replied to."""
        info = json.loads(ref)
        if info["size"] and info["size"] > limit:
            raise AttachmentRefused("too_large", self.platform, size=info["size"], limit=limit)
        result = await self.client.download(mxc=info["url"])
        if isinstance(result, DownloadError):
            raise AttachmentRefused("unreachable", self.platform, detail=result.message)
        data = bytes(result.body)  # no save_to: nio keeps the download in memory
        if info.get("key"):
            try:
                data = decrypt_attachment(
                    data, info["key"]["k"], info["hashes"]["sha256"], info["iv"]
                )
            except Exception:
                raise AttachmentRefused("undecryptable", self.platform) from None
        return Attachment(info["name"], info["mimetype"], data)

    async def open_direct(self, user_id: str) -> str | None:
        """Return a direct chat with ``user_id``, creating (and inviting them to) one if needed."""
        for room in self.client.rooms.values():
            members = set(room.users)
            if members == {self.client.user_id, user_id}:
                return str(room.room_id)
        result = await self.client.room_create(
            is_direct=True,
            invite=[user_id],
            preset=RoomPreset.trusted_private_chat,
            initial_state=[
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }
            ],
        )
        if isinstance(result, RoomCreateError):
            log.error("creating a direct chat failed: %s", result.message)
            return None
        room_id = str(result.room_id)
        # Wait until a sync shows the invitee in the room: the room key of what we send next is
        # shared only with the members we know of.
        if not await self._sync.wait_until(
            lambda: room_id in self.client.rooms and user_id in self.client.rooms[room_id].users
        ):
            log.warning("the new direct chat did not show up in time")
        return room_id

    async def _send_relayed(self, relay: Relay) -> None:
        """Send what other instances relayed, while this one leads the sync."""
        while True:
            await asyncio.sleep(RELAY_POLL)
            try:
                waiting = await relay.take()
            except Exception as exc:  # the database is away: look again later
                log.warning("reading relayed replies failed (%s)", type(exc).__name__)
                continue
            for room, reply in waiting:
                try:
                    await self.send(room, reply)
                except Exception:
                    log.exception("sending a relayed reply failed")

    async def _login(self) -> None:
        self._store.mkdir(parents=True, exist_ok=True)
        os.chmod(self._store, 0o700)
        saved = self._store / "credentials.json"
        if saved.exists():
            creds = json.loads(saved.read_text())
            await check_store(
                self.client,
                self._store,
                creds["user_id"],
                creds["device_id"],
                creds["access_token"],
            )
            self.client.restore_login(creds["user_id"], creds["device_id"], creds["access_token"])
        elif self._config.access_token:
            self.client.access_token = self._config.access_token
            who = await self.client.whoami()
            if isinstance(who, WhoamiError) or not who.device_id:
                raise ConfigError(f"[matrix] access_token: the homeserver refused it ({who})")
            await check_store(
                self.client, self._store, who.user_id, who.device_id, self._config.access_token
            )
            self.client.restore_login(who.user_id, who.device_id, self._config.access_token)
            self._save_credentials(saved)
        else:
            result = await self.client.login(
                self._config.password, device_name=self._config.device_name
            )
            if isinstance(result, LoginError):
                raise ConfigError(f"[matrix] password: login failed ({result.message})")
            self._save_credentials(saved)
        if self.client.should_upload_keys:
            await self.client.keys_upload()

    def _save_credentials(self, path: Path) -> None:
        data = {
            "user_id": self.client.user_id,
            "device_id": self.client.device_id,
            "access_token": self.client.access_token,
        }
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
