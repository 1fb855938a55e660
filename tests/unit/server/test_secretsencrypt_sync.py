"""Secrets-encryption keys kept the same on two servers of one datastore
(k3py/server/secretsencrypt.py KeySync), both in this process on one real SQLite store with
their own data dirs, key files and apiserver Leases: a step is stored conditionally and taken
by the other at its next look; a step from a revision that moved is refused and undone; a
rotation waits for the other server's fingerprint; a server that has not looked lately
writes no secret."""

from __future__ import annotations

import asyncio
import os

import pytest

from k3py import pki
from k3py.api import errors
from k3py.config import ServerConfig
from k3py.server import bootstrapdata, secretsencrypt
from k3py.server.controllers.apiendpoints import APIServerEndpoints, lease_name
from k3py.server.store.backend import StoreUnavailableError
from k3py.server.store.encryption import EncryptingBackend, EncryptionKeys
from tests.unit.conftest import real_env

pytestmark = pytest.mark.unit

SECRET = "/registry/core/secrets/default/db"


class Server:
    def __init__(self, env, tmp_path, name: str, address: str, token: str = "") -> None:
        self.config = ServerConfig(data_dir=str(tmp_path / name), token=token,
                                   datastore_endpoint="postgres://x/y")
        self.name, self.address, self.env = name, address, env

    async def start(self) -> Server:
        store = self.env.backend
        await bootstrapdata.load(store, self.config)
        bundle = pki.ensure_pki(self.config.tls_dir, sans=[], ips=[])
        self.token = pki.ensure_token(self.config.token_path, bundle.ca_cert_pem,
                                      self.config.token)
        self.keys = EncryptionKeys.load_or_create(self.config.encryption_config_path,
                                                  enable=True)
        assert await bootstrapdata.save(store, self.config, self.token)
        self.encrypting = EncryptingBackend(store, self.keys)
        self.sync = secretsencrypt.sync_for(self.env.registry, self.config, self.encrypting,
                                            lease_name(self.name))
        assert self.sync is not None and self.encrypting.gate == self.sync.fresh
        await APIServerEndpoints(self.env.registry, self.name, self.address, 6443).tick()
        await self.sync.start()
        await self.sync.show()
        return self

    async def stop(self) -> None:
        await self.sync.stop()


@pytest.fixture
async def pair(tmp_path):
    async with real_env(tmp_path) as env:
        a = await Server(env, tmp_path, "a", "10.0.0.1").start()
        b = await Server(env, tmp_path, "b", "10.0.0.2", token=a.token).start()
        try:
            yield a, b
        finally:
            await a.stop()
            await b.stop()


async def test_a_step_reaches_the_other_server_and_rotation_waits_for_it(pair):
    a, b = pair
    assert a.keys.fingerprint() == b.keys.fingerprint()
    await a.sync.agreed("rotate", wait=False)
    prepared = await a.sync.step(EncryptionKeys.prepare)
    assert b.keys.status()["keys"] != a.keys.status()["keys"]
    with pytest.raises(errors.StatusError) as refused:  # B does not hold it yet
        await a.sync.agreed("rotate to the prepared key", wait=False)
    assert refused.value.code == 409 and "10.0.0.2 (Lease kube-system/apiserver-b) does " \
        "not hold this server's keys yet" in refused.value.message
    assert (await a.sync.servers())[lease_name("b")]["same"] is False
    await b.sync.look()  # what B's loop does every second
    await b.sync.show()  # and its show task when its keys changed
    assert prepared in b.keys.status()["keys"]
    assert b.keys.fingerprint() == a.keys.fingerprint()
    since = await a.sync.agreed("rotate to the prepared key", wait=False)
    assert await a.sync.step(EncryptionKeys.rotate, since) == prepared
    # what A writes with the new key, B reads once it looked
    await a.encrypting.create(SECRET, b"v")
    await b.sync.look()
    assert (await b.encrypting.get(SECRET))[1].value == b"v"
    assert b.keys.status()["writer"] == prepared


