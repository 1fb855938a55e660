"""Bootstrap data that servers on one datastore share (K3s's storage bootstrap): the two CAs,
the service-account signing key and the secrets-encryption keys, encrypted with the join
token's secret and kept in the store under /bootstrap/<hash of the secret>.

k3py.server.main.serve calls `load` before the TLS dir is filled (the datastore's files
replace the local ones, so a joining server serves the first one's CAs and tokens) and `save`
after (the first server writes what it made). The format follows K3s: a JSON map of file name
to {timestamp, content}, sealed with AES-GCM under a PBKDF2-SHA1 key (4096 rounds, 8-byte
salt) and stored as `salt:base64(nonce + ciphertext)`."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import time

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from k3py import pki
from k3py.config import ServerConfig
from k3py.server.store.backend import Backend, KeyExistsError

__all__ = ["BootstrapError", "PREFIX", "FILES", "storage_key", "encrypt", "decrypt", "secret_of",
           "load", "save", "stored_file", "replace_file"]

log = logging.getLogger("k3py.server")

PREFIX = "/bootstrap/"
# what every server must share, relative to <data-dir>/server; the serving and admin
# certificates are not here: each server issues its own from the shared CAs (its own SANs)
FILES = ("tls/server-ca.crt", "tls/server-ca.key", "tls/client-ca.crt", "tls/client-ca.key",
         "tls/service.key", "cred/encryption-config.json")
_ROUNDS = 4096
_WRITE_TRIES = 5  # conditional updates lost to other servers' before giving up


class BootstrapError(Exception):
    """The datastore's bootstrap data cannot be used with this server's token: one line."""


def storage_key(secret: str) -> str:
    """/bootstrap/ + the first 12 hex digits of sha256(secret), as K3s names it."""
    return PREFIX + hashlib.sha256(secret.encode()).hexdigest()[:12]


def _cipher(secret: str, salt: str) -> AESGCM:
    kdf = PBKDF2HMAC(algorithm=hashes.SHA1(), length=32, salt=salt.encode(),  # noqa: S303
                     iterations=_ROUNDS)
    return AESGCM(kdf.derive(secret.encode()))


def encrypt(secret: str, plaintext: bytes) -> bytes:
    salt = secrets.token_hex(8)
    nonce = secrets.token_bytes(12)
    sealed = nonce + _cipher(secret, salt).encrypt(nonce, plaintext, None)
    return f"{salt}:{base64.b64encode(sealed).decode()}".encode()


def decrypt(secret: str, data: bytes) -> bytes:
    """The plaintext; InvalidTag when `secret` is not the one it was sealed with, ValueError
    when `data` is not of encrypt's form."""
    salt, sep, sealed_b64 = data.decode().partition(":")
    if not sep:
        raise ValueError("bootstrap data is not of the form salt:ciphertext")
    sealed = base64.b64decode(sealed_b64)
    return _cipher(secret, salt).decrypt(sealed[:12], sealed[12:], None)


def secret_of(config: ServerConfig) -> str:
    """The join token's secret: --token, else the server's token file; "" for a first start
    without a token (save makes one)."""
    if config.token.strip():
        return pki.parse_token(config.token)[1]
    try:
        with open(config.token_path) as f:
            return pki.parse_token(f.read())[1]
    except FileNotFoundError:
        return ""


def _read_files(server_dir: str) -> dict[str, dict]:
    out = {}
    for name in FILES:
        path = os.path.join(server_dir, name)
        try:
            with open(path, "rb") as f:
                content = f.read()
        except FileNotFoundError:
            continue
        out[name] = {"timestamp": int(os.stat(path).st_mtime),
                     "content": base64.b64encode(content).decode()}
    return out


def _write_files(server_dir: str, files: dict[str, dict]) -> None:
    for name in FILES:
        if name not in files:
            continue
        content = base64.b64decode(files[name]["content"])
        path = os.path.join(server_dir, name)
        if os.path.exists(path):
            with open(path, "rb") as f:
                if f.read() == content:
                    continue
            log.warning("replacing %s with the cluster's (from the datastore)", path)
        pki.atomic_write(path, content, 0o644 if name.endswith(".crt") else 0o600)


_ADVICE = ("start this server with the cluster's token: --token, from 'k3py token' (or "
           "<data-dir>/server/token) on a server of that cluster")


