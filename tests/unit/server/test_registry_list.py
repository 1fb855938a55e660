"""The registry's byte-splicing paths (LIST, a create's response) give exactly what
decoding gives; a patch is compared with the stored object it was applied to."""

from __future__ import annotations

import orjson
import pytest

from k3py.server.registry import ListOptions

pytestmark = pytest.mark.unit


@pytest.fixture
def registry(env):
    return env.registry


async def test_list_raw_equals_decoded_list(registry):
    pods = registry.resources.get("", "v1", "pods")
    for i in range(5):
        # key order deliberately unusual: metadata after spec, template-like nesting
        await registry.create(pods, "default", {
            "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
            "metadata": {"name": f"p{i}", "labels": {"i": str(i)}},
            "kind": "Pod", "apiVersion": "v1"})
    raw = await registry.list_raw(pods, "default")
    assert raw is not None
    decoded = await registry.list(pods, "default")
    assert orjson.loads(raw) == decoded
    assert [p["metadata"]["resourceVersion"] for p in orjson.loads(raw)["items"]] == \
        [p["metadata"]["resourceVersion"] for p in decoded["items"]]


async def test_list_raw_pages_equal_decoded_pages(registry):
    """kubectl's chunked LIST (limit, then continue) is spliced too, page for page, at the
    first page's revision even after a later write; so is a LIST at an Exact revision."""
    cms = registry.resources.get("", "v1", "configmaps")
    await registry.create(registry.resources.get("", "v1", "namespaces"), None,
                          {"metadata": {"name": "paged"}})
    for i in range(5):
        await registry.create(cms, "paged", {"metadata": {"name": f"c{i}"}, "data": {"i": str(i)}})
    opts = ListOptions(limit=2)
    raw_pages = [orjson.loads(await registry.list_raw(cms, "paged", opts))]
    pages = [await registry.list(cms, "paged", opts)]
    await registry.create(cms, "paged", {"metadata": {"name": "late"}})  # after the first page
    while raw_pages[-1]["metadata"].get("continue"):
        opts = ListOptions(limit=2, continue_=raw_pages[-1]["metadata"]["continue"])
        raw_pages.append(orjson.loads(await registry.list_raw(cms, "paged", opts)))
        pages.append(await registry.list(cms, "paged", opts))
    assert raw_pages == pages
    assert [[c["metadata"]["name"] for c in p["items"]] for p in raw_pages] == \
        [["c0", "c1"], ["c2", "c3"], ["c4"]]
    exact = ListOptions(resource_version=raw_pages[0]["metadata"]["resourceVersion"],
                        resource_version_match="Exact")
    assert orjson.loads(await registry.list_raw(cms, "paged", exact)) == \
        await registry.list(cms, "paged", exact)


async def test_list_raw_declines_filtered_requests(registry):
    pods = registry.resources.get("", "v1", "pods")
    assert await registry.list_raw(pods, "default", ListOptions(label_selector="a=b")) is None
    assert await registry.list_raw(pods, "default", ListOptions(field_selector="a=b")) is None


async def test_events_k8s_io_list_is_converted_not_spliced(registry):
    core = registry.resources.get("", "v1", "events")
    new = registry.resources.get("events.k8s.io", "v1", "events")
    await registry.create(core, "default", {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"},
        "involvedObject": {"kind": "Pod", "name": "x"}, "reason": "R", "message": "m"})
    assert await registry.list_raw(new, "default") is None
    listed = await registry.list(new, "default")
    assert listed["items"][0]["note"] == "m"
    assert listed["items"][0]["regarding"]["name"] == "x"


async def test_created_bytes_equal_the_created_and_the_stored_object(registry):
    """A create's JSON (the stored bytes, resourceVersion spliced in, which the API sends
    back) is the object create returns and a GET then reads, managedFields included; a dry
    run has none to reuse."""
    pods = registry.resources.get("", "v1", "pods")
    created = await registry.create_encoded(pods, "default", {
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "env": [
            {"name": "A", "value": "<&>\u2028"}]}]},
        "metadata": {"name": "enc", "labels": {"a": "b"}}, "kind": "Pod", "apiVersion": "v1"},
        field_manager="kubectl")
    assert created.data is not None
    assert orjson.loads(created.data) == created.obj == await registry.get(pods, "default", "enc")
    assert created.obj["metadata"]["managedFields"][0]["manager"] == "kubectl"
    dry = await registry.create_encoded(pods, "default", {"metadata": {"name": "dry"}, "spec": {
        "containers": [{"name": "c", "image": "busybox:1.36"}]}}, dry_run=True)
    assert dry.data is None and dry.obj["metadata"]["name"] == "dry"


async def test_patches_write_what_changed_against_the_stored_object(registry):
    """A JSON, merge or strategic patch is compared with the stored object it was applied to
    (decoded once, not again for the write): a change is written with a new resourceVersion
    and the patcher's managedFields, the same patch again is a no-op that keeps it."""
    cms = registry.resources.get("", "v1", "configmaps")
    await registry.create(cms, "default", {"metadata": {"name": "pat"}, "data": {"a": "1"}},
                          field_manager="kubectl")
    patches = [("merge", b'{"data":{"b":"2"}}'),
               ("strategic", b'{"metadata":{"labels":{"l":"x"}}}'),
               ("json", b'[{"op":"replace","path":"/data/a","value":"3"}]')]
    for ptype, body in patches:
        before = await registry.get(cms, "default", "pat")
        changed = await registry.patch(cms, "default", "pat", body, ptype, field_manager=ptype)
        assert changed["metadata"]["resourceVersion"] != before["metadata"]["resourceVersion"]
        assert ptype in [e["manager"] for e in changed["metadata"]["managedFields"]]
        again = await registry.patch(cms, "default", "pat", body, ptype, field_manager=ptype)
        assert again == changed == await registry.get(cms, "default", "pat")
    stored = await registry.get(cms, "default", "pat")
    assert stored["data"] == {"a": "3", "b": "2"} and stored["metadata"]["labels"] == {"l": "x"}
