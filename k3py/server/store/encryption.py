"""Secrets encrypted at rest, as kube-apiserver's encryption providers and K3s's
`--secrets-encryption`: the values of Secrets (SECRETS_PREFIX) are AES-GCM ciphertext in the
datastore (upstream's aesgcm format: `k8s:enc:aesgcm:v1:<key name>:` + 12-byte nonce +
ciphertext and tag, the storage key as authenticated data, so a value cannot be moved to
another key), and plaintext everywhere above the Backend.

The keys live in an EncryptionConfiguration-shaped file (apiserver.config.k8s.io/v1) under
the server's data dir, `server/cred/encryption-config.json`, mode 0600, as K3s keeps it:
the first provider writes, every provider reads (an `identity` provider reads values stored
before encryption was turned on). `EncryptingBackend` wraps any Backend; `EncryptionKeys`
reads, writes and rotates the file (prepare: add a new key; rotate: make it the one that
writes; reencrypt: rewrite every secret with it, then drop the others)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import os
import secrets as _secrets
from collections.abc import AsyncIterator, Awaitable, Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from k3py import pki
from k3py.server.store.backend import Backend, Event, KeyValue, StoreError, WatchResult

__all__ = ["EncryptionKeys", "EncryptingBackend", "EncryptionError", "SECRETS_PREFIX"]

log = logging.getLogger("k3py.store")

SECRETS_PREFIX = "/registry/core/secrets/"  # ResourceRegistry.storage_prefix of secrets
_AESGCM = "k8s:enc:aesgcm:v1:"
_REWRITE_TRIES = 3
_NONCE = 12


class EncryptionError(Exception):
    """A stored value cannot be decrypted with any key we hold (a lost or wrong key)."""


def _key_name() -> str:
    """When it was made, and random: two keys never share a name (no ":": the separator)."""
    return "k3py-" + dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + \
        _secrets.token_hex(3)


def _made_after(name: str, other: str) -> bool:
    """Whether key `name` was made after key `other`, as far as their names tell (True when
    either is not a k3py name)."""
    made, other_made = _made_at(name), _made_at(other)
    return not (made and other_made) or made > other_made


def _made_at(name: str) -> str | None:
    """The time a k3py key name says it was made, as 20 sortable digits (names of an earlier
    k3py have no microseconds); None for a name k3py did not make."""
    head, _, rest = name.partition("-")
    stamp = rest.partition("-")[0].replace("T", "").rstrip("Z")
    if head != "k3py" or not stamp.isdigit() or len(stamp) not in (14, 20):
        return None
    return stamp.ljust(20, "0")


def _write_key_file(path: str, content: bytes) -> None:
    """`path` holds the old or the new content after a crash, never a torn file; 0600, in a
    directory only its owner reads."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    pki.atomic_write(path, content, 0o600)


