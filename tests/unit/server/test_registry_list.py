"""The registry's byte-splicing LIST path gives exactly what the decoding path gives."""

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


async def test_list_raw_declines_filtered_requests(registry):
    pods = registry.resources.get("", "v1", "pods")
    assert await registry.list_raw(pods, "default", ListOptions(label_selector="a=b")) is None
    assert await registry.list_raw(pods, "default", ListOptions(limit=10)) is None


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
