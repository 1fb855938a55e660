"""Secrets at rest (store/encryption.py) over a real SQLiteBackend: ciphertext in the file,
plaintext above the Backend (get, list, watch), values from before encryption still read,
a value moved to another key refused (the key is authenticated data), prepare / rotate /
reencrypt / drop, a lost key a clear error, the key file 0600. The whole Backend contract also
runs through this layer (conftest.py's `sqlite-encrypted`)."""

from __future__ import annotations

import asyncio
import json
import os

import apsw
import pytest

from k3py.server.store.encryption import EncryptingBackend, EncryptionError, EncryptionKeys
from k3py.server.store.sqlite import SQLiteBackend

pytestmark = pytest.mark.unit

KEY = "/registry/core/secrets/default/db"


@pytest.fixture
async def stores(tmp_path):
    inner = SQLiteBackend(str(tmp_path / "state.db"), compact_interval=0, checkpoint_interval=0)
    keys = EncryptionKeys.load_or_create(str(tmp_path / "cred" / "enc.json"), enable=True)
    outer = EncryptingBackend(inner, keys)
    await outer.start()
    yield inner, outer, tmp_path
    await outer.close()


def raw_rows(path) -> list[bytes]:
    db = apsw.Connection(str(path / "state.db"))
    try:
        return [bytes(r[0]) for r in db.execute("SELECT value FROM kine WHERE value IS NOT NULL")]
    except apsw.SQLError:  # the table has another name: scan every table's blobs
        rows = []
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'"):
            for row in db.execute(f"SELECT * FROM {table}"):
                rows += [bytes(c) for c in row if isinstance(c, (bytes, memoryview))]
        return rows
    finally:
        db.close()


async def test_ciphertext_below_plaintext_above(stores):
    inner, outer, tmp = stores
    watch = await outer.watch("/registry/", 0)
    rev = await outer.create(KEY, b'{"data":"hunter2"}')
    await outer.create("/registry/configmaps/default/c", b'{"data":"visible"}')
    _, kv = await inner.get(KEY)
    assert kv.value.startswith(b"k8s:enc:aesgcm:v1:k3py-") and b"hunter2" not in kv.value
    assert (await outer.get(KEY))[1].value == b'{"data":"hunter2"}'
    assert [kv.value for kv in (await outer.list("/registry/"))[1]] == [
        b'{"data":"visible"}', b'{"data":"hunter2"}']  # configmaps sort before core/
    events = await asyncio.wait_for(anext(watch.events()), 5)
    assert events[0].kv.value == b'{"data":"hunter2"}' and events[0].kv.mod_revision == rev
    watch.cancel()
    _, kv, ok = await outer.update(KEY, b'{"data":"new"}', rev)
    assert ok and kv.value == b'{"data":"new"}'
    assert not any(b"hunter2" in r or b'"new"' in r for r in raw_rows(tmp))
    assert any(b"visible" in r for r in raw_rows(tmp))  # only secrets are encrypted


async def test_plaintext_from_before_and_a_moved_value(stores):
    inner, outer, _ = stores
    await inner.create("/registry/core/secrets/default/old", b'{"data":"legacy"}')
    assert (await outer.get("/registry/core/secrets/default/old"))[1].value == b'{"data":"legacy"}'
    await outer.create(KEY, b'{"data":"x"}')
    sealed = (await inner.get(KEY))[1].value
    await inner.create("/registry/core/secrets/default/stolen", sealed)
    with pytest.raises(EncryptionError, match="cannot decrypt"):
        await outer.get("/registry/core/secrets/default/stolen")


