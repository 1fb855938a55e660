"""Secrets encryption on a running server (K3s's `secrets-encrypt` endpoints): status, prepare
a new key, rotate to it, re-encrypt every secret with the writing key (then drop the others),
and rotate-keys (all three at once). Admins only (system:masters); `k3py secrets-encrypt`
(k3py/cli/secrets_encrypt.py) calls them with the server's admin certificate.

    GET  /v1-k3py/encrypt/status
    POST /v1-k3py/encrypt/{prepare,rotate,reencrypt,rotate-keys}

Several servers on one datastore (KeySync): every step is written to the datastore's
bootstrap data (bootstrapdata.py), where the other servers look for it every POLL_EVERY and
take the new key file at once, without a restart (K3s asks for one). Each server shows the
fingerprint of the keys it holds on its apiserver Lease. A server may only start writing with
a new key once every live server can read it, and may only drop the old keys once every live
server writes with the new one: so `rotate` and `reencrypt` answer 409 while a live server's
fingerprint differs, and `rotate-keys` waits up to AGREE_WITHIN between its steps."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from k3py import pki
from k3py.api import errors
from k3py.config import ServerConfig
from k3py.server import bootstrapdata
from k3py.server.apiserver.auth import Authenticator
from k3py.server.controllers.apiendpoints import NAMESPACE, address_of, live_leases
from k3py.server.registry import Registry
from k3py.server.store.backend import Backend, StoreError
from k3py.server.store.encryption import EncryptingBackend, EncryptionError, EncryptionKeys

__all__ = ["install", "sync_for", "ENCRYPT_PATH", "KeySync", "FINGERPRINT_ANNOTATION"]

log = logging.getLogger("k3py.server")

ENCRYPT_PATH = "/v1-k3py/encrypt"
FINGERPRINT_ANNOTATION = "k3py.io/encryption-keys"  # on each server's apiserver Lease
_CONFIG_FILE = "cred/encryption-config.json"  # one of bootstrapdata.FILES
POLL_EVERY = 1.0  # seconds between looks at the datastore's copy of the key file
AGREE_WITHIN = 30.0  # rotate-keys: how long every live server has to take each step


class KeySync:
    """This server's key file kept the same as the datastore's, and what it holds shown on
    its apiserver Lease (`lease_name`, renewed by controllers.apiendpoints)."""

    def __init__(self, registry: Registry, backend: Backend, config: ServerConfig,
                 keys: EncryptionKeys, lease_name: str) -> None:
        self.registry, self.backend, self.config = registry, backend, config
        self.keys, self.lease_name = keys, lease_name
        self.secret = bootstrapdata.secret_of(config)
        self.lock = asyncio.Lock()  # one change of the key file at a time on this server
        self._seen = 0  # the bootstrap data's revision last compared with the file
        self._shown = ""  # the fingerprint on our Lease
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._seen, _ = await bootstrapdata.stored_file(self.backend, self.secret, _CONFIG_FILE)
        self._task = asyncio.create_task(self._loop(), name="secrets-encryption-keys")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.take_stored()
                if self._shown != self.keys.fingerprint():
                    await self.show()
            except (errors.StatusError, StoreError, bootstrapdata.BootstrapError, OSError,
                    ValueError) as e:  # the datastore is away, or a file it gave is bad
                log.warning("secrets encryption keys: %s", e)
            await asyncio.sleep(POLL_EVERY)

    async def take_stored(self) -> None:
        """The datastore's key file, if it changed since we looked and differs from ours.
        Read under the lock: a step taken here meanwhile is never overwritten by what the
        datastore held before it."""
        async with self.lock:
            revision, content = await bootstrapdata.stored_file(self.backend, self.secret,
                                                                _CONFIG_FILE)
            if revision == self._seen or content is None:
                return
            self._seen = revision
            with open(self.keys.path, "rb") as f:
                if f.read() == content:
                    return
            pki.atomic_write(self.keys.path, content, 0o600)
            self.keys.reload()
            log.info("secrets encryption keys taken from the datastore: %s (writer %s)",
                     ", ".join(n for n, _ in self.keys.keys), self.keys.status()["writer"])
        await self.show()

    async def show(self) -> None:
        """Our keys' fingerprint on our apiserver Lease (once the Lease exists)."""
        fingerprint = self.keys.fingerprint()
        found = False

        def annotate(lease: dict) -> dict | None:
            nonlocal found
            found = True
            notes = lease["metadata"].setdefault("annotations", {})
            if notes.get(FINGERPRINT_ANNOTATION) == fingerprint:
                return None
            notes[FINGERPRINT_ANNOTATION] = fingerprint
            return lease
        await self.registry.update_with(self.registry.served("coordination.k8s.io", "leases"),
                                        NAMESPACE, self.lease_name, annotate)
        if found:
            self._shown = fingerprint

    async def publish(self) -> None:
        """After a step here: the key file to the datastore (raises if it is not taken),
        then our fingerprint to our Lease (else the loop shows it next time)."""
        await bootstrapdata.save_with_secret(self.backend, self.config, self.secret)
        try:
            await self.show()
        except (errors.StatusError, StoreError) as e:
            log.warning("secrets encryption keys: fingerprint not shown yet: %s", e)

    async def servers(self) -> dict[str, bool]:
        """Each live server's address: whether it holds the same keys as this one."""
        mine = self.keys.fingerprint()
        return {address_of(lease): (lease["metadata"].get("annotations") or {}).get(
                    FINGERPRINT_ANNOTATION) == mine
                for lease in await live_leases(self.registry)
                if lease["metadata"]["name"] != self.lease_name}

    async def behind(self) -> list[str]:
        return sorted(a for a, same in (await self.servers()).items() if not same)

    async def require_agreed(self, step: str) -> None:
        behind = await self.behind()
        if behind:
            raise errors.StatusError(409, "Conflict", f"cannot {step}: server(s) "
                                     f"{', '.join(behind)} do not hold this server's keys yet "
                                     f"(they take them within seconds; restart one that does "
                                     f"not); try again")

    async def wait_agreed(self, step: str) -> None:
        deadline = time.monotonic() + AGREE_WITHIN
        while time.monotonic() < deadline:
            if not await self.behind():
                return
            await asyncio.sleep(POLL_EVERY / 2)
        await self.require_agreed(step)


