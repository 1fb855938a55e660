"""metamanager: desired objects and queued status persist in meta.db and survive a reopen.

Uses a real SQLite file in tmp_path; no processes."""

from __future__ import annotations

import asyncio
import sqlite3

import orjson
import pytest

from k3py.agent.metamanager import MetaManager
from k3py.tunnel.message import (
    GROUP_RESOURCE,
    OP_DELETE,
    OP_INSERT,
    OP_SYNC,
    OP_UPDATE,
    new_message,
)
from k3py.tunnel.protocol import POD_PEERS_KIND

pytestmark = pytest.mark.unit


def _pod(name: str, ns: str = "default") -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns,
                                                            "uid": f"uid-{name}"}}


def _put(kind: str, obj: dict, op: str = OP_INSERT):
    md = obj["metadata"]
    return new_message(source="cloudhub", group=GROUP_RESOURCE, operation=op,
                       resource=f"{kind}/{md.get('namespace', '')}/{md['name']}", content=obj)


async def test_apply_persists_and_reopen_restores(tmp_path):
    path = str(tmp_path / "agent" / "meta.db")
    mm = MetaManager(path)
    await mm.open()
    assert await mm.apply(_put("pods", _pod("a")))
    assert await mm.apply(_put("pods", _pod("b")))
    assert await mm.apply(_put("configmaps", {"metadata": {"name": "c", "namespace": "default"},
                                              "data": {"k": "v"}}))
    assert await mm.apply(_put("pods", _pod("a"), OP_DELETE))
    assert mm.changed.is_set()
    await mm.close()

    again = MetaManager(path)
    await again.open()
    assert [p["metadata"]["name"] for p in again.pods()] == ["b"]
    assert again.get("configmaps", "default", "c")["data"] == {"k": "v"}
    await again.close()


async def test_apply_is_idempotent_and_rejects_unknown(tmp_path):
    mm = MetaManager(str(tmp_path / "meta.db"))
    await mm.open()
    msg = _put("pods", _pod("a"))
    assert await mm.apply(msg) and await mm.apply(msg)
    assert len(mm.pods()) == 1
    assert not await mm.apply(_put("leases", {"metadata": {"name": "n"}}))
    assert not await mm.apply(new_message(source="x", group=GROUP_RESOURCE, operation=OP_INSERT,
                                          resource="bad"))
    await mm.close()


async def test_sync_replaces_the_desired_set(tmp_path):
    mm = MetaManager(str(tmp_path / "meta.db"))
    await mm.open()
    await mm.apply(_put("pods", _pod("old")))
    assert not mm.synced
    await mm.apply(_put("secrets", {"metadata": {"name": "s", "namespace": "default"}}))
    sync = new_message(source="cloudhub", group=GROUP_RESOURCE, operation=OP_SYNC,
                       content={"pods": [_pod("new1"), _pod("new2", "ns2")]})
    assert await mm.apply(sync)
    assert sorted(p["metadata"]["name"] for p in mm.pods()) == ["new1", "new2"]
    # kinds absent from the snapshot are left alone
    assert mm.get("secrets", "default", "s") is not None
    await mm.close()
    again = MetaManager(str(tmp_path / "meta.db"))
    await again.open()
    assert again.synced
    assert sorted(p["metadata"]["name"] for p in again.pods()) == ["new1", "new2"]
    await again.close()


async def test_a_partial_sync_replaces_its_kinds_alone(tmp_path):
    """The namespaces' and pods' views the server sends when the first NetworkPolicy
    appears (protocol.POLICY_PEER_KINDS): they replace the cached ones, the pods stay, the
    listeners hear of those kinds (not of a whole sync), and an agent never fully synced
    still is not (it must not resume on them)."""
    mm = MetaManager(str(tmp_path / "meta.db"))
    await mm.open()
    heard: list[str] = []
    mm.listeners.append(heard.append)
    await mm.apply(_put("pods", _pod("p")))
    await mm.apply(_put(POD_PEERS_KIND, _pod("gone")))
    views = new_message(source="cloudhub", group=GROUP_RESOURCE, operation=OP_SYNC, content={
        "namespaces": [{"metadata": {"name": "default"}}], POD_PEERS_KIND: [_pod("peer")]})
    assert await mm.apply(views)
    assert [o["metadata"]["name"] for o in mm.objects(POD_PEERS_KIND)] == ["peer"]
    assert [p["metadata"]["name"] for p in mm.pods()] == ["p"]
    assert heard[-2:] == ["namespaces", POD_PEERS_KIND] and "sync" not in heard
    assert not mm.synced
    await mm.close()
    again = MetaManager(str(tmp_path / "meta.db"))
    await again.open()
    assert not again.synced
    assert [o["metadata"]["name"] for o in again.objects(POD_PEERS_KIND)] == ["peer"]
    await again.close()


