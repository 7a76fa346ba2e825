"""Matrix through matrix-nio, end-to-end encrypted rooms included.

Our own sync loop: events are handed to the core in tasks (so a handler may wait for the room it
just created to arrive in a later sync), and the sync token is written to the store only after
every event before it was handled, so a restart neither replays old commands nor loses new ones.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import deque
from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any

from nio import (
    AsyncClientConfig,
    DownloadError,
    InviteMemberEvent,
    JoinError,
    LoginError,
    MatrixRoom,
    MegolmEvent,
    ReactionEvent,
    RoomCreateError,
    RoomEncryptedMedia,
    RoomGetEventError,
    RoomMessageMedia,
    RoomMessageText,
    RoomPreset,
    RoomSendError,
    SyncError,
    WhoamiError,
)
from nio.crypto.attachments import decrypt_attachment

from adapters.link import Link
from adapters.matrix_client import LinkedClient
from bot.chat import Admit, Attachment, AttachmentRefused, Handler, Invite, Message, Reply
from bot.config import MatrixConfig
from bot.errors import ConfigError
from bot.metrics import Metrics

log = logging.getLogger(__name__)

SYNC_TIMEOUT_MS = 30_000
ROOM_WAIT = 30.0  # seconds to wait for a room we joined or created to show up in a sync
# Matrix has no buttons: a reply's buttons become reactions the bot puts on its own message.
REACTIONS = {"Send": "✅", "Cancel": "❌", "Undo": "↩️"}
PROBE_TIMEOUT = 3.0  # seconds a readiness check may wait for the homeserver
REMEMBERED = 500  # recent button messages and media events kept in memory


class MatrixAdapter:
    """The bot on Matrix: direct chats and rooms, encrypted or not."""

    platform = "matrix"

    def __init__(
        self,
        config: MatrixConfig,
        admit: Admit,
        metrics: Metrics | None = None,
    ) -> None:
        self._config = config
        self._admit = admit  # the core's answer to an invite
        self._store = Path(config.store_path)
        self.client = LinkedClient(
            config.homeserver,
            config.user_id,
            link=Link(self.platform, metrics),
            store_path=str(self._store),
            config=AsyncClientConfig(
                store_sync_tokens=False,  # we store the token ourselves, after handling
                encryption_enabled=True,
                request_timeout=SYNC_TIMEOUT_MS / 1000 + 30,
                max_timeouts=None,
                max_timeout_retry_wait_time=5,  # back soon after the homeserver returns
            ),
        )
        self._handler: Handler | None = None
        self._batches: deque[tuple[str, set[asyncio.Task[None]]]] = deque()
        self._current: set[asyncio.Task[None]] = set()
        self._synced = asyncio.Event()
        self._buttons: dict[str, dict[str, str]] = {}  # our event id -> reaction -> command
        self._media: dict[str, str] = {}  # media event id -> attachment reference
        self._greet: dict[str, str] = {}  # room joined on invite -> inviter, greeted once synced

    async def connected(self) -> bool:
        """Whether the bot is logged in and the homeserver answers (/versions, if in doubt)."""
        if self.client.logged_in and not self.client.link.connected:
            await self.client.probe(PROBE_TIMEOUT)
        return bool(self.client.logged_in) and self.client.link.connected

    async def run(self, handler: Handler) -> None:
        """Log in (or restore the device), skip the backlog once, then sync until cancelled."""
        self._handler = handler
        try:
            await self._login()
            await self._sync_loop()
        finally:
            # Never log out: that would delete the device and its encryption keys.
            await self.client.close()

    async def send(self, room: str, reply: Reply) -> None:
        """Send ``reply`` as an ``m.notice`` (HTML with a plain fallback), encrypted if need be;
        buttons become links in the text, or reactions to press."""
        text = reply.text
        reactions = {
            REACTIONS.get(b.label, b.label): b.data for b in reply.buttons if b.data is not None
        }
        for button in reply.buttons:
            if button.url and button.url not in text:
                text += f"\n{button.label}: {button.url}"
        if reactions:
            labels = [
                f"{REACTIONS.get(b.label, b.label)} {b.label}" for b in reply.buttons if b.data
            ]
            text += f"\n(react with {' or '.join(labels)})"
        content: dict[str, Any] = {
            "msgtype": "m.notice",
            "body": text,
            "format": "org.matrix.custom.html",
            "formatted_body": escape(text).replace("\n", "<br>"),
        }
        if reply.reply_to and reply.reply_to.startswith("$"):
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply.reply_to}}
        if not await self._wait_for_room(room):
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
            self._remember(self._buttons, result.event_id, reactions)
            for key in reactions:
                await self.client.room_send(
                    room,
                    "m.reaction",
                    {
                        "m.relates_to": {
                            "rel_type": "m.annotation",
                            "event_id": result.event_id,
                            "key": key,
                        }
                    },
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
        if not await self._wait_until(
            lambda: room_id in self.client.rooms and user_id in self.client.rooms[room_id].users
        ):
            log.warning("the new direct chat did not show up in time")
        return room_id

    async def _login(self) -> None:
        self._store.mkdir(parents=True, exist_ok=True)
        os.chmod(self._store, 0o700)
        saved = self._store / "credentials.json"
        if saved.exists():
            creds = json.loads(saved.read_text())
            self.client.restore_login(creds["user_id"], creds["device_id"], creds["access_token"])
        elif self._config.access_token:
            self.client.access_token = self._config.access_token
            who = await self.client.whoami()
            if isinstance(who, WhoamiError) or not who.device_id:
                raise ConfigError(f"[matrix] access_token: the homeserver refused it ({who})")
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

    async def _sync_loop(self) -> None:
        token_file = self._store / "sync_token"
        since = token_file.read_text().strip() if token_file.exists() else None
        if since is None:
            # First start: learn the rooms but skip their backlog; only invites are answered.
            first = await self.client.sync(timeout=0, full_state=True)
            if isinstance(first, SyncError):
                raise ConfigError(f"[matrix] homeserver: first sync failed ({first.message})")
            since = first.next_batch
            self._write_token(token_file, since)
            for room_id, room in list(self.client.invited_rooms.items()):
                await self._answer_invite(room_id, room.inviter or "", room)
        # Only now: the first sync above must not hand old messages to the core.
        self.client.add_event_callback(self._on_message, RoomMessageText)
        self.client.add_event_callback(self._on_undecryptable, MegolmEvent)
        self.client.add_event_callback(self._on_invite, InviteMemberEvent)
        self.client.add_event_callback(self._on_reaction, ReactionEvent)
        self.client.add_event_callback(self._on_media, (RoomMessageMedia, RoomEncryptedMedia))
        failures = 0
        while True:
            self._current = set()
            response = await self.client.sync(timeout=SYNC_TIMEOUT_MS, since=since)
            if isinstance(response, SyncError):
                failures += 1
                delay = min(2.0**failures, 10.0)  # back soon after an outage
                log.warning("Matrix sync failed (%s); trying again in %.0f s", response, delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            since = response.next_batch
            self._batches.append((since, self._current))
            for task in self._current:
                task.add_done_callback(lambda _: self._commit(token_file))
            self._commit(token_file)
            # Wake whoever waits for a room to appear, and get a fresh event for the next sync.
            self._synced.set()
            self._synced = asyncio.Event()
            await self._housekeeping()

    def _commit(self, token_file: Path) -> None:
        # Store the newest token whose events (and all before them) have been handled.
        newest = None
        while self._batches and all(t.done() for t in self._batches[0][1]):
            newest = self._batches.popleft()[0]
        if newest is not None:
            self._write_token(token_file, newest)

    def _write_token(self, path: Path, token: str) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(token)
        tmp.replace(path)

    async def _housekeeping(self) -> None:
        """What nio's sync_forever does between syncs: keys and to-device messages."""
        if self.client.should_upload_keys:
            await self.client.keys_upload()
        if self.client.should_query_keys:
            await self.client.keys_query()
        if self.client.should_claim_keys:
            await self.client.keys_claim(self.client.get_users_for_key_claiming())
        await self.client.send_to_device_messages()
        for room_id in [r for r in self._greet if r in self.client.rooms]:
            inviter = self._greet.pop(room_id)
            self._spawn(
                self._message(
                    self.client.rooms[room_id], inviter, "", f"join:{room_id}", joined=True
                )
            )

    async def _on_message(self, room: MatrixRoom, event: RoomMessageText) -> None:
        if event.sender == self.client.user_id:
            return  # our own messages come back in the sync
        relates = event.source.get("content", {}).get("m.relates_to", {})
        target = relates.get("m.in_reply_to", {}).get("event_id")
        self._spawn(self._message(room, event.sender, event.body, event.event_id, target))

    async def _on_reaction(self, room: MatrixRoom, event: ReactionEvent) -> None:
        command = self._buttons.get(event.reacts_to, {}).get(event.key)
        if command is None or event.sender == self.client.user_id:
            return
        self._spawn(self._message(room, event.sender, command, event.event_id))

    async def _on_media(
        self, room: MatrixRoom, event: RoomMessageMedia | RoomEncryptedMedia
    ) -> None:
        self._remember(self._media, event.event_id, _media_ref(event))

    async def _on_undecryptable(self, room: MatrixRoom, event: MegolmEvent) -> None:
        log.warning("could not decrypt an event in a room; asking the sender's devices for keys")
        try:
            await self.client.request_room_key(event)
        except Exception as exc:  # already requested, or the session is unknown
            log.debug("room key request not sent: %s", type(exc).__name__)

    async def _on_invite(self, room: MatrixRoom, event: InviteMemberEvent) -> None:
        if event.state_key == self.client.user_id and event.membership == "invite":
            await self._answer_invite(room.room_id, event.sender, room)

    async def _answer_invite(self, room_id: str, inviter: str, room: MatrixRoom) -> None:
        if not self._admit(Invite(self.platform, inviter, room_id)):
            log.info("declined an invite from a user outside allowed_users")
            await self.client.room_leave(room_id)
            return
        result = await self.client.join(room_id)
        if isinstance(result, JoinError):
            log.warning("joining a room failed: %s", result.message)
            return
        self._greet[room_id] = inviter

    async def _message(
        self,
        room: MatrixRoom,
        sender: str,
        text: str,
        event_key: str,
        target: str | None = None,
        *,
        joined: bool = False,
    ) -> None:
        if self._handler is None:
            return
        attachment = await self._attachment(room.room_id, target) if target else None
        message = Message(
            platform=self.platform,
            user_id=sender,
            display_name=room.user_name(sender) or sender,
            room=room.room_id,
            is_direct=room.member_count <= 2,
            text=text,
            event_key=event_key,
            attachment=attachment,
            joined=joined,
        )
        try:
            await self._handler(message)
        except Exception:
            log.exception("handling a Matrix event failed")

    async def _attachment(self, room_id: str, event_id: str) -> str | None:
        """Return the reference of the media event ``event_id`` (remembered, or fetched)."""
        if event_id in self._media:
            return self._media[event_id]
        result = await self.client.room_get_event(room_id, event_id)
        if isinstance(result, RoomGetEventError):
            return None
        event = result.event
        if isinstance(event, MegolmEvent):
            try:
                event = self.client.decrypt_event(event)
            except Exception:
                return None
        if isinstance(event, RoomMessageMedia | RoomEncryptedMedia):
            return _media_ref(event)
        return None

    @staticmethod
    def _remember(memory: dict[str, Any], key: str, value: Any) -> None:
        memory[key] = value
        while len(memory) > REMEMBERED:
            del memory[next(iter(memory))]

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._current.add(task)

    async def _wait_for_room(self, room_id: str) -> bool:
        return await self._wait_until(lambda: room_id in self.client.rooms)

    async def _wait_until(self, condition: Callable[[], bool]) -> bool:
        """Wait (through syncs, at most ROOM_WAIT seconds) until ``condition()`` holds."""
        try:
            async with asyncio.timeout(ROOM_WAIT):
                while not condition():
                    await self._synced.wait()
        except TimeoutError:
            return False
        return True


def _media_ref(event: RoomMessageMedia | RoomEncryptedMedia) -> str:
    content = event.source.get("content", {})
    info = content.get("info") or {}
    ref: dict[str, Any] = {
        "url": event.url,
        "name": content.get("filename") or event.body or "file",
        "mimetype": info.get("mimetype") or "application/octet-stream",
        "size": info.get("size"),
    }
    if isinstance(event, RoomEncryptedMedia):
        ref.update(key=event.key, hashes=event.hashes, iv=event.iv)
        ref["mimetype"] = event.mimetype or ref["mimetype"]
    return json.dumps(ref)