class EncryptionKeys:
    """The key file and the ciphers made from it. `enabled`: new writes are encrypted."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.keys: list[tuple[str, bytes]] = []  # (name, 32 bytes), the writer first
        self.enabled = False
        self._ciphers: dict[str, AESGCM] = {}

    # ---------------------------------------------------------------- the file

    @classmethod
    def load_or_create(cls, path: str, *, enable: bool) -> EncryptionKeys:
        """The file's keys; with `enable` and no file (or no key), a first key is made and
        written. Without `enable` an existing file still decrypts what it encrypted."""
        keys = cls(path)
        if os.path.exists(path):
            keys._read()
        if enable and not keys.keys:
            keys.keys = [(_key_name(), _secrets.token_bytes(32))]
        keys.enabled = enable and bool(keys.keys)
        keys._ciphers = {name: AESGCM(k) for name, k in keys.keys}
        if enable:
            keys.save()
        return keys

    def _read(self) -> None:
        with open(self.path, "rb") as f:
            self.keys = self._parse(f.read())

    def _parse(self, content: bytes) -> list[tuple[str, bytes]]:
        """The keys of an EncryptionConfiguration's secrets providers; ValueError if bad."""
        try:
            doc = json.loads(content)
            keys = []
            for res in doc.get("resources") or []:
                if "secrets" not in (res.get("resources") or []):
                    continue
                for provider in res.get("providers") or []:
                    for k in (provider.get("aesgcm") or {}).get("keys") or []:
                        name, secret = str(k["name"]), base64.b64decode(k["secret"])
                        if ":" in name or len(secret) not in (16, 24, 32):
                            raise ValueError(f"key {name!r} must have no ':' and 16, 24 or "
                                             f"32 bytes (base64)")
                        keys.append((name, secret))
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise ValueError(f"{self.path}: not an EncryptionConfiguration of aesgcm keys "
                             f"({e})") from None
        return keys

    def content(self) -> bytes:
        with open(self.path, "rb") as f:
            return f.read()

    def replace(self, content: bytes) -> None:
        """Take the keys of another server's file (`content`, checked before it is written
        here). Whether new writes are encrypted stays this server's own setting."""
        keys = self._parse(content)
        _write_key_file(self.path, content)
        self.keys = keys
        self._ciphers = {name: AESGCM(k) for name, k in self.keys}
        self.enabled = self.enabled and bool(self.keys)

    def draft(self) -> EncryptionKeys:
        """The same keys and setting in memory only: a step's changes, before they are
        stored (`render` gives its file)."""
        other = EncryptionKeys("")
        other.keys, other.enabled = list(self.keys), self.enabled
        other._ciphers = dict(self._ciphers)
        return other

    def writer(self) -> str | None:
        """The name of the key new writes are encrypted with; None when they are not."""
        return self.keys[0][0] if self.enabled and self.keys else None

    def fingerprint(self) -> str:
        """A short hash of the keys and their order (the first one writes): equal on two
        servers exactly when they hold the same keys with the same writer. It gives no key
        away."""
        h = hashlib.sha256()
        for name, k in self.keys:
            h.update(name.encode() + b":" + base64.b64encode(k) + b"\n")
        return h.hexdigest()[:16]

    def render(self) -> bytes:
        """The key file: an EncryptionConfiguration, the writer first."""
        doc = {"kind": "EncryptionConfiguration", "apiVersion": "apiserver.config.k8s.io/v1",
               "resources": [{"resources": ["secrets"], "providers": [
                   *([{"aesgcm": {"keys": [
                       {"name": n, "secret": base64.b64encode(k).decode()}
                       for n, k in self.keys]}}] if self.keys else []),
                   {"identity": {}}]}]}
        return json.dumps(doc, indent=2).encode()

    def save(self) -> None:
        if self.path:  # a draft has none
            _write_key_file(self.path, self.render())

    # ---------------------------------------------------------------- rotation

    def prepare(self) -> str:
        """Add a new key after the current writer (it reads, it does not write yet)."""
        name = _key_name()
        self.keys.append((name, _secrets.token_bytes(32)))
        self._ciphers[name] = AESGCM(self.keys[-1][1])
        self.save()
        return name

    def rotate(self) -> str:
        """Make the newest key (the last one, prepared after the writer) the writer. k3py's
        key names say when they were made, so a second rotate cannot go back to the old one."""
        if len(self.keys) < 2 or not _made_after(self.keys[-1][0], self.keys[0][0]):
            raise ValueError("no key prepared since the last rotation: run prepare first")
        self.keys.insert(0, self.keys.pop())
        self.enabled = True
        self.save()
        return self.keys[0][0]

    def drop_old(self) -> list[str]:
        """After a reencrypt: keep only the writer."""
        dropped = [n for n, _ in self.keys[1:]]
        self.keys = self.keys[:1]
        self._ciphers = {n: AESGCM(k) for n, k in self.keys}
        self.save()
        return dropped

    def status(self) -> dict:
        return {"encryption": "enabled" if self.enabled else "disabled",
                "keys": [n for n, _ in self.keys],
                "writer": self.keys[0][0] if self.enabled else "identity"}

    # ---------------------------------------------------------------- values

    def encrypt(self, key: str, value: bytes) -> bytes:
        if not self.enabled:
            return value
        name, _ = self.keys[0]
        nonce = _secrets.token_bytes(_NONCE)
        sealed = self._ciphers[name].encrypt(nonce, value, key.encode())
        return f"{_AESGCM}{name}:".encode() + nonce + sealed

    def decrypt(self, key: str, value: bytes) -> bytes:
        if not value.startswith(b"k8s:enc:"):
            return value  # stored before encryption (identity)
        head, sep, rest = value[len(_AESGCM):].partition(b":")
        if not value.startswith(_AESGCM.encode()) or not sep:
            raise EncryptionError(f"{key}: stored with an unknown provider")
        cipher = self._ciphers.get(head.decode(errors="replace"))
        if cipher is None:
            raise EncryptionError(f"{key}: encrypted with key {head.decode(errors='replace')!r}"
                                  f", which is not in {self.path}")
        try:
            return cipher.decrypt(rest[:_NONCE], rest[_NONCE:], key.encode())
        except Exception as e:  # noqa: BLE001 - InvalidTag: a wrong key or a tampered value
            raise EncryptionError(f"{key}: cannot decrypt ({type(e).__name__})") from None

    def written_by_writer(self, value: bytes) -> bool:
        """The value is already in the form a write would give it now."""
        if not self.enabled:
            return not value.startswith(b"k8s:enc:")
        return value.startswith(f"{_AESGCM}{self.keys[0][0]}:".encode())


