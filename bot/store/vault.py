"""Encryption at rest for refresh tokens and queued mail (Fernet: AES-128-CBC + HMAC-SHA256)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from bot.errors import StoreError

KEY_ENV = "MAILBRIDGE_DATA_KEY"


class SecretBox:
    """Encrypt and decrypt small secrets with one key."""

    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError:
            raise StoreError(
                "The data key is not a valid key (32 url-safe base64-encoded bytes)."
            ) from None

    def seal(self, plain: bytes) -> bytes:
        """Return ``plain`` encrypted and authenticated."""
        return self._fernet.encrypt(plain)

    def open(self, sealed: bytes) -> bytes:
        """Return the plain bytes, or raise StoreError if the key does not fit."""
        try:
            return self._fernet.decrypt(sealed)
        except InvalidToken:
            raise StoreError(
                "Stored secrets cannot be decrypted with this data key: was the key file "
                f"replaced, or {KEY_ENV} changed?"
            ) from None


def load_key(key_file: Path | None, env: dict[str, str] | None = None) -> bytes:
    """Return the key from $MAILBRIDGE_DATA_KEY, else from ``key_file`` (created 0600)."""
    env = dict(os.environ) if env is None else env
    if env.get(KEY_ENV):
        return env[KEY_ENV].encode("ascii")
    if key_file is None:  # in-memory database: a key for this run only
        return Fernet.generate_key()
    try:
        return key_file.read_bytes().strip()
    except FileNotFoundError:
        pass
    key = Fernet.generate_key()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    return key