def install(app: web.Application, authenticator: Authenticator,
            backend: EncryptingBackend | None, sync: KeySync | None = None) -> None:
    lock = sync.lock if sync is not None else asyncio.Lock()

    def admin(request: web.Request) -> None:
        user = authenticator.require(request)
        if not user.is_admin:
            raise errors.forbidden(f'User "{user.name}" cannot manage secrets encryption')

    def answer(body: dict) -> web.Response:
        return web.json_response(body)

    async def servers() -> dict:
        if sync is None:
            return {}
        return {"servers": await sync.servers()}

    # a StatusError raised here becomes a Status body by the app's error middleware
    async def status(request: web.Request) -> web.Response:
        admin(request)
        if backend is None:
            return answer({"encryption": "disabled", "keys": [], "writer": "identity"})
        return answer({**backend.keys.status(), **await servers()})

    async def agreed(doing: str, wait: bool) -> None:
        if sync is not None:
            await (sync.wait_agreed(doing) if wait else sync.require_agreed(doing))

    async def step(change: Callable[[], Any]) -> Any:
        """`change` the key file here, then publish it; if the datastore does not take it,
        the file is put back as it was (no server ever writes with a key only it holds)."""
        with open(backend.keys.path, "rb") as f:
            before = f.read()
        done = change()
        if sync is None:
            return done
        try:
            await sync.publish()
        except (StoreError, bootstrapdata.BootstrapError) as e:
            pki.atomic_write(backend.keys.path, before, 0o600)
            backend.keys.reload()
            raise errors.service_unavailable(f"the datastore did not take the new keys ({e}); "
                                             f"nothing changed: try again") from None
        return done

    async def act(request: web.Request) -> web.Response:
        admin(request)
        if backend is None:
            raise errors.bad_request("secrets encryption is off on this server: start it "
                                     "with --secrets-encryption")
        what = request.match_info["action"]
        keys = backend.keys
        every = what == "rotate-keys"
        async with lock:  # one rotation step at a time
            try:
                out: dict = {}
                if what in ("prepare", "rotate-keys"):
                    out["prepared"] = await step(keys.prepare)
                if what in ("rotate", "rotate-keys"):
                    # nobody writes with a key a live server cannot read yet
                    await agreed("rotate to the prepared key", every)
                    out["writer"] = await step(keys.rotate)
                if what in ("reencrypt", "rotate-keys"):
                    # nobody is left writing with a key about to be dropped
                    await agreed("re-encrypt and drop the old keys", every)
                    out["reencrypted"] = await backend.reencrypt()
                    out["dropped"] = await step(keys.drop_old)
            except ValueError as e:
                raise errors.StatusError(409, "Conflict", str(e)) from None
            except EncryptionError as e:
                raise errors.internal_error(str(e)) from None
        return answer({**out, **keys.status(), **await servers()})

    app.router.add_get(ENCRYPT_PATH + "/status", status)
    app.router.add_post(ENCRYPT_PATH + "/{action:prepare|rotate|reencrypt|rotate-keys}", act)


def sync_for(registry: Registry, config: ServerConfig, encrypting: EncryptingBackend | None,
             lease_name: str) -> KeySync | None:
    """The KeySync of a server on a shared datastore that holds secrets-encryption keys;
    else None (the bootstrap data is not under the secrets' prefix: read it unwrapped)."""
    if not config.datastore_endpoint or encrypting is None:
        return None
    return KeySync(registry, encrypting.inner, config, encrypting.keys, lease_name)
