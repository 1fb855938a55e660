"""The node key that seals the Secrets and service-account tokens in the agent's meta.db:
AES-256-GCM (the `cryptography` package) with a random key in <agent dir>/meta.key (0600).

Used by metamanager.py for the rows of sealed kinds: a copied meta.db alone reveals none of
them; the key file next to it does (docs/security.md). Each sealed value carries its own nonce
and is bound to its row (kind/namespace/name as authenticated data), so rows cannot be swapped."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["MetaKey", "SEALED_PREFIX", "InvalidTag"]

SEALED_PREFIX = b"k3py-aesgcm1:"  # a sealed value; a plain one is JSON (starts with "{")
_KEY_BYTES = 32
_NONCE_BYTES = 12


class MetaKey:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @classmethod
    def load_or_create(cls, path: str) -> MetaKey:
        """The key in `path`, made (random, 0600) if there is none."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            with open(path, "rb") as f:
                key = f.read()
            if len(key) != _KEY_BYTES:
                raise ValueError(f"{path} is not a {_KEY_BYTES}-byte key") from None
            return cls(key)
        key = AESGCM.generate_key(bit_length=_KEY_BYTES * 8)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
            f.flush()
            os.fsync(f.fileno())
        return cls(key)

    def seal(self, row: bytes, value: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return SEALED_PREFIX + nonce + self._aead.encrypt(nonce, value, row)

    def open(self, row: bytes, sealed: bytes) -> bytes:
        """The value sealed for `row`; InvalidTag for another key, another row or a change."""
        body = sealed[len(SEALED_PREFIX):]
        return self._aead.decrypt(body[:_NONCE_BYTES], body[_NONCE_BYTES:], row)
