"""The Matrix sync loop, our own: events are handed to the core in tasks (so a handler may wait
for the room it just created to arrive in a later sync), and the sync token is written only
after every event before it was handled, so a restart neither replays old commands nor loses
new ones."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from nio import (
    AsyncClient,
    InviteMemberEvent,
    JoinError,
    MatrixRoom,
    MegolmEvent,
    ReactionEvent,
    RoomEncryptedMedia,
    RoomGetEventError,
    RoomMessageMedia,
    RoomMessageText,
    SyncError,
)

from adapters.matrix.translate import (
    PLATFORM,
    media_ref,
    quoted,
    replied_to,
    strip_fallback,
    to_message,
)
from adapters.ratelimit import Backoff
from bot.chat import Admit, Handler, Invite, Quoted
from bot.errors import ConfigError

log = logging.getLogger(__name__)

SYNC_TIMEOUT_MS = 30_000
ROOM_WAIT = 30.0  # seconds to wait for a room we joined or created to show up in a sync
MAX_BACKOFF = 10.0  # seconds between syncs while the homeserver is down: back soon after
REMEMBERED = 500  # recent button messages and media events kept in memory


class Sync:
    """Syncs until cancelled, handing each new event of interest to the core."""

    def __init__(self, client: AsyncClient, store: Path, admit: Admit) -> None:
        self.client = client
        self._token_file = store / "sync_token"
        self._admit = admit  # the core's answer to an invite
        self._handler: Handler | None = None
        self._batches: deque[tuple[str, set[asyncio.Task[None]]]] = deque()
        self._current: set[asyncio.Task[None]] = set()
        self._synced = asyncio.Event()
        self._buttons: dict[str, dict[str, str]] = {}  # our event id -> reaction -> command
        self._media: dict[str, str] = {}  # media event id -> attachment reference
        self._greet: dict[str, str] = {}  # room joined on invite -> inviter, greeted once synced

    def buttons(self, event_id: str, reactions: dict[str, str]) -> None:
        """Remember which command each reaction on our message ``event_id`` stands for."""
        _remember(self._buttons, event_id, reactions)

    async def run(self, handler: Handler) -> None:
        """Skip the backlog on the first start (answering invites only), then sync forever.

        When cancelled (a stop, or another instance took the sync over), the events still being
        handled are cancelled too and the token stays where it was: whoever syncs next gets
        them again, and the core's claims let it answer each once."""
        self._handler = handler
        self._batches.clear()
        try:
            await self._run()
        finally:
            self._handler = None  # before the cancellations below, which would commit
            batches = [tasks for _, tasks in self._batches] + [self._current]
            cut = {t for tasks in batches for t in tasks if not t.done()}
            self._batches.clear()
            for task in cut:
                task.cancel()
            await asyncio.gather(*cut, return_exceptions=True)

    async def _run(self) -> None:
        since = self._token_file.read_text().strip() if self._token_file.exists() else None
        # A restored token (a restart, or this instance taking the sync over): the client knows
        # no room yet, and an incremental sync brings only the state that changed since, so
        # the first one asks for the full state (nio's advice for a stored token); without the
        # room's m.room.encryption event a reply would go out unencrypted.
        full = since is not None
        if since is None:
            first = await self.client.sync(timeout=0, full_state=True)
            if isinstance(first, SyncError):
                raise ConfigError(f"[matrix] homeserver: first sync failed ({first.message})")
            since = first.next_batch
            self._write_token(since)
            for room_id, room in list(self.client.invited_rooms.items()):
                await self._answer_invite(room_id, room.inviter or "")
        # Only now: the first sync above must not hand old messages to the core.
        self.client.add_event_callback(self._on_message, RoomMessageText)
        self.client.add_event_callback(self._on_undecryptable, MegolmEvent)
        self.client.add_event_callback(self._on_invite, InviteMemberEvent)
        self.client.add_event_callback(self._on_reaction, ReactionEvent)
        self.client.add_event_callback(self._on_media, (RoomMessageMedia, RoomEncryptedMedia))
        backoff = Backoff(MAX_BACKOFF)
        while True:
            self._current = set()
            response = await self.client.sync(
                timeout=SYNC_TIMEOUT_MS, since=since, full_state=True if full else None
            )
            if isinstance(response, SyncError):
                delay = backoff.failed()
                log.warning("Matrix sync failed (%s); trying again in %.0f s", response, delay)
                await asyncio.sleep(delay)
                continue
            backoff.succeeded()
            since, full = response.next_batch, False
            self._batches.append((since, self._current))
            for task in self._current:
                task.add_done_callback(lambda _: self._commit())
            self._commit()
            # Wake whoever waits for a room to appear, and get a fresh event for the next sync.
            self._synced.set()
            self._synced = asyncio.Event()
            await self._housekeeping()

    async def wait_until(self, condition: Callable[[], bool]) -> bool:
        """Wait (through syncs, at most ROOM_WAIT seconds) until ``condition()`` holds."""
        try:
            async with asyncio.timeout(ROOM_WAIT):
                while not condition():
                    await self._synced.wait()
        except TimeoutError:
            return False
        return True

    def _commit(self) -> None:
        # Store the newest token whose events (and all before them) have been handled.
        if self._handler is None:
            return  # this run ended: the next leader owns the token now
        newest = None
        while self._batches and all(t.done() for t in self._batches[0][1]):
            newest = self._batches.popleft()[0]
        if newest is not None:
            self._write_token(newest)

    def _write_token(self, token: str) -> None:
        tmp = self._token_file.with_suffix(".tmp")
        tmp.write_text(token)
        tmp.replace(self._token_file)

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
            room = self.client.rooms[room_id]
            self._spawn(self._hand(room, inviter, "", f"join:{room_id}", joined=True))

    async def _on_message(self, room: MatrixRoom, event: RoomMessageText) -> None:
        if event.sender == self.client.user_id:
            return  # our own messages come back in the sync
        target = replied_to(event)
        text = strip_fallback(event.body) if target else event.body
        self._spawn(self._hand(room, event.sender, text, event.event_id, target))

    async def _on_reaction(self, room: MatrixRoom, event: ReactionEvent) -> None:
        command = self._buttons.get(event.reacts_to, {}).get(event.key)
        if command is None or event.sender == self.client.user_id:
            return
        self._spawn(self._hand(room, event.sender, command, event.event_id))

    async def _on_media(
        self, room: MatrixRoom, event: RoomMessageMedia | RoomEncryptedMedia
    ) -> None:
        _remember(self._media, event.event_id, media_ref(event))

    async def _on_undecryptable(self, room: MatrixRoom, event: MegolmEvent) -> None:
        log.warning("could not decrypt an event in a room; asking the sender's devices for keys")
        try:
            await self.client.request_room_key(event)
        except Exception as exc:  # already requested, or the session is unknown
            log.debug("room key request not sent: %s", type(exc).__name__)

    async def _on_invite(self, room: MatrixRoom, event: InviteMemberEvent) -> None:
        if event.state_key == self.client.user_id and event.membership == "invite":
            await self._answer_invite(room.room_id, event.sender)

    async def _answer_invite(self, room_id: str, inviter: str) -> None:
        if not self._admit(Invite(PLATFORM, inviter, room_id)):
            log.info("declined an invite from a user outside allowed_users")
            await self.client.room_leave(room_id)
            return
        result = await self.client.join(room_id)
        if isinstance(result, JoinError):
            log.warning("joining a room failed: %s", result.message)
            return
        self._greet[room_id] = inviter

    async def _hand(
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
        attachment, quote = await self._replied(room, target) if target else (None, None)
        message = to_message(
            room, sender, text, event_key, attachment, joined=joined, quoted=quote
        )
        try:
            await self._handler(message)
        except Exception:
            log.exception("handling a Matrix event failed")

    async def _replied(self, room: MatrixRoom, event_id: str) -> tuple[str | None, Quoted | None]:
        """Return the file (its reference) or the text of the event a command replies to,
        fetched and, in an encrypted room, decrypted with the room key the bot holds."""
        if event_id in self._media:
            return self._media[event_id], None
        result = await self.client.room_get_event(room.room_id, event_id)
        if isinstance(result, RoomGetEventError):
            log.info("the event a command replies to could not be fetched: %s", result.message)
            return None, None
        event = result.event
        if isinstance(event, MegolmEvent):
            try:
                event = self.client.decrypt_event(event)
            except Exception as exc:  # no room key for it: the bot was not there, say
                log.info("the event a command replies to cannot be decrypted: %s", exc)
                return None, None
        if isinstance(event, RoomMessageMedia | RoomEncryptedMedia):
            return media_ref(event), None
        if isinstance(event, RoomMessageText):
            return None, quoted(room, event)
        return None, None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._current.add(task)


def _remember(memory: dict[str, Any], key: str, value: Any) -> None:
    memory[key] = value
    while len(memory) > REMEMBERED:
        del memory[next(iter(memory))]