async def load(backend: Backend, config: ServerConfig) -> None:
    """Write the datastore's bootstrap data into this server's data dir, if there is some.
    Raises BootstrapError when the token does not open it, and for --server (a joining
    server) when there is none or no token is given."""
    secret = secret_of(config)
    _, found = await backend.list(PREFIX)
    if config.server and not secret:
        raise BootstrapError(f"--server {config.server} joins a cluster: {_ADVICE}")
    if not found:
        if config.server:
            raise BootstrapError(f"--server {config.server}: the datastore holds no cluster's "
                                 f"bootstrap data yet; start the first server without --server")
        return
    if not secret:
        raise BootstrapError(f"the datastore already holds a cluster: {_ADVICE}")
    mine = [kv for kv in found if kv.key == storage_key(secret)]
    if not mine:
        raise BootstrapError(f"the datastore's bootstrap data is encrypted with a different "
                             f"token: {_ADVICE}")
    try:
        files = json.loads(decrypt(secret, mine[0].value))
    except (InvalidTag, ValueError) as e:
        raise BootstrapError(f"the datastore's bootstrap data does not open with this token "
                             f"({type(e).__name__}): {_ADVICE}") from None
    _write_files(config.server_dir, files)
    _check_token_ca(config)


def _check_token_ca(config: ServerConfig) -> None:
    """A full K10 token names the CA it trusts: it must be this cluster's."""
    given_hash = pki.parse_token(config.token)[0] if config.token.strip() else None
    if given_hash is None:
        return
    with open(os.path.join(config.tls_dir, "server-ca.crt"), "rb") as f:
        if pki.token_ca_hash(f.read()) != given_hash:
            raise BootstrapError("the token's CA hash is not the cluster's CA (from the "
                                 f"datastore): {_ADVICE}")


async def save(backend: Backend, config: ServerConfig, token: str) -> bool:
    """Store this server's bootstrap data, encrypted with `token`'s secret, when the datastore
    lacks it or lacks one of its files (a key made here since). A file the datastore holds is
    never replaced here: a server starting while another rotates its keys must not put the old
    ones back (secretsencrypt.KeySync replaces them, conditionally). False when another server
    wrote first in the meantime: the caller loads theirs and starts its certificates again."""
    secret = pki.parse_token(token)[1]
    key = storage_key(secret)
    files = _read_files(config.server_dir)
    for _ in range(_WRITE_TRIES):
        _, kv = await backend.get(key)
        if kv is None:
            try:
                await backend.create(key, encrypt(secret, json.dumps(files).encode()))
            except KeyExistsError:
                return False
            log.info("bootstrap data written to the datastore (%s)", key)
            return True
        stored = json.loads(decrypt(secret, kv.value))
        missing = {n: f for n, f in files.items() if n not in stored}
        if not missing:
            return True
        _, _, ok = await backend.update(key, encrypt(secret, json.dumps(
            {**stored, **missing}).encode()), kv.mod_revision)
        if ok:
            log.info("bootstrap data updated in the datastore (%s: %s)", key,
                     ", ".join(missing))
            return True
    raise BootstrapError(f"the datastore's bootstrap data ({key}) kept changing under this "
                         f"server's write; start this server again")


async def stored_file(backend: Backend, secret: str, name: str, unless: int = -1
                      ) -> tuple[int, bytes | None]:
    """One of FILES as the datastore's bootstrap data holds it now: (the data's revision,
    the content or None). (0, None) when there is no bootstrap data; (`unless`, None) without
    opening it when its revision is still `unless`."""
    _, kv = await backend.get(storage_key(secret))
    if kv is None:
        return 0, None
    if kv.mod_revision == unless:
        return unless, None
    found = _open(secret, kv.value).get(name)
    return kv.mod_revision, base64.b64decode(found["content"]) if found else None


async def replace_file(backend: Backend, secret: str, name: str, content: bytes,
                       revision: int) -> bool:
    """Put `content` as file `name` in the bootstrap data, only if the data is still at
    `revision` (what the caller started from); False if another server changed it since."""
    key = storage_key(secret)
    _, kv = await backend.get(key)
    if kv is None or kv.mod_revision != revision:
        return False
    files = _open(secret, kv.value)
    files[name] = {"timestamp": int(time.time()), "content": base64.b64encode(content).decode()}
    _, _, ok = await backend.update(key, encrypt(secret, json.dumps(files).encode()), revision)
    if ok:
        log.info("bootstrap data updated in the datastore (%s: %s)", key, name)
    return ok


def _open(secret: str, value: bytes) -> dict:
    try:
        return json.loads(decrypt(secret, value))
    except (InvalidTag, ValueError) as e:
        raise BootstrapError(f"the datastore's bootstrap data does not open with this "
                             f"server's token ({type(e).__name__})") from None