async def test_a_sync_writes_only_what_changed(tmp_path):
    """A full sync again (after a server restart) rewrites no row it leaves as it was: the
    unchanged pod keeps its row (rowid), the others are deleted, replaced, added."""
    path = str(tmp_path / "meta.db")
    mm = MetaManager(path)
    await mm.open()

    def sync(*pods: dict):
        return new_message(source="cloudhub", group=GROUP_RESOURCE, operation=OP_SYNC,
                           content={"pods": list(pods)})

    def rowids() -> dict[str, int]:
        with sqlite3.connect(path) as db:
            return dict(db.execute("SELECT name, rowid FROM objects WHERE kind='pods'"))
    changed = {**_pod("b"), "spec": {"nodeName": "n"}}
    await mm.apply(sync(_pod("a"), _pod("b"), _pod("c")))
    before = rowids()
    await mm.apply(sync(_pod("a"), changed, _pod("d")))
    after = rowids()
    assert sorted(after) == ["a", "b", "d"] and after["a"] == before["a"]
    assert after["b"] != before["b"]
    await mm.close()
    again = MetaManager(path)
    await again.open()
    assert again.get("pods", "default", "b") == changed
    assert sorted(p["metadata"]["name"] for p in again.pods()) == ["a", "b", "d"]
    await again.close()


async def test_queued_status_survives_restart_until_acked(tmp_path):
    path = str(tmp_path / "meta.db")
    mm = MetaManager(path)
    await mm.open()
    first = new_message(source="edgehub", group=GROUP_RESOURCE, operation="update",
                        resource="pods/default/a/status", content={"phase": "Pending"},
                        key="pods/default/a/status")
    other = new_message(source="edgehub", group=GROUP_RESOURCE, operation="insert",
                        resource="events/default/e1", content={"reason": "Started"})
    newer = new_message(source="edgehub", group=GROUP_RESOURCE, operation="update",
                        resource="pods/default/a/status", content={"phase": "Running"},
                        key="pods/default/a/status")
    for m in (first, other, newer):
        await mm.queue(m)
    await mm.close()

    again = MetaManager(path)
    await again.open()
    queued = again.queued()
    assert [m.id for m in queued] == [other.id, newer.id]
    assert queued[1].content == {"phase": "Running"} and queued[1].key == newer.key
    await again.acked([other.id])
    assert [m.id for m in again.queued()] == [newer.id]
    await again.close()


