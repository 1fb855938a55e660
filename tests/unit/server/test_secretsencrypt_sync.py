"""Secrets-encryption keys kept the same on two servers of one datastore
(k3py/server/secretsencrypt.py KeySync), both in this process on one real SQLite store with
their own data dirs, key files and apiserver Leases: a step is stored conditionally and taken
by the other at its next look; a step from a revision that moved is refused and undone; a
rotation waits for the other server's fingerprint; a server that has not looked lately
writes no secret."""

from __future__ import annotations

import time

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
        assert self.sync is not None and self.encrypting.gate == self.sync.check_fresh
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
    prepared = await a.sync.step(a.keys.prepare)
    assert b.keys.status()["keys"] != a.keys.status()["keys"]
    with pytest.raises(errors.StatusError) as refused:  # B does not hold it yet
        await a.sync.agreed("rotate to the prepared key", wait=False)
    assert refused.value.code == 409 and "10.0.0.2 (Lease kube-system/apiserver-b)" in \
        refused.value.message
    assert (await a.sync.servers())[lease_name("b")]["same"] is False
    await b.sync.look()  # what B's loop does every second
    assert prepared in b.keys.status()["keys"]
    assert b.keys.fingerprint() == a.keys.fingerprint()
    since = await a.sync.agreed("rotate to the prepared key", wait=False)
    assert await a.sync.step(a.keys.rotate, since) == prepared
    # what A writes with the new key, B reads once it looked
    await a.encrypting.create(SECRET, b"v")
    await b.sync.look()
    assert (await b.encrypting.get(SECRET))[1].value == b"v"
    assert b.keys.status()["writer"] == prepared


async def test_a_step_from_a_moved_revision_is_refused_and_undone(pair):
    a, b = pair
    before = await a.sync.look()
    await b.sync.step(b.keys.prepare)  # B stepped meanwhile
    content = a.keys.content()
    with pytest.raises(errors.StatusError) as refused:
        await a.sync.step(a.keys.rotate, before)  # A's agreement was on the older keys
    assert refused.value.code == 409 and "changed on another server" in refused.value.message
    assert a.keys.content() != content  # A took B's file: the step starts from the stored one
    assert a.keys.fingerprint() == b.keys.fingerprint()
    # both prepare at once: each starts from the stored file, no key is lost
    first = await a.sync.step(a.keys.prepare)
    second = await b.sync.step(b.keys.prepare)
    _, stored = await bootstrapdata.stored_file(a.env.backend, a.sync.secret,
                                                "cred/encryption-config.json")
    assert first.encode() in stored and second.encode() in stored


async def test_a_refused_change_leaves_the_keys_as_they_were(pair):
    a, _ = pair
    content, enabled = a.keys.content(), a.keys.enabled
    with pytest.raises(ValueError, match="no prepared key"):
        await a.sync.step(a.keys.rotate)
    assert a.keys.content() == content and a.keys.enabled == enabled


async def test_no_secret_is_written_without_a_recent_look(tmp_path):
    async with real_env(tmp_path) as env:
        a = Server(env, tmp_path, "a", "10.0.0.1")
        await a.start()
        try:
            await a.encrypting.create(SECRET, b"v")  # looked at its start
            a.sync._looked = time.monotonic() - secretsencrypt.FENCE  # its looks failed since
            with pytest.raises(StoreUnavailableError, match="no secret is written"):
                await a.encrypting.create(SECRET + "2", b"v")
            await a.encrypting.create("/registry/core/configmaps/default/c", b"v")
            await a.sync.look()
            await a.encrypting.create(SECRET + "2", b"v")
        finally:
            await a.stop()
