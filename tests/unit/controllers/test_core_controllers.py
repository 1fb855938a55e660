"""Namespace, ServiceAccount and garbage-collection controllers against a real Registry on a
temporary SQLite store: namespace contents removed, default SA made, orphans and foreground."""

from __future__ import annotations

import asyncio

import pytest

from k3py.api.objects import make_controller_ref
from k3py.server.controllers.gc import GarbageCollector
from k3py.server.controllers.namespace import NamespaceController
from k3py.server.controllers.serviceaccount import ServiceAccountController
from k3py.server.registry import Registry
from tests.unit.conftest import eventually

pytestmark = pytest.mark.unit


@pytest.fixture
async def cluster(env):
    await env.start(NamespaceController, ServiceAccountController, GarbageCollector)
    return env.registry


def r(reg: Registry, plural: str, group: str = ""):
    return reg.resources.find(group, plural)


def cm(name: str, owner: dict | None = None) -> dict:
    md: dict = {"name": name}
    if owner:
        md["ownerReferences"] = [make_controller_ref(owner)]
    return {"metadata": md, "data": {"a": "b"}}


def pod(name: str, owner: dict | None = None) -> dict:
    md: dict = {"name": name}
    if owner:
        md["ownerReferences"] = [make_controller_ref(owner)]
    return {"metadata": md, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


def rs(name: str) -> dict:
    labels = {"app": name}
    return {"metadata": {"name": name}, "spec": {
        "replicas": 0, "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels},
                     "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}


async def test_default_service_account_in_new_namespace(cluster):
    reg = cluster
    await reg.create(r(reg, "namespaces"), None, {"metadata": {"name": "team"}})

    async def sa():
        return await reg.try_get(r(reg, "serviceaccounts"), "team", "default")
    assert await eventually(sa, timeout=10.0)
    await reg.delete(r(reg, "serviceaccounts"), "team", "default")
    assert await eventually(sa, timeout=10.0)


async def test_namespace_delete_removes_contents(cluster):
    reg = cluster
    ns_res = r(reg, "namespaces")
    await reg.create(ns_res, None, {"metadata": {"name": "gone"}})
    await reg.create(r(reg, "configmaps"), "gone", cm("one"))
    await reg.create(r(reg, "pods"), "gone", pod("p"))
    deleted = await reg.delete(ns_res, None, "gone")
    assert deleted["metadata"].get("deletionTimestamp")
    assert deleted["status"]["phase"] == "Terminating"

    async def ns_gone():
        return await reg.try_get(ns_res, None, "gone") is None
    await eventually(ns_gone, timeout=10.0)
    assert (await reg.list(r(reg, "configmaps"), "gone"))["items"] == []
    assert (await reg.list(r(reg, "pods"), "gone"))["items"] == []


async def test_gc_deletes_dependents_of_deleted_owner(cluster):
    reg = cluster
    owner = await reg.create(r(reg, "replicasets", "apps"), "default", rs("web"))
    await reg.create(r(reg, "pods"), "default", pod("web-1", owner))
    await reg.delete(r(reg, "replicasets", "apps"), "default", "web")

    async def pod_gone():
        return await reg.try_get(r(reg, "pods"), "default", "web-1") is None
    await eventually(pod_gone, timeout=10.0)


async def test_gc_dangling_owner_uid(cluster):
    reg = cluster
    ghost = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
             "metadata": {"name": "ghost", "uid": "0000-gone"}}
    await reg.create(r(reg, "pods"), "default", pod("orphan", ghost))
    owner = await reg.create(r(reg, "replicasets", "apps"), "default", rs("alive"))
    await reg.create(r(reg, "pods"), "default", pod("kept", owner))

    async def orphan_gone():
        return await reg.try_get(r(reg, "pods"), "default", "orphan") is None
    await eventually(orphan_gone, timeout=10.0)
    await asyncio.sleep(0.3)
    assert await reg.try_get(r(reg, "pods"), "default", "kept") is not None


async def test_gc_foreground_and_orphan(cluster):
    reg = cluster
    rs_res = r(reg, "replicasets", "apps")
    fg = await reg.create(rs_res, "default", rs("fg"))
    await reg.create(r(reg, "pods"), "default", pod("fg-1", fg))
    out = await reg.delete(rs_res, "default", "fg", {"propagationPolicy": "Foreground"})
    assert "foregroundDeletion" in out["metadata"]["finalizers"]

    async def both_gone():
        return (await reg.try_get(rs_res, "default", "fg") is None and
                await reg.try_get(r(reg, "pods"), "default", "fg-1") is None)
    await eventually(both_gone, timeout=10.0)

    orph = await reg.create(rs_res, "default", rs("orph"))
    await reg.create(r(reg, "pods"), "default", pod("orph-1", orph))
    await reg.delete(rs_res, "default", "orph", {"propagationPolicy": "Orphan"})

    async def owner_gone():
        return await reg.try_get(rs_res, "default", "orph") is None
    await eventually(owner_gone, timeout=10.0)
    await asyncio.sleep(0.3)
    left = await reg.get(r(reg, "pods"), "default", "orph-1")
    assert not left["metadata"].get("ownerReferences")
