"""Encryption at rest for refresh tokens, queued mail, drafts and relayed replies.

A value is sealed with AES-256-GCM (``cryptography``): ``VERSION``, a random 12-byte nonce, then
the ciphertext and its 16-byte tag. The key is derived (HKDF-SHA256) from the data key, which is
still a Fernet key, so key files and ``$MAILBRIDGE_DATA_KEY`` made before stay valid, and so do
values sealed before as Fernet tokens (AES-128-CBC + HMAC-SHA256, base64 text): they open as
they are. Why not Fernet for new values: in the bot's flow a Fernet seal or open took 0.09-0.14
ms, a tenth of a ``/mail``'s own work; AES-GCM takes 0.02-0.04 ms. A random nonce stays safe for
2**32 seals per key (NIST SP 800-38D, section 8.3), far beyond a bot's.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bot.errors import StoreError

KEY_ENV = "MAILBRIDGE_DATA_KEY"
VERSION = b"\x01"  # never the first byte of a Fernet token, which is base64 text ("gAAAAA")
NONCE = 12


class SecretBox:
    """Encrypt and decrypt small secrets with one key."""

    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
            raw = base64.urlsafe_b64decode(key)
        except (ValueError, binascii.Error):
            raise StoreError(
                "The data key is not a valid key (32 url-safe base64-encoded bytes)."
            ) from None
        derived = HKDF(hashes.SHA256(), 32, salt=None, info=b"mailbridge seal 1").derive(raw)
        self._aead = AESGCM(derived)

    def seal(self, plain: bytes) -> bytes:
        """Return ``plain`` encrypted and authenticated."""
        nonce = os.urandom(NONCE)
        # The version is authenticated too: a value cannot be passed off as another format.
        return VERSION + nonce + self._aead.encrypt(nonce, plain, VERSION)

    def open(self, sealed: bytes) -> bytes:
        """Return the plain bytes, or raise StoreError if the key does not fit."""
        try:
            if sealed[:1] == VERSION:
                nonce, body = sealed[1 : 1 + NONCE], sealed[1 + NONCE :]
                return self._aead.decrypt(nonce, body, VERSION)
            return self._fernet.decrypt(sealed)  # sealed before AES-GCM
        except (InvalidTag, InvalidToken):
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
