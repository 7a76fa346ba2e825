"""A real Synapse homeserver for the Matrix tests, and nio clients that play the humans.

``Synapse`` runs ``python -m synapse.app.homeserver`` from this venv on 127.0.0.1 (SQLite, no
federation, rate limits opened, logs in its data folder). The helpers below drive matrix-nio the
way a person in Element would: create a direct chat, accept an invite, send text (encrypted when
the room is), wait for a reply. They hold no event loop of their own, so one session-scoped server
serves function-scoped async tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nio import (
    AsyncClient,
    AsyncClientConfig,
    ErrorResponse,
    MatrixRoom,
    MegolmEvent,
    RoomMessage,
    RoomPreset,
    SyncError,
)
from nio.exceptions import EncryptionError

from tests.botproc import free_port

SERVER_NAME = "localhost"
START_TIMEOUT = 60.0
_OPEN = {"per_second": 1000, "burst_count": 1000}
# Every limiter Synapse 1.163 reads, opened wide: tests must never meet a 429 by accident.
RATE_LIMITS: dict[str, Any] = {
    "rc_message": _OPEN,
    "rc_registration": _OPEN,
    "rc_registration_token_validity": _OPEN,
    "rc_login": {"address": _OPEN, "account": _OPEN, "failed_attempts": _OPEN},
    "rc_admin_redaction": _OPEN,
    "rc_joins": {"local": _OPEN, "remote": _OPEN},
    "rc_joins_per_room": _OPEN,
    "rc_key_requests": _OPEN,
    "rc_3pid_validation": _OPEN,
    "rc_invites": {"per_room": _OPEN, "per_user": _OPEN, "per_issuer": _OPEN},
    "rc_third_party_invite": _OPEN,
    "rc_media_create": _OPEN,
    "rc_presence": {"per_user": _OPEN},
    "rc_delayed_event_mgmt": _OPEN,
    "rc_room_creation": _OPEN,
    "rc_reports": _OPEN,
    "rc_user_directory": _OPEN,
    "rc_profile": _OPEN,
}


class SynapseError(RuntimeError):
    """Synapse did not start, or the homeserver refused what a test asked."""


@dataclass(frozen=True)
class RegisteredUser:
    """A Matrix account made through the admin API, with the device it was registered on."""

    user_id: str
    password: str
    access_token: str
    device_id: str


@dataclass(frozen=True)
class ReceivedMessage:
    """An ``m.room.message`` as its recipient saw it, decrypted if it came encrypted."""

    room_id: str
    event_id: str
    sender: str
    body: str
    msgtype: str
    encrypted: bool  # the event on the wire was m.room.encrypted
    in_reply_to: str | None
    content: dict[str, Any]


class Synapse:
    """One homeserver process with its config, database and log in ``data_dir``."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = data_dir / "homeserver.yaml"
        self.log_path = data_dir / "homeserver.log"
        self.startup_seconds = 0.0  # how long the last start took, for the curious
        self._secret = secrets.token_hex(16)
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Synapse:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start Synapse and return once its client API answers (blocking)."""
        if self._proc is not None and self._proc.poll() is None:
            raise SynapseError("Synapse is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self._config(), indent=1))  # JSON is YAML
        began = time.monotonic()
        # The signing key is generated on first start: no --generate-keys run is needed.
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "synapse.app.homeserver", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
            )
        try:
            self._wait_ready(began + timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if Synapse is still there after ``grace`` seconds (blocking)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    async def restart(self, downtime: float = 0.0) -> None:
        """Stop and start again on the same port and data; users, devices and rooms remain."""
        async with self.outage():
            await asyncio.sleep(downtime)

    @asynccontextmanager
    async def outage(self) -> AsyncIterator[None]:
        """Keep Synapse stopped while the body runs; the event loop runs on meanwhile."""
        await asyncio.to_thread(self.stop)
        try:
            yield
        finally:
            await asyncio.to_thread(self.start)

    def logs(self, tail: int = 4000) -> str:
        """The last ``tail`` characters of Synapse's log."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-tail:]

    def user_id(self, localpart: str) -> str:
        return f"@{localpart}:{SERVER_NAME}"

    async def register(
        self, localpart: str | None = None, password: str | None = None, admin: bool = False
    ) -> RegisteredUser:
        """Create an account through the shared-secret admin API (a fresh name by default)."""
        localpart = localpart or f"u{secrets.token_hex(5)}"
        password = password or secrets.token_urlsafe(12)
        url = f"{self.url}/_synapse/admin/v1/register"
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with http.get(url) as resp:
                nonce = (await resp.json())["nonce"]
            mac = hmac.new(self._secret.encode(), digestmod=hashlib.sha1)
            role = b"admin" if admin else b"notadmin"
            mac.update(b"\0".join([nonce.encode(), localpart.encode(), password.encode(), role]))
            body = {
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": admin,
                "mac": mac.hexdigest(),
            }
            async with http.post(url, json=body) as resp:
                data = await resp.json()
                if resp.status != 200:
                    raise SynapseError(f"registering {localpart} failed: {resp.status} {data}")
        return RegisteredUser(data["user_id"], password, data["access_token"], data["device_id"])

    @asynccontextmanager
    async def client(
        self, user: RegisteredUser, *, encrypted: bool = False
    ) -> AsyncIterator[AsyncClient]:
        """A nio client logged in on a new device of ``user``, keys uploaded, synced once.

        Messages that arrived before it logged in are not in its inbox (see wait_for_message).
        """
        store = tempfile.mkdtemp(prefix="nio-", dir=self.data_dir) if encrypted else ""
        client = AsyncClient(self.url, user.user_id, store_path=store, config=fail_fast(encrypted))
        try:
            _check(await client.login(user.password, device_name="test human"), "login")
            if encrypted:
                _check(await client.keys_upload(), "keys_upload")
            await _sync_once(client, 0)
            _inbox(client).clear()  # the backlog is history, not news
            yield client
        finally:
            await client.close()

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None
        versions = f"{self.url}/_matrix/client/versions"
        while True:
            if self._proc.poll() is not None:
                raise SynapseError(
                    f"Synapse exited with code {self._proc.returncode}; log:\n{self.logs()}"
                )
            try:
                with urllib.request.urlopen(versions, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise SynapseError(f"Synapse did not answer at {versions}; log:\n{self.logs()}")
            time.sleep(0.05)

    def _config(self) -> dict[str, Any]:
        data = str(self.data_dir)
        return {
            "server_name": SERVER_NAME,
            "public_baseurl": f"{self.url}/",
            "report_stats": False,
            "pid_file": f"{data}/homeserver.pid",
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],  # loopback only
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],  # no federation
                }
            ],
            "database": {"name": "sqlite3", "args": {"database": f"{data}/homeserver.db"}},
            "media_store_path": f"{data}/media_store",
            "signing_key_path": f"{data}/signing.key",
            "registration_shared_secret": self._secret,
            "enable_registration": False,
            "bcrypt_rounds": 4,  # the default 12 costs ~0.25 s per register or login
            "trusted_key_servers": [],  # never contact matrix.org
            "suppress_key_server_warning": True,
            "federation_domain_whitelist": [],
            "presence": {"enabled": False},
            "url_preview_enabled": False,
            "enable_metrics": False,
            **RATE_LIMITS,
        }


