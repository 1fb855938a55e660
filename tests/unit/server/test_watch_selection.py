"""A watch with a label or field selector sees upstream's watch-cache transitions (a
MODIFIED into the selection is ADDED, out of it DELETED with the object it left at the
event's resourceVersion, outside it nothing), as JSON bytes and decoded alike, on a real
Registry over SQLite; the labels of each object version are decoded once for all its
watchers, and a key written again is selected by its new labels."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from k3py.api.selectors import parse_field_selector, parse_label_selector
from k3py.server.registry import RawObject
from k3py.server.store.backend import Event, KeyValue
from k3py.server.watchselection import LabelMemo, WatchSelection

pytestmark = pytest.mark.unit


def _cm(name: str, **labels: str) -> dict:
    return {"metadata": {"name": name, "labels": labels}, "data": {"k": name}}


async def _relabel(env, name: str, **labels: str) -> dict:
    cms = env.res("configmaps")
    obj = await env.registry.get(cms, "default", name)
    obj["metadata"]["labels"] = labels
    return await env.registry.update(cms, "default", name, obj)


def _event(etype: str, obj: dict | RawObject) -> tuple[str, str, dict, str]:
    """(type, name, labels, resourceVersion) of a watch event."""
    if isinstance(obj, RawObject):
        obj = orjson.loads(obj.data)
    md = obj["metadata"]
    return etype, md["name"], md.get("labels") or {}, md["resourceVersion"]


async def _seen(stream, count: int) -> list[tuple[str, str, dict, str]]:
    """The first `count` events (_event) of a watch, which is then closed."""
    out = []
    async with asyncio.timeout(10):
        async for etype, obj in stream:
            out.append(_event(etype, obj))
            if len(out) == count:
                break
    await stream.aclose()
    return out


async def _watch(env, raw: bool, **selectors: str):
    rv = str(await env.registry.current_revision())
    return await env.registry.watch(env.res("configmaps"), "default", resource_version=rv,
                                    raw=raw, **selectors)


@pytest.mark.parametrize("raw", [True, False], ids=["json", "decoded"])
async def test_label_selector_transitions(env, raw):
    cms = env.res("configmaps")
    for name, app in (("stays", "x"), ("leaves", "x"), ("enters", "y"), ("never", "y"),
                      ("gone", "x"), ("gone-out", "y")):
        await env.registry.create(cms, "default", _cm(name, app=app))
    stream = await _watch(env, raw, label_selector="app=x")
    stays = await _relabel(env, "stays", app="x", v="2")        # in -> in
    leaves = await _relabel(env, "leaves", app="z")             # in -> out
    enters = await _relabel(env, "enters", app="x")             # out -> in
    await _relabel(env, "never", app="z")                       # out -> out
    await env.registry.delete(cms, "default", "gone")           # deleted while in
    await env.registry.delete(cms, "default", "gone-out")       # deleted while out
    await env.registry.create(cms, "default", _cm("end", app="x"))
    seen = await _seen(stream, 5)
    assert [(t, n, labels) for t, n, labels, _ in seen] == [
        ("MODIFIED", "stays", {"app": "x", "v": "2"}),
        ("DELETED", "leaves", {"app": "x"}),  # the version it left, at the event's rv
        ("ADDED", "enters", {"app": "x"}),
        ("DELETED", "gone", {"app": "x"}),
        ("ADDED", "end", {"app": "x"})]
    assert [rv for _, n, _, rv in seen[:3]] == [
        o["metadata"]["resourceVersion"] for o in (stays, leaves, enters)]


@pytest.mark.parametrize("raw", [True, False], ids=["json", "decoded"])
async def test_field_selectors_share_the_transitions(env, raw):
    """metadata.name (tested on the key) and a pod's status.phase (on the decoded object),
    each with a label selector too."""
    pods = env.res("pods")
    for name in ("a", "b"):
        await env.registry.create(pods, "default", {
            "metadata": {"name": name, "labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    rv = str(await env.registry.current_revision())
    by_name = await env.registry.watch(pods, "default", resource_version=rv, raw=raw,
                                       label_selector="app=x", field_selector="metadata.name=a")
    running = await env.registry.watch(pods, "default", resource_version=rv, raw=raw,
                                       label_selector="app=x",
                                       field_selector="status.phase=Running")

    async def phase(name: str, value: str) -> None:
        obj = await env.registry.get(pods, "default", name)
        obj["status"] = {"phase": value}
        await env.registry.update(pods, "default", name, obj, subresource="status")

    await phase("b", "Running")   # running: out -> in
    await phase("a", "Running")   # running: out -> in; by_name: in -> in
    await phase("b", "Running")   # no change: nothing written
    await phase("b", "Failed")    # running: in -> out
    obj = await env.registry.get(pods, "default", "a")
    obj["metadata"]["labels"] = {"app": "y"}
    await env.registry.update(pods, "default", "a", obj)  # both: in -> out (labels)
    await phase("a", "Failed")    # both: out -> out
    obj = await env.registry.get(pods, "default", "a")
    obj["metadata"]["labels"] = {"app": "x"}
    await env.registry.update(pods, "default", "a", obj)  # by_name: out -> in
    await phase("b", "Running")   # running: out -> in
    await phase("a", "Running")   # by_name: in -> in; running: out -> in
    assert [(t, n) for t, n, _, _ in await _seen(by_name, 4)] == [
        ("MODIFIED", "a"), ("DELETED", "a"), ("ADDED", "a"), ("MODIFIED", "a")]
    assert [(t, n) for t, n, _, _ in await _seen(running, 6)] == [
        ("ADDED", "b"), ("ADDED", "a"), ("DELETED", "b"), ("DELETED", "a"), ("ADDED", "b"),
        ("ADDED", "a")]


async def test_watchers_share_one_decode_per_version(env):
    """Three selecting watchers and a key written again (deleted, created anew with other
    labels) see what its labels of the time select; the memo holds each version once."""
    cms = env.res("configmaps")
    await env.registry.create(cms, "default", _cm("k", app="x"))
    streams = [await _watch(env, True, label_selector=s) for s in ("app=x", "app=y", "app")]
    memo, every = env.registry.labels, env.resources.storage_prefix(cms)
    memo_before = len(memo)
    await _relabel(env, "k", app="x", v="2")
    await env.registry.delete(cms, "default", "k")
    await env.registry.create(cms, "default", _cm("k", app="y"))
    await _relabel(env, "k", app="y", v="3")
    await env.registry.create(cms, "default", _cm("end", app="x"))
    await env.registry.create(cms, "default", _cm("end-y", app="y"))
    x = [_event(*await anext(streams[0]))]
    assert memo.wanted(every)  # a selecting watch is under way
    x += await _seen(streams[0], 2)
    y, anyapp = await _seen(streams[1], 3), await _seen(streams[2], 6)
    assert [(t, n) for t, n, _, _ in x] == [("MODIFIED", "k"), ("DELETED", "k"), ("ADDED", "end")]
    assert [(t, n) for t, n, _, _ in y] == [("ADDED", "k"), ("MODIFIED", "k"), ("ADDED", "end-y")]
    assert [(t, n) for t, n, _, _ in anyapp] == [
        ("MODIFIED", "k"), ("DELETED", "k"), ("ADDED", "k"), ("MODIFIED", "k"),
        ("ADDED", "end"), ("ADDED", "end-y")]
    # seven versions (the first as the old side of the first update, and the tombstone):
    # each remembered once, not once per watcher
    assert len(memo) - memo_before == 7
    # the watches have ended: an informer's decodes are no longer recorded
    assert not memo.wanted(every)


def test_label_memo_is_bounded_and_keyed_by_revision():
    memo = LabelMemo(entries=2)
    v1 = KeyValue("/registry/configmaps/default/k", 1, 1, b'{"metadata":{"labels":{"a":"1"}}}')
    v2 = KeyValue(v1.key, 1, 2, b'{"metadata":{"labels":{"a":"2"}}}')
    v3 = KeyValue(v1.key, 3, 3, b'{"metadata":{"name":"k"}}')
    assert [memo.labels(v) for v in (v1, v2, v3)] == [{"a": "1"}, {"a": "2"}, {}]
    assert len(memo) == 2
    memo.record(v1, {"metadata": {"labels": {"a": "1"}}})  # v1 had been dropped first
    assert len(memo) == 2 and memo.labels(v1) == {"a": "1"}
    unremembered = LabelMemo(entries=0)
    assert unremembered.labels(v2) == {"a": "2"} and len(unremembered) == 0


def _version(rev: int, phase: str, **labels: str) -> KeyValue:
    obj = {"metadata": {"name": "p", "labels": labels}, "status": {"phase": phase}}
    return KeyValue("/registry/pods/default/p", 1, rev, orjson.dumps(obj))


@pytest.mark.parametrize("fields", [None, "status.phase=Running"])
def test_an_update_leaving_the_selection_is_sent_as_the_version_it_left(fields):
    """(type, version sent) for each transition, with labels alone and with a field tested
    on the decoded object: the version an update left is the one sent as DELETED."""
    selection = WatchSelection(
        parse_label_selector("app=x"), parse_field_selector(fields) if fields else None,
        LabelMemo(), prefix="/registry/pods/", namespaced=True,
        decode=lambda kv: orjson.loads(kv.value))
    inside, outside = _version(2, "Running", app="x"), _version(3, "Running", app="y")
    if fields:
        outside = _version(3, "Failed", app="x")
    update = {"in-in": Event(False, False, _version(4, "Running", app="x", v="2"), inside),
              "in-out": Event(False, False, outside, inside),
              "out-in": Event(False, False, inside, outside),
              "out-out": Event(False, False, _version(5, "Failed", app="y"), outside)}
    assert selection.event(update["in-in"]) == ("MODIFIED", update["in-in"].kv)
    assert selection.event(update["in-out"]) == ("DELETED", inside)
    assert selection.event(update["out-in"]) == ("ADDED", inside)
    assert selection.event(update["out-out"]) is None
    assert selection.event(Event(True, False, inside)) == ("ADDED", inside)
    assert selection.event(Event(False, True, inside, inside)) == ("DELETED", inside)
    assert selection.event(Event(False, True, outside, outside)) is None