async def test_a_step_from_a_moved_revision_is_refused_and_undone(pair):
    a, b = pair
    before = await a.sync.look()
    await b.sync.step(EncryptionKeys.prepare)  # B stepped meanwhile
    content = a.keys.content()
    with pytest.raises(errors.StatusError) as refused:
        await a.sync.step(EncryptionKeys.rotate, before)  # A's agreement was on the older keys
    assert refused.value.code == 409 and "changed on another server" in refused.value.message
    assert a.keys.content() != content  # A took B's file: the step starts from the stored one
    assert a.keys.fingerprint() == b.keys.fingerprint()
    # both prepare at once: one is stored, the other refused or stacked on it; no key lost
    got = await asyncio.gather(a.sync.step(EncryptionKeys.prepare),
                               b.sync.step(EncryptionKeys.prepare), return_exceptions=True)
    made = [k for k in got if isinstance(k, str)]
    assert made and all(isinstance(e, errors.StatusError) and e.code == 409
                        for e in got if not isinstance(e, str))
    _, stored = await bootstrapdata.stored_file(a.env.backend, a.sync.secret,
                                                "cred/encryption-config.json")
    assert all(k.encode() in stored for k in made)
    await a.sync.look()
    await b.sync.look()
    assert a.keys.content() == b.keys.content() == stored


async def test_a_step_is_taken_here_only_once_stored(pair):
    a, _ = pair
    content = a.keys.content()
    stale = await a.sync.look() - 1  # as if another server had stepped since
    with pytest.raises(errors.StatusError, match="changed on another server"):
        await a.sync.step(EncryptionKeys.prepare, stale)
    assert a.keys.content() == content
    assert not os.path.exists(a.sync.keys.path + ".draft")


async def test_a_refused_change_leaves_the_keys_as_they_were(pair):
    a, _ = pair
    content, enabled = a.keys.content(), a.keys.enabled
    with pytest.raises(ValueError, match="no key prepared"):
        await a.sync.step(EncryptionKeys.rotate)
    assert a.keys.content() == content and a.keys.enabled == enabled


async def test_no_secret_is_written_without_a_recent_look(tmp_path):
    async with real_env(tmp_path) as env:
        a = Server(env, tmp_path, "a", "10.0.0.1")
        await a.start()
        try:
            await a.encrypting.create(SECRET, b"v")  # looked at its start
            a.sync._looked -= secretsencrypt.FENCE  # its looks lagged: it looks once more
            await a.encrypting.create(SECRET + "2", b"v")
            await env.backend.close()  # now its look fails: no secret is written
            a.sync._looked -= secretsencrypt.FENCE
            with pytest.raises(StoreUnavailableError, match="no secret is written"):
                await a.encrypting.create(SECRET + "3", b"v")
        finally:
            await a.stop()


async def test_a_rotation_twice_does_not_go_back(pair):
    a, _ = pair
    first = a.keys.writer()
    await a.sync.step(EncryptionKeys.prepare)
    second = await a.sync.step(EncryptionKeys.rotate)
    with pytest.raises(ValueError, match="no key prepared since the last rotation"):
        await a.sync.step(EncryptionKeys.rotate)
    assert a.keys.writer() == second != first


async def test_a_write_landing_after_the_writer_changed_is_written_again(pair):
    """B encrypts a secret with the old writer; while its write is on its way to the store,
    A's rotation reaches B: before answering, B writes it again with the new writer, so a
    reencrypt that ran meanwhile and dropped the old key loses nothing."""
    a, b = pair
    await a.sync.step(EncryptionKeys.prepare)
    await b.sync.look()
    new = await a.sync.step(EncryptionKeys.rotate)
    old = b.keys.writer()
    assert old != new
    write = asyncio.create_task(b.encrypting.create(SECRET, b"late"))
    await asyncio.sleep(0)  # B's write, encrypted with the old writer, is in the store's hands
    b.keys.replace(a.keys.content())  # what B's look does meanwhile
    revision = await write
    _, raw = await a.env.backend.get(SECRET)
    assert raw.mod_revision == revision
    assert raw.value.startswith(f"k8s:enc:aesgcm:v1:{new}:".encode())
    assert (await a.encrypting.get(SECRET))[1].value == b"late"