def fail_fast(encrypted: bool = False) -> AsyncClientConfig:
    """nio settings for tests: errors come back at once instead of being retried for ever."""
    return AsyncClientConfig(
        max_limit_exceeded=0,  # a 429 is returned as an ErrorResponse (default: sleep, retry)
        max_timeouts=0,  # a timeout or refused connection raises (default: retry for ever)
        request_timeout=15,  # per request; sync() uses its long-poll timeout + 15 s instead
        encryption_enabled=encrypted,
        store_sync_tokens=False,
    )


@pytest.fixture(scope="session", name="synapse")
def synapse_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synapse]:
    """One homeserver for the whole session; tests register fresh users on it."""
    with Synapse(tmp_path_factory.mktemp("synapse")) as server:
        yield server


# --- the simulated human -------------------------------------------------------------------


@dataclass
class _Inbox:
    messages: list[ReceivedMessage] = field(default_factory=list)
    undecrypted: list[tuple[str, MegolmEvent]] = field(default_factory=list)

    def clear(self) -> None:
        self.messages.clear()
        self.undecrypted.clear()

    async def on_event(self, room: MatrixRoom, event: RoomMessage | MegolmEvent) -> None:
        if isinstance(event, MegolmEvent):
            self.undecrypted.append((room.room_id, event))  # its key may come in a later sync
        else:
            self.messages.append(_received(room.room_id, event))

    def retry_decryption(self, client: AsyncClient) -> None:
        waiting, self.undecrypted = self.undecrypted, []
        for room_id, event in waiting:
            try:
                decrypted = client.decrypt_event(event)
            except EncryptionError:
                self.undecrypted.append((room_id, event))
                continue
            if isinstance(decrypted, RoomMessage):
                self.messages.append(_received(room_id, decrypted))


_inboxes: weakref.WeakKeyDictionary[AsyncClient, _Inbox] = weakref.WeakKeyDictionary()


def _inbox(client: AsyncClient) -> _Inbox:
    if client not in _inboxes:
        inbox = _inboxes[client] = _Inbox()
        client.add_event_callback(inbox.on_event, (RoomMessage, MegolmEvent))
    return _inboxes[client]


def _received(room_id: str, event: RoomMessage) -> ReceivedMessage:
    content: dict[str, Any] = event.source.get("content", {})
    relates = content.get("m.relates_to") or {}
    return ReceivedMessage(
        room_id=room_id,
        event_id=event.event_id,
        sender=event.sender,
        body=str(content.get("body", "")),
        msgtype=str(content.get("msgtype", "")),
        encrypted=bool(event.decrypted),
        in_reply_to=(relates.get("m.in_reply_to") or {}).get("event_id"),
        content=content,
    )


