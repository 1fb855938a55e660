"""Secrets encryption on a running server (K3s's `secrets-encrypt` endpoints): status, prepare
a new key, rotate to it, re-encrypt every secret with the writing key (then drop the others),
and rotate-keys (all three at once). Admins only (system:masters); `k3py secrets-encrypt`
(k3py/cli/secrets_encrypt.py) calls them with the server's admin certificate.

    GET  /v1-k3py/encrypt/status
    POST /v1-k3py/encrypt/{prepare,rotate,reencrypt,rotate-keys}

Several servers on one datastore (KeySync). The datastore's bootstrap data (bootstrapdata.py)
holds the cluster's key file; what keeps every secret readable by every server:

- A step changes a draft of the stored key file and stores it only if the bootstrap data is
  still at the revision it started from (a compare-and-swap); the server takes the new file
  only once stored. Two servers stepping at once never lose a key: the later one gets a 409.
- Every server looks at the stored file every POLL_EVERY and takes it when it differs from its
  own, without a restart (K3s asks for one), and shows the fingerprint of the keys it holds on
  its apiserver Lease.
- Fencing: a server encrypts a secret only within FENCE seconds of a successful look (else
  503, which clients retry); a write that lands after the server's writer changed (it was on
  its way meanwhile) is written again with the new writer before it is answered.
- `rotate` (a new writer) only once every server that renewed its Lease within GONE_AFTER
  shows this server's keys: each can read the new key before anyone writes with it. The same
  before `reencrypt`, which then waits SETTLE, rewrites every secret until a pass finds all in
  the writer's form, and drops the other keys only if the stored file did not change since
  (else 409: run it again). `rotate-keys` waits up to AGREE_WITHIN for the others between its
  steps; the separate steps answer 409 at once, naming the servers that differ and why."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from k3py.api import errors
from k3py.config import ServerConfig
from k3py.server import bootstrapdata
from k3py.server.apiserver.auth import Authenticator
from k3py.server.controllers.apiendpoints import (
    NAMESPACE,
    address_of,
    apiserver_leases,
    is_current,
    lease_age,
)
from k3py.server.registry import Registry
from k3py.server.store.backend import Backend, StoreError, StoreUnavailableError
from k3py.server.store.encryption import EncryptingBackend, EncryptionError, EncryptionKeys

__all__ = ["install", "sync_for", "ENCRYPT_PATH", "KeySync", "FINGERPRINT_ANNOTATION"]

log = logging.getLogger("k3py.server")

ENCRYPT_PATH = "/v1-k3py/encrypt"
FINGERPRINT_ANNOTATION = "k3py.io/encryption-keys"  # on each server's apiserver Lease
_CONFIG_FILE = "cred/encryption-config.json"  # one of bootstrapdata.FILES
POLL_EVERY = 1.0  # seconds between looks at the datastore's copy of the key file
FENCE = 5.0  # a secret is written only within this many seconds of a successful look
SETTLE = FENCE + 2.0  # after a writer change, writes with the old writer are over (+ in flight)
AGREE_WITHIN = 30.0  # rotate-keys: how long the other servers have to take each step
GONE_AFTER = 3600.0  # a Lease not renewed for an hour: its server is gone for good
SHOW_EVERY = 10.0  # seconds between two checks of the fingerprint on our Lease


def _clock() -> float:
    """Seconds that go on while the machine sleeps or the VM is paused (CLOCK_BOOTTIME):
    a server woken after an hour must not count its last look as recent."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class KeySync:
    """This server's key file kept the same as the datastore's, and what it holds shown on
    its apiserver Lease (`lease_name`, renewed by controllers.apiendpoints)."""

    def __init__(self, registry: Registry, backend: Backend, config: ServerConfig,
                 keys: EncryptionKeys, lease_name: str) -> None:
        self.registry, self.backend = registry, backend
        self.keys, self.lease_name = keys, lease_name
        self.secret = bootstrapdata.secret_of(config)
        self.lock = asyncio.Lock()  # one look or change of the key file at a time
        self._seen = -1  # the bootstrap data's revision last compared with the file
        self._looked = float("-inf")  # _clock() of the last successful look
        self._changed = asyncio.Event()  # our keys changed: show them
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        """The stored keys taken before this server serves, then a look every POLL_EVERY
        and the fingerprint on our Lease (its own task: a slow Lease write delays no look)."""
        await self.look()
        self._changed.set()  # shown as soon as our Lease is there
        self._tasks = [asyncio.create_task(self._looking(), name="secrets-encryption-keys"),
                       asyncio.create_task(self._showing(), name="secrets-encryption-show")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def fresh(self) -> None:
        """EncryptingBackend's gate: a secret is written only with keys looked at within
        FENCE; when looks lag, one more look first (shared by the writes waiting on it, at
        most FENCE long) before it refuses."""
        if _clock() - self._looked < FENCE:
            return

        async def look_if_stale() -> None:
            async with self.lock:
                if _clock() - self._looked >= FENCE:
                    await self._take()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(FENCE):
                await look_if_stale()
        age = _clock() - self._looked
        if age >= FENCE:
            raise StoreUnavailableError(
                "this server has not seen the cluster's secrets-encryption keys in the "
                f"datastore for {min(age, 1e6):.0f} s: no secret is written until it has")

    async def _looking(self) -> None:
        while True:
            await asyncio.sleep(POLL_EVERY)
            try:
                await self.look()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the datastore away, a bad stored file
                log.warning("secrets encryption keys: %s", e)

    async def _showing(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on 3.11 a stop's cancel landing as the event is
            # set was swallowed by wait_for, and the stop then waited for this task forever
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SHOW_EVERY):
                    await self._changed.wait()
            self._changed.clear()
            try:
                if not await self.show():  # our Lease is not made yet: soon
                    self._changed.set()
                    await asyncio.sleep(POLL_EVERY)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the datastore away: next time
                log.warning("secrets encryption keys: fingerprint not shown: %s", e)

    async def look(self) -> int:
        """Take the stored key file if it differs from ours; the bootstrap data's revision."""
        async with self.lock:
            return await self._take()

    async def _take(self) -> int:
        started = _clock()
        try:
            revision, content = await bootstrapdata.stored_file(
                self.backend, self.secret, _CONFIG_FILE, unless=self._seen)
            if content is not None and content != self.keys.content():
                self.keys.replace(content)  # checked before it is written; ValueError if bad
                self._changed.set()
                log.info("secrets encryption keys taken from the datastore: %s (writer %s)",
                         ", ".join(n for n, _ in self.keys.keys), self.keys.status()["writer"])
        except BaseException:
            self._seen = -1  # compare the whole file next time
            raise
        self._seen, self._looked = revision, started
        return revision

    async def step(self, change: Callable[[EncryptionKeys], Any],
                   since: int | None = None) -> Any:
        """`change` a draft of the stored key file and store it conditionally; this server
        takes it only once stored. 409 if another server changed the file meanwhile (or since
        revision `since`), 503 if the datastore did not answer (the next look takes it if it
        landed after all)."""
        revision = await self.look()
        if since is not None and revision != since:
            raise _changed_meanwhile()
        draft = self.keys.draft()
        try:
            done = change(draft)
            content = draft.render()
            taken = await bootstrapdata.replace_file(self.backend, self.secret, _CONFIG_FILE,
                                                     content, revision)
        except (StoreError, bootstrapdata.BootstrapError) as e:
            self._seen = -1
            raise errors.service_unavailable(
                f"the datastore did not answer ({e}): see `k3py secrets-encrypt status` in "
                f"a few seconds for whether the step was taken") from None
        if not taken:
            raise _changed_meanwhile()
        async with self.lock:
            if self._seen == revision:  # else a look took this (or a later) file already
                self.keys.replace(content)
            self.keys.enabled = draft.enabled and bool(self.keys.keys)
            self._changed.set()
        return done

    async def show(self) -> bool:
        """Our keys' fingerprint on our apiserver Lease; False while the Lease is not made."""
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
        return found

    async def servers(self) -> dict[str, dict]:
        """Every other server not gone for good, by Lease name: its address, whether it
        holds the same keys as this one, and whether its Lease is current."""
        mine = self.keys.fingerprint()
        out = {}
        for lease in await apiserver_leases(self.registry):
            name, age = lease["metadata"]["name"], lease_age(lease)
            if name == self.lease_name or age >= GONE_AFTER:
                continue
            shown = (lease["metadata"].get("annotations") or {}).get(FINGERPRINT_ANNOTATION)
            out[name] = {"address": address_of(lease), "same": shown == mine,
                         "shown": shown is not None,
                         "live": is_current(lease)}
        return out

    async def agreed(self, doing: str, wait: bool) -> int:
        """The stored revision once every other server holds this server's keys; 409 naming
        those that do not (at once, or after AGREE_WITHIN with `wait`)."""
        deadline = time.monotonic() + (AGREE_WITHIN if wait else 0)
        while True:
            revision = await self.look()
            behind = {n: s for n, s in (await self.servers()).items() if not s["same"]}
            if not behind:
                return revision
            if time.monotonic() >= deadline:
                raise errors.StatusError(409, "Conflict", f"cannot {doing}: " + "; ".join(
                    _why_behind(n, s) for n, s in sorted(behind.items())))
            await asyncio.sleep(POLL_EVERY / 2)


def _why_behind(lease: str, server: dict) -> str:
    who = f"server {server['address']} (Lease kube-system/{lease})"
    if not server["live"]:
        return (f"{who} does not hold this server's keys and has not renewed its Lease "
                f"lately: start it again (it takes them at its start), or delete the Lease "
                f"if it is gone for good")
    if not server["shown"]:
        return (f"{who} shows no keys: it runs without secrets encryption; restart it with "
                f"--secrets-encryption")
    return (f"{who} does not hold this server's keys yet; a running server takes them "
            f"within seconds: try again")


def _changed_meanwhile() -> errors.StatusError:
    return errors.StatusError(409, "Conflict", "the keys were changed on another server "
                              "meanwhile: nothing changed here; see `k3py secrets-encrypt "
                              "status` and try again")


def install(app: web.Application, authenticator: Authenticator,
            backend: EncryptingBackend | None, sync: KeySync | None = None) -> None:
    acting = asyncio.Lock()  # one command at a time on this server

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

    async def step(change: Callable[[EncryptionKeys], Any], since: int | None = None) -> Any:
        if sync is None:
            return change(backend.keys)
        return await sync.step(change, since)

    async def agreed(doing: str, wait: bool) -> int | None:
        return None if sync is None else await sync.agreed(doing, wait)

    async def reencrypt(wait: bool) -> tuple[int, list[str]]:
        # every server writes with this server's writer before anything is rewritten
        since = await agreed("re-encrypt and drop the old keys", wait)
        if sync is not None:
            await asyncio.sleep(SETTLE)  # writes still under the old writer are over
        done = await backend.reencrypt()
        # the writer must not have changed since the agreement, or the drop could lose one
        return done, await step(EncryptionKeys.drop_old, since)

    async def act(request: web.Request) -> web.Response:
        admin(request)
        if backend is None:
            raise errors.bad_request("secrets encryption is off on this server: start it "
                                     "with --secrets-encryption")
        what = request.match_info["action"]
        keys = backend.keys
        every = what == "rotate-keys"
        async with acting:
            try:
                out: dict = {}
                if what in ("prepare", "rotate-keys"):
                    out["prepared"] = await step(EncryptionKeys.prepare)
                if what in ("rotate", "rotate-keys"):
                    # nobody writes with a key another server cannot read yet
                    since = await agreed("rotate to the prepared key", every)
                    out["writer"] = await step(EncryptionKeys.rotate, since)
                if what in ("reencrypt", "rotate-keys"):
                    out["reencrypted"], out["dropped"] = await reencrypt(every)
            except ValueError as e:
                raise errors.StatusError(409, "Conflict", _with(str(e), out)) from None
            except EncryptionError as e:
                raise errors.internal_error(_with(str(e), out)) from None
            except errors.StatusError as e:
                raise errors.StatusError(e.code, e.reason, _with(e.message, out)) from None
            except StoreError as e:
                raise errors.service_unavailable(_with(str(e), out)) from None
        return answer({**out, **keys.status(), **await servers()})

    app.router.add_get(ENCRYPT_PATH + "/status", status)
    app.router.add_post(ENCRYPT_PATH + "/{action:prepare|rotate|reencrypt|rotate-keys}", act)


def _with(message: str, done: dict) -> str:
    """A refusal's message, with the steps already taken (rotate-keys stopped half way)."""
    if not done:
        return message
    return message + " (taken before this: " + "; ".join(
        f"{k} {', '.join(v) if isinstance(v, list) else v}" for k, v in done.items()) + ")"


def sync_for(registry: Registry, config: ServerConfig, encrypting: EncryptingBackend | None,
             lease_name: str) -> KeySync | None:
    """The KeySync of a server on a shared datastore that holds secrets-encryption keys (its
    secret writes fenced by it); else None. The bootstrap data is not under the secrets'
    prefix: it is read unwrapped."""
    if not config.datastore_endpoint or encrypting is None:
        return None
    sync = KeySync(registry, encrypting.inner, config, encrypting.keys, lease_name)
    encrypting.gate = sync.fresh
    return sync
