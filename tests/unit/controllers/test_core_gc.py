"""GarbageCollector: owner classification, background deletion of orphaned dependents (also
owners that never existed), Foreground and Orphan propagation, multiple owners."""

import pytest

from k3py.server.controllers.gc import GarbageCollector, classify_owners, deletion_policy
from tests.unit.controllers.test_core_support import cluster, eventually

pytestmark = pytest.mark.unit


def ref(owner: dict, block: bool = True) -> dict:
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"],
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": block}


def cm(name: str, *owners: dict, **kw) -> dict:
    md = {"name": name, **kw}
    if owners:
        md["ownerReferences"] = list(owners)
    return {"metadata": md, "data": {}}


def test_classify_and_policy() -> None:
    dep = {"metadata": {"ownerReferences": [{"uid": "a"}, {"uid": "b"}, {"uid": "c"}]}}
    states = {"a": "solid", "b": "dangling", "c": "waiting"}
    solid, dangling, waiting = classify_owners(dep, lambda r: states[r["uid"]])
    assert [r["uid"] for r in solid] == ["a"]
    assert [r["uid"] for r in dangling] == ["b"] and [r["uid"] for r in waiting] == ["c"]
    assert deletion_policy({"metadata": {}}, []) == "Background"
    assert deletion_policy({"metadata": {}}, [{"uid": "c"}]) == "Foreground"
    assert deletion_policy({"metadata": {"finalizers": ["orphan"]}}, []) == "Orphan"


async def test_background_and_never_existed_owner(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        await c.start(GarbageCollector)
        owner = await c.create("configmaps", cm("owner"))
        kept = await c.create("configmaps", cm("dep", ref(owner)))
        ghost = {"apiVersion": "v1", "kind": "ConfigMap", "name": "ghost",
                 "uid": "00000000-0000-0000-0000-000000000001"}
        await c.create("secrets", {"metadata": {"name": "orphaned", "ownerReferences": [ghost]}})

        async def ghost_dep_gone():
            return await c.get("secrets", "default", "orphaned") is None
        await eventually(ghost_dep_gone)
        assert await c.get("configmaps", "default", "dep") is not None
        assert kept

        await c.delete("configmaps", "default", "owner")

        async def dep_gone():
            return await c.get("configmaps", "default", "dep") is None
        await eventually(dep_gone)


async def test_multiple_owners_keep_dependent(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        await c.start(GarbageCollector)
        a = await c.create("configmaps", cm("a"))
        b = await c.create("configmaps", cm("b"))
        await c.create("configmaps", cm("dep", ref(a), {**ref(b), "controller": False}))
        await c.delete("configmaps", "default", "a")

        async def ref_removed():
            d = await c.get("configmaps", "default", "dep")
            return d and [r["name"] for r in d["metadata"].get("ownerReferences") or []] == ["b"]
        await eventually(ref_removed)


async def test_foreground(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        await c.start(GarbageCollector)
        owner = await c.create("configmaps", cm("owner"))
        mid = await c.create("configmaps", cm("mid", ref(owner)))
        await c.create("configmaps", cm("leaf", ref(mid)))
        out = await c.delete("configmaps", "default", "owner", propagationPolicy="Foreground")
        assert "foregroundDeletion" in out["metadata"]["finalizers"]

        async def all_gone():
            return all([await c.get("configmaps", "default", n) is None
                        for n in ("owner", "mid", "leaf")])
        await eventually(all_gone)


async def test_orphan(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        await c.start(GarbageCollector)
        owner = await c.create("configmaps", cm("owner"))
        await c.create("configmaps", cm("dep", ref(owner)))
        await c.delete("configmaps", "default", "owner", propagationPolicy="Orphan")

        async def owner_gone():
            return await c.get("configmaps", "default", "owner") is None
        await eventually(owner_gone)
        dep = await c.get("configmaps", "default", "dep")
        assert dep is not None and not dep["metadata"].get("ownerReferences")


async def test_cluster_scoped_owner(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        await c.start(GarbageCollector)
        node = await c.create("nodes", {"metadata": {"name": "n1"}})
        await c.create("leases", {"metadata": {"name": "n1", "namespace": "kube-node-lease",
                                               "ownerReferences": [ref(node)]},
                                  "spec": {"holderIdentity": "n1"}}, group="coordination.k8s.io")
        await c.delete("nodes", None, "n1")

        async def lease_gone():
            return await c.get("leases", "kube-node-lease", "n1",
                               group="coordination.k8s.io") is None
        await eventually(lease_gone)