def _older_meta_db(path: str, kind: str, obj: dict) -> sqlite3.Connection:
    """A meta.db as the stdlib sqlite3 version of the agent wrote it, holding `obj` in plain;
    open, for the caller to add to and close."""
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("CREATE TABLE objects (kind TEXT NOT NULL, namespace TEXT NOT NULL, "
                "name TEXT NOT NULL, body BLOB NOT NULL, PRIMARY KEY (kind, namespace, name))")
    old.execute("CREATE TABLE outbox (key TEXT PRIMARY KEY, id TEXT NOT NULL, body BLOB NOT NULL)")
    old.execute("CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    md = obj["metadata"]
    old.execute("INSERT INTO objects VALUES (?, ?, ?, ?)",
                (kind, md.get("namespace", ""), md["name"], orjson.dumps(obj)))
    return old


async def test_meta_db_of_an_older_agent_is_read(tmp_path):
    """An agent upgraded in place starts from the meta.db the stdlib sqlite3 version wrote."""
    path = str(tmp_path / "meta.db")
    old = _older_meta_db(path, "pods", _pod("a"))
    old.execute("INSERT INTO state VALUES ('synced', '1')")
    msg = new_message(source="edgehub", group=GROUP_RESOURCE, operation="update",
                      resource="pods/default/a/status", content={"phase": "Running"},
                      key="pods/default/a/status")
    old.execute("INSERT INTO outbox VALUES (?, ?, ?)",
                (msg.key, msg.id, orjson.dumps(msg.to_dict())))
    old.close()
    mm = MetaManager(path)
    await mm.open()
    assert mm.synced and [p["metadata"]["name"] for p in mm.pods()] == ["a"]
    assert [m.id for m in mm.queued()] == [msg.id]
    await mm.close()


async def test_apply_is_committed_before_it_returns(tmp_path):
    """What apply returned (and edgehub ACKed) is in the file for any other reader at once."""
    path = str(tmp_path / "meta.db")
    mm = MetaManager(path)
    await mm.open()
    try:
        assert await mm.apply(_put("pods", _pod("a")))
        other = sqlite3.connect(path)
        assert other.execute("SELECT name FROM objects").fetchall() == [("a",)]
        other.close()
    finally:
        await mm.close()


async def test_twin_state_survives_reopen_and_a_queued_report_is_no_longer_pending(tmp_path):
    path = str(tmp_path / "meta.db")
    mm = MetaManager(path)
    await mm.open()
    await mm.save_twins([("default", "a", {"twins": {"t": 1}}, {"twins": {"t": [1, 2, "int"]}}),
                         ("default", "b", {"twins": {}}, None)])
    report = new_message(source="edgehub", group=GROUP_RESOURCE, operation="update",
                         resource="devices/default/a/status", content={"twins": {}})
    await mm.queue_device_report(report, ("default", "a"))
    await mm.delete_twins([("default", "b")])
    await mm.close()
    mm = MetaManager(path)
    await mm.open()
    assert mm.twin_state() == {("default", "a"): ({"twins": {"t": 1}}, None)}
    assert [m.id for m in mm.queued()] == [report.id]
    await mm.close()


async def test_meta_db_syncs_every_commit(tmp_path):
    """synchronous=FULL in WAL mode: what apply() committed (and edgehub then ACKed) is on
    disk, so a power cut cannot take back a write the server was told is persisted."""
    mm = MetaManager(str(tmp_path / "meta.db"))
    await mm.open()
    assert mm._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert mm._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    await mm.close()


async def test_outbox_keeps_one_status_per_pod_and_caps_events(tmp_path):
    mm = MetaManager(str(tmp_path / "meta.db"))
    await mm.open()
    mm.max_queued_events = 5

    def up(key: str, content: dict):
        return new_message(source="edgehub", group=GROUP_RESOURCE, operation=OP_INSERT,
                           resource=key, key=key, content=content)
    for phase in ("Pending", "Running", "Failed"):  # the newest status supersedes the older
        assert await mm.queue(up("pods/default/a/status", {"phase": phase})) == []
    events = [up(f"events/default/a.{i}", {"count": 1}) for i in range(8)]
    dropped = []
    for i, ev in enumerate(events):
        dropped += await mm.queue(ev)
        if i == 1:  # a repeat of an Event replaces it and makes it the newest
            dropped += await mm.queue(up("events/default/a.0", {"count": 2}))
    queued = mm.queued()
    assert [m.key for m in queued] == ["pods/default/a/status"] + [
        f"events/default/a.{i}" for i in (3, 4, 5, 6, 7)]
    assert queued[0].content == {"phase": "Failed"}
    # a.1, then a.0's repeat, then a.2 were the oldest; a.0's first version was replaced
    assert mm.events_dropped == 3 and len(dropped) == 3
    assert events[1].id in dropped and events[2].id in dropped and events[0].id not in dropped
    await mm.close()


_SECRET = {"metadata": {"name": "s", "namespace": "default"},
           "data": {"password": "c3VwZXJzZWNyZXQtdmFsdWU="}}


def _files_hold(tmp_path, needle: bytes) -> list[str]:
    """The files (meta.db, its WAL) that hold `needle` anywhere, free pages included."""
    return [p.name for p in tmp_path.iterdir() if p.is_file() and needle in p.read_bytes()]


async def test_secrets_and_tokens_are_sealed_with_the_node_key(tmp_path):
    path = str(tmp_path / "meta.db")
    mm = MetaManager(path)
    await mm.open()
    token = {"metadata": {"name": "p", "namespace": "default"}, "token": "eyJhbGciOiJSUzI1NiJ9.x"}
    assert await mm.apply(_put("secrets", _SECRET))
    assert await mm.apply(_put("podtokens", token))
    assert _files_hold(tmp_path, b"c3VwZXJzZWNyZXQtdmFsdWU=") == []
    assert _files_hold(tmp_path, b"eyJhbGciOiJSUzI1NiJ9") == []
    await mm.close()
    assert (tmp_path / "meta.key").stat().st_mode & 0o777 == 0o600
    again = MetaManager(path)
    await again.open()
    assert again.get("secrets", "default", "s") == _SECRET
    assert again.get("podtokens", "default", "p") == token
    await again.close()


async def test_plain_secrets_of_an_older_agent_are_sealed_and_wiped(tmp_path):
    path = str(tmp_path / "meta.db")
    old = _older_meta_db(path, "secrets", _SECRET)
    old.execute("INSERT INTO state VALUES ('synced', '1')")
    old.close()
    assert _files_hold(tmp_path, b"c3VwZXJzZWNyZXQtdmFsdWU=")
    mm = MetaManager(path)
    await mm.open()
    assert mm.synced and mm.get("secrets", "default", "s") == _SECRET
    assert _files_hold(tmp_path, b"c3VwZXJzZWNyZXQtdmFsdWU=") == []
    await mm.close()


async def test_without_its_key_the_sealed_rows_are_dropped_for_a_full_sync(tmp_path):
    path = str(tmp_path / "meta.db")
    mm = MetaManager(path)
    await mm.open()
    assert await mm.apply(new_message(source="cloudhub", group=GROUP_RESOURCE, operation=OP_SYNC,
                                      content={"pods": [_pod("a")], "secrets": [_SECRET]}))
    await mm.close()
    (tmp_path / "meta.key").unlink()  # a copied meta.db, without the key next to it
    again = MetaManager(path)
    await again.open()
    assert again.get("secrets", "default", "s") is None
    assert [p["metadata"]["name"] for p in again.pods()] == ["a"]
    assert not again.synced  # the server sends the full set again
    await again.close()


async def test_a_status_queued_during_a_pod_update_keeps_the_update(tmp_path):
    """The restarted agent's first status report of a pod, queued while the pod's update from
    the server (its deletion, made while the node was away) is being written: the cached pod
    keeps the update (with the reported status), in memory and in the file. A report that
    wrote back the pod as cached before the update lost the deletion for good (the server
    does not send an ACKed message again), so the evicted pod's containers ran on."""
    path = str(tmp_path / "meta.db")
    mm = MetaManager(path)
    await mm.open()
    await mm.apply(_put("pods", _pod("a")))
    deleted = _pod("a")
    deleted["metadata"]["deletionTimestamp"] = "2026-12-06T15:21:48Z"
    update = asyncio.create_task(mm.apply(_put("pods", deleted, OP_UPDATE)))
    await asyncio.sleep(0)  # the update's write is under way, its cache change not yet made
    await mm.queue(new_message(source="edgehub", group=GROUP_RESOURCE, operation=OP_UPDATE,
                               resource="pods/default/a/status", key="pods/default/a/status",
                               content={"uid": "uid-a", "status": {"phase": "Running"}}))
    await update
    for cached in (mm, None):
        if cached is None:
            await mm.close()
            cached = MetaManager(path)
            await cached.open()
        pod = cached.get("pods", "default", "a")
        assert pod["metadata"].get("deletionTimestamp") == "2026-12-06T15:21:48Z", pod
        assert pod["status"] == {"phase": "Running"}
    await cached.close()