class EncryptingBackend:
    """A Backend whose values under `prefix` (the Secrets) are encrypted in the wrapped one."""

    def __init__(self, inner: Backend, keys: EncryptionKeys,
                 prefix: str = SECRETS_PREFIX) -> None:
        self.inner = inner
        self.keys = keys
        self.prefix = prefix
        # raises StoreUnavailableError when this server may not hold the cluster's current
        # keys (secretsencrypt.KeySync.fresh): no secret is written with a stale key
        self.gate: Callable[[], Awaitable[None]] | None = None

    def __getattr__(self, name: str):  # anything else of the driver (stats, paths)
        return getattr(self.inner, name)

    async def _sealed(self, key: str, value: bytes) -> tuple[bytes, str | None]:
        """The value as stored, and the key it was encrypted with (None: not encrypted)."""
        if not key.startswith(self.prefix):
            return value, None
        if self.gate is not None:
            await self.gate()
        return self.keys.encrypt(key, value), self.keys.writer()

    async def _rewritten(self, key: str, value: bytes, writer: str | None,
                         revision: int) -> tuple[int, KeyValue | None, bool] | None:
        """A write that landed after this server's writer changed (it was on its way while
        another server rotated, and its key may be dropped next): written again with the
        current writer, from the revision it landed at. None when it needs nothing."""
        if writer is None or writer == self.keys.writer():
            return None
        for attempt in range(1, _REWRITE_TRIES + 1):
            try:
                rev, kv, ok = await self.inner.update(key, self.keys.encrypt(key, value),
                                                      revision)
                break
            except StoreError as e:
                if attempt == _REWRITE_TRIES:
                    log.error("%s was written with key %s while the keys changed, and could "
                              "not be written again with %s (%s): write it again", key,
                              writer, self.keys.writer(), e)
                    raise
        return (rev, self._out(kv), ok) if ok else None  # not ok: a newer write won

    def _covers(self, prefix: str) -> bool:
        return prefix.startswith(self.prefix) or self.prefix.startswith(prefix)

    def _out(self, kv: KeyValue | None) -> KeyValue | None:
        if kv is None or not kv.key.startswith(self.prefix):
            return kv
        return KeyValue(kv.key, kv.create_revision, kv.mod_revision,
                        self.keys.decrypt(kv.key, kv.value))

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def current_revision(self) -> int:
        return await self.inner.current_revision()

    async def compact_revision(self) -> int:
        return await self.inner.compact_revision()

    async def get(self, key: str, revision: int = 0) -> tuple[int, KeyValue | None]:
        rev, kv = await self.inner.get(key, revision)
        return rev, self._out(kv)

    async def list(self, prefix: str, start_key: str = "", limit: int = 0,
                   revision: int = 0) -> tuple[int, list[KeyValue]]:
        rev, kvs = await self.inner.list(prefix, start_key, limit, revision)
        if self._covers(prefix):
            kvs = [self._out(kv) for kv in kvs]  # type: ignore[misc]
        return rev, kvs

    async def count(self, prefix: str) -> tuple[int, int]:
        return await self.inner.count(prefix)

    async def create(self, key: str, value: bytes) -> int:
        sealed, writer = await self._sealed(key, value)
        rev = await self.inner.create(key, sealed)
        again = await self._rewritten(key, value, writer, rev)
        return again[0] if again else rev

    async def update(self, key: str, value: bytes,
                     revision: int) -> tuple[int, KeyValue | None, bool]:
        sealed, writer = await self._sealed(key, value)
        rev, kv, ok = await self.inner.update(key, sealed, revision)
        again = await self._rewritten(key, value, writer, rev) if ok else None
        return again or (rev, self._out(kv), ok)

    async def delete(self, key: str, revision: int = 0) -> tuple[int, KeyValue | None, bool]:
        rev, kv, ok = await self.inner.delete(key, revision)
        return rev, self._out(kv), ok

    async def watch(self, prefix: str, revision: int) -> WatchResult:
        inner = await self.inner.watch(prefix, revision)
        if not self._covers(prefix):
            return inner
        return _DecryptingWatch(inner, self)

    async def compact(self, revision: int) -> int:
        return await self.inner.compact(revision)

    async def reencrypt(self, passes: int = 5) -> int:
        """Rewrite every secret not yet in the writer's form; the number rewritten. A pass
        that lost a secret to a write meanwhile looks again (that write may have been
        encrypted before the writer changed), until a pass finds all in the writer's form;
        EncryptionError if that takes more than `passes`."""
        done = 0
        for _ in range(passes):
            _, kvs = await self.inner.list(self.prefix)
            behind = [kv for kv in kvs if not self.keys.written_by_writer(kv.value)]
            if not behind:
                return done
            for kv in behind:
                plain = self.keys.decrypt(kv.key, kv.value)
                _, _, ok = await self.inner.update(kv.key, self.keys.encrypt(kv.key, plain),
                                                   kv.mod_revision)
                done += ok
        raise EncryptionError(f"secrets kept changing while they were re-encrypted "
                              f"({passes} passes): run reencrypt again")


class _DecryptingWatch:
    def __init__(self, inner: WatchResult, backend: EncryptingBackend) -> None:
        self.inner = inner
        self.backend = backend

    @property
    def current_revision(self) -> int:
        return self.inner.current_revision

    @property
    def compact_revision(self) -> int:
        return self.inner.compact_revision

    async def events(self) -> AsyncIterator[list[Event]]:
        async for batch in self.inner.events():
            yield [e for e in map(self._open, batch) if e is not None]

    def _open(self, e: Event) -> Event | None:
        """The event decrypted. A value under a key no longer held (a write that landed late
        and was written again, or history from before a reencrypt and drop) is passed over
        with a warning, not raised: a later revision of the key supersedes it, and a raise
        would end every watch that passes that revision, again at each resume."""
        out = self.backend._out
        try:
            kv = out(e.kv) or e.kv
        except EncryptionError as err:
            log.warning("watch: revision %d passed over: %s", e.kv.mod_revision, err)
            return None
        try:
            prev = out(e.prev_kv)
        except EncryptionError:
            prev = None
        return Event(e.create, e.delete, kv, prev)

    def cancel(self) -> None:
        self.inner.cancel()