def _check(response: Any, what: str) -> Any:
    # nio reports failures as ErrorResponse objects, never as exceptions.
    if isinstance(response, ErrorResponse):
        raise SynapseError(f"{what} failed: {response.status_code} {response.message}")
    return response


async def _sync_once(client: AsyncClient, wait: float) -> None:
    """One sync (long-polling up to ``wait`` s), then the key chores sync_forever would do."""
    _inbox(client)
    response = await client.sync(timeout=max(1, int(min(wait, 10.0) * 1000)))
    if isinstance(response, SyncError):
        raise SynapseError(f"sync failed: {response.status_code} {response.message}")
    if client.olm:
        if client.should_upload_keys:
            _check(await client.keys_upload(), "keys_upload")
        if client.should_query_keys:
            _check(await client.keys_query(), "keys_query")
        if client.should_claim_keys:
            users = client.get_users_for_key_claiming()
            _check(await client.keys_claim(users), "keys_claim")
        await client.send_to_device_messages()
        _inbox(client).retry_decryption(client)


async def sync_until(
    client: AsyncClient, predicate: Callable[[AsyncClient], bool], timeout: float = 20.0
) -> None:
    """Sync until ``predicate(client)`` holds over the state nio built from the events."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate(client):
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise TimeoutError(f"{client.user_id}: condition not met after {timeout} s")
        await _sync_once(client, remaining)


async def wait_for_message(
    client: AsyncClient,
    room_id: str | None,
    predicate: Callable[[ReceivedMessage], bool] = lambda _: True,
    timeout: float = 20.0,
) -> ReceivedMessage:
    """Return (and take from the inbox) the first message from someone else that matches.

    The inbox keeps what every sync of ``client`` brought since it was created, so a message that
    arrived while waiting for another one is still found.
    """
    inbox = _inbox(client)
    found: list[ReceivedMessage] = []

    def match(_: AsyncClient) -> bool:
        for message in inbox.messages:
            if (
                message.sender != client.user_id
                and room_id in (None, message.room_id)
                and predicate(message)
            ):
                inbox.messages.remove(message)
                found.append(message)
                return True
        return False

    await sync_until(client, match, timeout)
    return found[0]


async def create_dm(client: AsyncClient, invitee: str, encrypted: bool = True) -> str:
    """Create a direct chat inviting ``invitee``, list it in ``m.direct``; return its id."""
    initial_state = []
    if encrypted:
        algorithm = {"algorithm": "m.megolm.v1.aes-sha2"}
        initial_state.append({"type": "m.room.encryption", "state_key": "", "content": algorithm})
    response = await client.room_create(
        is_direct=True,
        invite=[invitee],
        preset=RoomPreset.trusted_private_chat,
        initial_state=initial_state,
    )
    room_id: str = _check(response, "room_create").room_id
    # is_direct only marks the invite; each side lists the room in its own m.direct (as Element).
    direct = await client.list_direct_rooms()
    rooms: dict[str, list[str]] = {} if isinstance(direct, ErrorResponse) else dict(direct.rooms)
    rooms[invitee] = [*rooms.get(invitee, []), room_id]
    path = f"/_matrix/client/v3/user/{client.user_id}/account_data/m.direct"
    headers = {
        "Authorization": f"Bearer {client.access_token}",
        "Content-Type": "application/json",
    }
    async with await client.send("PUT", path, json.dumps(rooms), headers) as resp:
        if resp.status != 200:
            raise SynapseError(f"setting m.direct failed: {resp.status} {await resp.text()}")
    await sync_until(client, lambda c: room_id in c.rooms)
    return room_id


async def wait_for_invite(
    client: AsyncClient, inviter: str | None = None, timeout: float = 20.0
) -> str:
    """Return the id of a room ``client`` is invited to (by ``inviter``, if given)."""

    def invited(c: AsyncClient) -> list[str]:
        return [r for r, room in c.invited_rooms.items() if inviter in (None, room.inviter)]

    await sync_until(client, lambda c: bool(invited(c)), timeout)
    return invited(client)[0]


async def join_room(client: AsyncClient, room_id: str, timeout: float = 20.0) -> None:
    """Accept an invite (or join) and sync until the room is among the client's rooms."""
    _check(await client.join(room_id), "join")
    await sync_until(client, lambda c: room_id in c.rooms, timeout)


async def send_text(
    client: AsyncClient, room_id: str, text: str, reply_to: str | None = None
) -> str:
    """Send ``m.text`` as a person would, encrypting for every device in an encrypted room."""
    await sync_until(client, lambda c: room_id in c.rooms)
    content: dict[str, Any] = {"msgtype": "m.text", "body": text}
    if reply_to:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
    if client.olm and client.should_query_keys:
        # room_send queries keys only for rooms whose member list it never fetched; a member who
        # joined since would otherwise get no room key.
        _check(await client.keys_query(), "keys_query")
    # Test devices are never verified: share the room key with them anyway (else nio raises).
    response = await client.room_send(
        room_id, "m.room.message", content, ignore_unverified_devices=True
    )
    return str(_check(response, "room_send").event_id)
