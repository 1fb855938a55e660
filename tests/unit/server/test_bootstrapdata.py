"""Bootstrap data shared through the datastore (k3py/server/bootstrapdata.py): the first server
writes its CAs and keys sealed with the token, a second server with that token gets the same
files, and a wrong or missing token is refused with a line that says what to pass."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag

from k3py import pki
from k3py.config import ServerConfig
from k3py.server import bootstrapdata
from k3py.server.store.sqlite import SQLiteBackend

pytestmark = pytest.mark.unit


@pytest.fixture
async def store(tmp_path):
    backend = SQLiteBackend(str(tmp_path / "state.db"), compact_interval=0,
                            checkpoint_interval=0)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


def _server(tmp_path, name: str, **options) -> ServerConfig:
    return ServerConfig(data_dir=str(tmp_path / name), datastore_endpoint="postgres://x/y",
                        **options)


async def _first(store, tmp_path) -> tuple[ServerConfig, str]:
    first = _server(tmp_path, "a")
    await bootstrapdata.load(store, first)
    bundle = pki.ensure_pki(first.tls_dir, sans=[], ips=[])
    token = pki.ensure_token(first.token_path, bundle.ca_cert_pem)
    assert await bootstrapdata.save(store, first, token)
    return first, token


def test_sealed_data_opens_only_with_its_secret():
    sealed = bootstrapdata.encrypt("s3cret", b"ca and keys")
    salt, _, _ = sealed.decode().partition(":")
    assert len(salt) == 16 and b"ca and keys" not in sealed
    assert bootstrapdata.decrypt("s3cret", sealed) == b"ca and keys"
    with pytest.raises(InvalidTag):
        bootstrapdata.decrypt("other", sealed)
    assert bootstrapdata.storage_key("s3cret").startswith("/bootstrap/")
    assert len(bootstrapdata.storage_key("s3cret")) == len("/bootstrap/") + 12


async def test_second_server_gets_the_first_ones_cas_and_key(store, tmp_path):
    first, token = await _first(store, tmp_path)
    second = _server(tmp_path, "b", token=token, server="https://a:6443")
    await bootstrapdata.load(store, second)
    bundle = pki.ensure_pki(second.tls_dir, sans=["b.example"], ips=[])
    for name in ("server-ca.crt", "server-ca.key", "client-ca.crt", "service.key"):
        assert (tmp_path / "a/server/tls" / name).read_bytes() == \
            (tmp_path / "b/server/tls" / name).read_bytes()
    assert pki.ensure_token(second.token_path, bundle.ca_cert_pem, token) == token
    # the bare secret opens it too (K3s normalizes the token to its password)
    third = _server(tmp_path, "c", token=pki.parse_token(token)[1])
    await bootstrapdata.load(store, third)
    assert (tmp_path / "c/server/tls/client-ca.key").exists()


@pytest.mark.parametrize("token, words", [
    ("K10abc::server:wrong", "encrypted with a different token"),
    ("", "already holds a cluster"),
])
async def test_wrong_or_missing_token_is_refused(store, tmp_path, token, words):
    await _first(store, tmp_path)
    with pytest.raises(bootstrapdata.BootstrapError, match=words):
        await bootstrapdata.load(store, _server(tmp_path, "b", token=token))
    assert not (tmp_path / "b/server/tls/server-ca.key").exists()


async def test_token_naming_another_ca_is_refused(store, tmp_path):
    _, token = await _first(store, tmp_path)
    secret = pki.parse_token(token)[1]
    with pytest.raises(bootstrapdata.BootstrapError, match="CA hash"):
        await bootstrapdata.load(store, _server(tmp_path, "b", token=f"K10{'0' * 64}::server:"
                                                f"{secret}"))


async def test_joining_with_server_needs_existing_data(store, tmp_path):
    with pytest.raises(bootstrapdata.BootstrapError, match="start the first server"):
        await bootstrapdata.load(store, _server(tmp_path, "b", token="t",
                                                server="https://a:6443"))


class _LateReader:
    """The store as a server saw it just before another wrote first: get finds nothing."""

    def __init__(self, store) -> None:
        self.store = store

    async def get(self, key: str):
        return 0, None

    async def create(self, key: str, value: bytes) -> int:
        return await self.store.create(key, value)


async def test_a_first_server_that_lost_the_race_loads_the_winners(store, tmp_path):
    _, token = await _first(store, tmp_path)
    other = _server(tmp_path, "b", token=token)  # made its own CAs meanwhile, same token
    bundle = pki.ensure_pki(other.tls_dir, sans=[], ips=[])
    pki.ensure_token(other.token_path, bundle.ca_cert_pem, token)
    assert not await bootstrapdata.save(_LateReader(store), other, token)
    await bootstrapdata.load(store, other)  # what serve() does next
    assert (tmp_path / "b/server/tls/server-ca.key").read_bytes() == \
        (tmp_path / "a/server/tls/server-ca.key").read_bytes()


async def test_a_key_made_later_is_added_to_the_stored_data(store, tmp_path):
    first, token = await _first(store, tmp_path)
    assert not (tmp_path / "a/server/cred/encryption-config.json").exists()
    cred = tmp_path / "a/server/cred"
    cred.mkdir(parents=True)
    (cred / "encryption-config.json").write_text('{"kind": "EncryptionConfiguration"}')
    assert await bootstrapdata.save(store, first, token)
    joined = _server(tmp_path, "b", token=token)
    await bootstrapdata.load(store, joined)
    assert (tmp_path / "b/server/cred/encryption-config.json").read_text() == \
        '{"kind": "EncryptionConfiguration"}'


async def test_a_key_file_is_replaced_only_from_the_revision_it_started_from(store, tmp_path):
    """What secretsencrypt.KeySync stores after a step (a compare-and-swap), and what the
    other servers read back; a server starting meanwhile never puts its older file back."""
    first, token = await _first(store, tmp_path)
    secret = pki.parse_token(token)[1]
    name = "cred/encryption-config.json"
    revision, content = await bootstrapdata.stored_file(store, secret, name)
    assert revision > 0 and content is None  # the first server had no key file
    assert await bootstrapdata.stored_file(store, "another-secret", name) == (0, None)
    assert await bootstrapdata.stored_file(store, secret, name, unless=revision) == \
        (revision, None)  # not opened: nothing changed
    assert await bootstrapdata.replace_file(store, secret, name, b'{"v": 1}', revision)
    assert not await bootstrapdata.replace_file(store, secret, name, b'{"v": 2}', revision)
    newer, content = await bootstrapdata.stored_file(store, secret, name)
    assert newer > revision and content == b'{"v": 1}'
    # a server that loaded before that change and saves at its start adds nothing back
    joined = _server(tmp_path, "b", token=token)
    await bootstrapdata.load(store, joined)
    (tmp_path / "b/server/cred/encryption-config.json").write_text('{"v": "stale"}')
    assert await bootstrapdata.save(store, joined, token)
    assert await bootstrapdata.stored_file(store, secret, name) == (newer, b'{"v": 1}')
    # the CA files stayed as the first server wrote them
    assert (tmp_path / "b/server/tls/server-ca.key").read_bytes() == \
        (tmp_path / "a/server/tls/server-ca.key").read_bytes()
