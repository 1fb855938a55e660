"""ReplicaSetController against the real registry: create, scale down, adopt, status.

Also the pure deletion ranking used to pick surplus pods."""

from __future__ import annotations

import pytest

from k3py.server.controllers.replicaset import ReplicaSetController, deletion_rank
from k3py.server.controllers.workloads_common import claim_candidates, watch_pods
from tests.unit.controllers.conftest import eventually

pytestmark = pytest.mark.unit


def rs_obj(replicas: int = 3) -> dict:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}


def test_deletion_rank_prefers_unscheduled_then_unready() -> None:
    a = {"metadata": {"name": "a"}, "spec": {"nodeName": "n"},
         "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
    b = {"metadata": {"name": "b"}, "spec": {}, "status": {"phase": "Pending"}}
    c = {"metadata": {"name": "c"}, "spec": {"nodeName": "n"}, "status": {"phase": "Running"}}
    assert [p["metadata"]["name"] for p in sorted([a, b, c], key=deletion_rank)] == \
        ["b", "c", "a"]


async def test_replicaset_scales_and_reports_status(env) -> None:
    await env.start(ReplicaSetController)
    reg = env.registry
    rs_res, pod_res = env.res("replicasets"), env.res("pods")

    async def rs_status() -> dict:
        return (await env.all("replicasets"))[0].get("status") or {}

    async def pod_names() -> set[str]:
        return {p["metadata"]["name"] for p in await env.all("pods")}

    orphan = {"metadata": {"name": "orphan", "labels": {"app": "web"}},
              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
    await reg.create(pod_res, "default", orphan)
    await reg.create(rs_res, "default", rs_obj(3))
    await eventually(lambda: _count(env.all("pods"), 3))
    await eventually(lambda: _eq(rs_status(), "replicas", 3))
    # orphan + 2 created, no duplicates: exactly two creations were recorded
    reasons = [e[2] for e in await env.events()]
    assert reasons.count("SuccessfulCreate") == 2 and reasons.count("SuccessfulDelete") == 0
    names = await pod_names()
    assert len(names) == 3 and "orphan" in names
    for p in await env.all("pods"):
        ref = p["metadata"]["ownerReferences"][0]
        assert ref["controller"] and ref["blockOwnerDeletion"] and ref["kind"] == "ReplicaSet"
    for n in names:
        await env.set_pod_status(n)
    await eventually(lambda: _eq(rs_status(), "availableReplicas", 3))
    assert (await rs_status())["observedGeneration"] == 1
    rs = (await env.all("replicasets"))[0]
    rs["spec"]["replicas"] = 1
    await reg.update(rs_res, "default", "web", rs)
    await eventually(lambda: _count(env.all("pods"), 1))
    await eventually(lambda: _eq(rs_status(), "replicas", 1))
    events = await env.events()
    reasons = [e[2] for e in events]
    assert reasons.count("SuccessfulCreate") == 2 and reasons.count("SuccessfulDelete") == 2
    assert any(e[3].startswith("Created pod: web-") for e in events)


async def _count(items, n: int) -> bool:
    return len(await items) == n


async def _eq(obj, key: str, value) -> bool:
    return (await obj).get(key) == value


async def test_claim_candidates_are_its_own_pods_and_the_live_orphans(env) -> None:
    """What a reconcile claims from: the indexes, not every pod of the namespace. Pods
    another controller owns, pods of another namespace naming its uid, and orphans elsewhere
    or terminating, are not candidates; an adopted orphan moves to its owner's."""
    inf, pod_res = watch_pods(env.ctx)
    await env.ctx.informers.wait_synced()
    owner = {"kind": "ReplicaSet", "metadata": {"name": "web", "namespace": "default",
                                                "uid": "u-web"}}

    def pod(name: str, owner_uid: str = "", **md) -> dict:
        refs = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x", "uid": owner_uid,
                 "controller": True}] if owner_uid else []
        return {"metadata": {"name": name, "labels": {"app": "web"}, "ownerReferences": refs,
                             **md}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
    for p in (pod("mine", owner_uid="u-web"), pod("theirs", owner_uid="u-other"),
              pod("orphan"), pod("held", finalizers=["k3py.io/test"])):
        await env.registry.create(pod_res, "default", p)
    await env.registry.delete(pod_res, "default", "held", {})  # terminating: kept by its finalizer
    # another namespace's pod naming the owner's uid is not the owner's (an owner reference
    # names an object of the pod's own namespace)
    await env.registry.create(pod_res, "kube-system", pod("elsewhere", owner_uid="u-web"))

    def names() -> set[str]:
        return {p["metadata"]["name"] for p in claim_candidates(inf, owner)}
    await eventually(lambda: names() == {"mine", "orphan"})

    def adopt(cur: dict) -> dict:
        cur["metadata"]["ownerReferences"] = pod("x", owner_uid="u-other")["metadata"][
            "ownerReferences"]
        return cur
    await env.registry.update_with(pod_res, "default", "orphan", adopt)
    await eventually(lambda: names() == {"mine"})