async def test_rotation_and_reencrypt(stores):
    inner, outer, tmp = stores
    keys = outer.keys
    first = keys.keys[0][0]
    for i in range(5):
        await outer.create(f"/registry/core/secrets/default/s{i}", f'{{"i":{i}}}'.encode())
    new = keys.prepare()
    assert keys.status()["writer"] == first and keys.status()["keys"] == [first, new]
    assert keys.rotate() == new
    assert await outer.reencrypt() == 5
    assert keys.drop_old() == [first]
    for kv in (await inner.list("/registry/core/secrets/"))[1]:
        assert kv.value.startswith(f"k8s:enc:aesgcm:v1:{new}:".encode())
    assert [kv.value for kv in (await outer.list("/registry/core/secrets/"))[1]] == [
        f'{{"i":{i}}}'.encode() for i in range(5)]
    with pytest.raises(ValueError, match="prepare first"):
        keys.rotate()
    doc = json.loads((tmp / "cred" / "enc.json").read_text())
    assert doc["kind"] == "EncryptionConfiguration"
    assert [k["name"] for k in doc["resources"][0]["providers"][0]["aesgcm"]["keys"]] == [new]
    assert os.stat(tmp / "cred" / "enc.json").st_mode & 0o777 == 0o600


async def test_a_lost_key_is_a_clear_error(stores, tmp_path):
    inner, outer, _ = stores
    await outer.create(KEY, b"{}")
    other = EncryptionKeys.load_or_create(str(tmp_path / "other.json"), enable=True)
    with pytest.raises(EncryptionError, match="which is not in"):
        await EncryptingBackend(inner, other).get(KEY)


def test_fingerprint_follows_keys_and_writer_and_replace_takes_another_file(tmp_path):
    path = str(tmp_path / "cred" / "enc.json")
    keys = EncryptionKeys.load_or_create(path, enable=True)
    other = EncryptionKeys.load_or_create(str(tmp_path / "other.json"), enable=True)
    assert keys.fingerprint() != other.fingerprint()
    before = keys.fingerprint()
    copy = EncryptionKeys.load_or_create(path, enable=False)  # the same file, not writing
    assert copy.fingerprint() == before
    keys.prepare()
    prepared = keys.fingerprint()
    keys.rotate()
    assert len({before, prepared, keys.fingerprint()}) == 3  # the writer's order counts
    sealed = keys.encrypt(KEY, b"v")
    with pytest.raises(EncryptionError):
        copy.decrypt(KEY, sealed)
    copy.replace(keys.content())  # another server's rotation reached this one
    assert copy.content() == keys.content()
    assert copy.fingerprint() == keys.fingerprint()
    assert copy.decrypt(KEY, sealed) == b"v"
    assert copy.encrypt(KEY, b"v") == b"v"  # still not writing: its own setting
    with pytest.raises(ValueError, match="not an EncryptionConfiguration"):
        copy.replace(b'{"resources": [{"resources": ["secrets"], "providers": '
                     b'[{"aesgcm": {"keys": [{"name": "k"}]}}]}]}')
    assert copy.content() == keys.content()  # a bad file is refused before it is written
    draft = copy.draft()
    draft.prepare()  # a draft changes nothing on disk
    assert copy.content() == keys.content() and draft.render() != copy.content()


async def test_a_watch_passes_over_a_revision_under_a_dropped_key(stores):
    """History under a key this server no longer holds (a late write written again, or
    revisions from before a reencrypt and drop): a watch from before it goes on with the
    later revisions instead of ending at it (and again at each resume)."""
    inner, old, tmp = stores
    rev = await old.create(KEY, b'{"data":"under the old key"}')
    new = EncryptingBackend(inner, EncryptionKeys.load_or_create(str(tmp / "new.json"),
                                                                 enable=True))
    with pytest.raises(EncryptionError):
        await new.get(KEY)
    _, kv, ok = await new.update(KEY, b'{"data":"under the new key"}', rev)  # written again
    assert ok
    watch = await new.watch("/registry/core/secrets/", rev - 1)
    events = await asyncio.wait_for(anext(watch.events()), 5)
    watch.cancel()
    assert [(e.kv.mod_revision, e.kv.value, e.prev_kv) for e in events] == [
        (kv.mod_revision, b'{"data":"under the new key"}', None)]
