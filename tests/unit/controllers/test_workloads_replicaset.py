"""ReplicaSetController against the in-memory registry: create, scale down, adopt, status.

Also the pure deletion ranking used to pick surplus pods."""

from __future__ import annotations

import pytest

from k3py.server.controllers.replicaset import ReplicaSetController, deletion_rank
from tests.unit.controllers.test_workloads_fakes import make_ctx, settle

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


async def test_replicaset_scales_and_reports_status() -> None:
    reg, ctx = make_ctx()
    c = ReplicaSetController(ctx)
    await c.start()
    try:
        rs_res = reg.resources.find("apps", "replicasets")
        pod_res = reg.resources.find("", "pods")
        orphan = {"metadata": {"name": "orphan", "labels": {"app": "web"}}, "spec": {}}
        await reg.create(pod_res, "default", orphan)
        await reg.create(rs_res, "default", rs_obj(3))
        await settle(lambda: len(reg.all("pods")) == 3)
        await settle(lambda: (reg.all("replicasets")[0].get("status") or {}).get("replicas") == 3)
        assert reg.creates["pods"] == 3  # orphan + 2 created, no duplicates
        names = {p["metadata"]["name"] for p in reg.all("pods")}
        assert "orphan" in names
        for p in reg.all("pods"):
            ref = p["metadata"]["ownerReferences"][0]
            assert ref["controller"] and ref["blockOwnerDeletion"] and ref["kind"] == "ReplicaSet"
        for n in names:
            await reg.set_pod_status(n)
        await settle(lambda: reg.all("replicasets")[0]["status"].get("availableReplicas") == 3)
        assert reg.all("replicasets")[0]["status"]["observedGeneration"] == 1
        rs = reg.all("replicasets")[0]
        rs["spec"]["replicas"] = 1
        await reg.update(rs_res, "default", "web", rs)
        await settle(lambda: len(reg.all("pods")) == 1)
        await settle(lambda: reg.all("replicasets")[0]["status"]["replicas"] == 1)
        reasons = [e[2] for e in ctx.recorder.events]
        assert reasons.count("SuccessfulCreate") == 2 and reasons.count("SuccessfulDelete") == 2
        assert any(e[3].startswith("Created pod: web-") for e in ctx.recorder.events)
    finally:
        await c.stop()
        await ctx.informers.stop()
