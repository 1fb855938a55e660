"""The scheduler's volume binding against a real in-process Registry: a bound volume's node
affinity, static WaitForFirstConsumer volumes bound on the chosen node, upstream's
FailedScheduling texts for missing, immediate-unbound and unsatisfiable claims, and a PreBind
stopped by the cancel that lands as a claim event wakes it."""

from __future__ import annotations

import asyncio

import pytest

from k3py.aio import cancel_and_wait
from k3py.server.controllers.persistentvolume import PersistentVolumeController
from k3py.server.controllers.volumematch import ANN_SELECTED_NODE, annotations
from k3py.server.scheduler.scheduler import Scheduler
from k3py.server.scheduler.volumebinding import VolumeBinder
from tests.unit.controllers.test_core_support import cluster, eventually
from tests.unit.controllers.test_storage_binding import pv, pvc, wait_phase

pytestmark = pytest.mark.unit

SC = "storage.k8s.io"


def node(name: str) -> dict:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}}


def on_node(name: str) -> dict:
    return {"required": {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": [name]}]}]}}


def pod(name: str, *claims: str) -> dict:
    return {"metadata": {"name": name}, "spec": {
        "containers": [{"name": "c", "image": "x"}],
        "volumes": [{"name": f"v{i}", "persistentVolumeClaim": {"claimName": c}}
                    for i, c in enumerate(claims)]}}


async def nodes_and_scheduler(c) -> None:
    for n in ("n1", "n2", "n3"):
        await c.create("nodes", node(n))
    await c.create("storageclasses", {"metadata": {"name": "manual"},
                                      "provisioner": "kubernetes.io/no-provisioner",
                                      "volumeBindingMode": "WaitForFirstConsumer"}, group=SC)
    await c.start(PersistentVolumeController)
    await c.start(Scheduler)


async def node_of(c, name: str) -> str:
    async def bound():
        return (await c.get("pods", "default", name))["spec"].get("nodeName")
    return await eventually(bound, what=f"pod {name} bound")


async def unschedulable_message(c, name: str) -> str:
    async def cond():
        p = await c.get("pods", "default", name)
        for x in (p.get("status") or {}).get("conditions") or []:
            if x["type"] == "PodScheduled" and x["status"] == "False":
                return x["message"]
        return None
    return await eventually(cond, what=f"pod {name} unschedulable")


async def test_bound_volume_node_affinity(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        await nodes_and_scheduler(c)
        await c.create("persistentvolumes", pv("on-n2", "1Gi", nodeAffinity=on_node("n2")))
        await c.create("persistentvolumeclaims", pvc("data", "1Gi"))
        await wait_phase(c, "persistentvolumeclaims", "data", "Bound")
        for i in range(3):
            await c.create("pods", pod(f"p{i}", "data"))
        for i in range(3):
            assert await node_of(c, f"p{i}") == "n2"
        # a second claim bound to a volume on another node: no node has both
        await c.create("persistentvolumes", pv("on-n3", "1Gi", nodeAffinity=on_node("n3"),
                                               labels={"n": "3"}))
        await c.create("persistentvolumeclaims", pvc("other", "1Gi", selector={
            "matchLabels": {"n": "3"}}))
        await wait_phase(c, "persistentvolumeclaims", "other", "Bound")
        await c.create("pods", pod("both", "data", "other"))
        assert await unschedulable_message(c, "both") == (
            "0/3 nodes are available: 3 node(s) had volume node affinity conflict. "
            "preemption: 0/3 nodes are available: 3 Preemption is not helpful for "
            "scheduling.")


async def test_wait_for_first_consumer_static_volume(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        await nodes_and_scheduler(c)
        await c.create("persistentvolumes", pv("local-n3", "5Gi", cls="manual",
                                               nodeAffinity=on_node("n3")))
        await c.create("persistentvolumes", pv("local-n1", "1Gi", cls="manual",
                                               nodeAffinity=on_node("n1")))
        await wait_phase(c, "persistentvolumes", "local-n3", "Available")
        await c.create("persistentvolumeclaims", pvc("big", "3Gi", cls="manual"))
        await c.create("pods", pod("db", "big"))
        assert await node_of(c, "db") == "n3"
        await wait_phase(c, "persistentvolumeclaims", "big", "Bound")
        vol = await c.get("persistentvolumes", None, "local-n3")
        assert vol["spec"]["claimRef"]["name"] == "big"
        assert vol["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"] == "yes"
        # nothing left that fits on any node, and no provisioner for the class
        await c.create("persistentvolumeclaims", pvc("more", "3Gi", cls="manual"))
        await c.create("pods", pod("db-2", "more"))
        assert await unschedulable_message(c, "db-2") == (
            "0/3 nodes are available: 3 node(s) didn't find available persistent volumes to "
            "bind. preemption: 0/3 nodes are available: 3 Preemption is not helpful for "
            "scheduling.")
        # a volume appears: the pending pod is retried and lands with it
        await c.create("persistentvolumes", pv("late-n2", "3Gi", cls="manual",
                                               nodeAffinity=on_node("n2")))
        assert await node_of(c, "db-2") == "n2"


async def test_claims_checked_before_nodes(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        await nodes_and_scheduler(c)
        await c.create("pods", pod("orphan", "nope"))
        assert await unschedulable_message(c, "orphan") == (
            '0/3 nodes are available: persistentvolumeclaim "nope" not found. preemption: '
            "0/3 nodes are available: 3 Preemption is not helpful for scheduling.")
        await c.create("persistentvolumeclaims", pvc("immediate", "1Gi"))
        await c.create("pods", pod("waits", "immediate"))
        assert await unschedulable_message(c, "waits") == (
            "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims. "
            "preemption: 0/3 nodes are available: 3 Preemption is not helpful for "
            "scheduling.")
        events = [e for e in await c.events("default") if e[0] == "waits"]
        assert events and events[0][1:3] == ("Warning", "FailedScheduling")
        # the claim gets a volume: the pod is scheduled
        await c.create("persistentvolumes", pv("any", "1Gi"))
        await wait_phase(c, "persistentvolumeclaims", "immediate", "Bound")
        assert await node_of(c, "waits") in ("n1", "n2", "n3")
        # the missing claim is created and bound: that pod goes too
        await c.create("persistentvolumes", pv("for-nope", "1Gi"))
        await c.create("persistentvolumeclaims", pvc("nope", "1Gi"))
        assert await node_of(c, "orphan") in ("n1", "n2", "n3")


async def test_prebind_stops_on_a_cancel_landing_as_a_claim_event_wakes_it(tmp_path) -> None:
    """The scheduler's stop cancels a PreBind waiting for its claims in the very turn a claim
    event wakes that wait: the bind ends cancelled. (Python 3.11's wait_for returned the
    wake-up and lost the cancel there: the bind went on waiting up to BIND_TIMEOUT.)"""
    async with cluster(tmp_path) as c:
        await c.create("storageclasses", {"metadata": {"name": "remote"},
                                          "provisioner": "example.com/nfs",
                                          "volumeBindingMode": "WaitForFirstConsumer"}, group=SC)
        await c.create("persistentvolumeclaims", pvc("data", "1Gi", cls="remote"))
        binder = VolumeBinder(c.ctx)
        await binder.synced()
        await eventually(lambda: binder.claims.get("default", "data"), what="claim cached")
        claimant = pod("p", "data")
        claimant["metadata"]["namespace"] = "default"
        decision = binder.assume(binder.pre_filter(claimant), node("n1"))
        binding = asyncio.create_task(binder.bind(decision))
        try:
            def waiting() -> bool:  # the node selected on the claim, no provisioner answers
                claim = binder.claims.get("default", "data")
                return ANN_SELECTED_NODE in annotations(claim) and bool(binder._waiters)
            await eventually(waiting, what="the bind waiting for its claim")

            def cancel_as_poked(etype: str, old: dict | None, new: dict | None) -> None:
                if ((new or {}).get("metadata") or {}).get("labels", {}).get("poke"):
                    binding.cancel()  # called after the binder's own handler has woken it
            binder.claims.add_handler(cancel_as_poked)

            def poke(cur: dict) -> dict:
                cur["metadata"].setdefault("labels", {})["poke"] = "yes"
                return cur
            await c.registry.update_with(c.res("persistentvolumeclaims"), "default", "data",
                                         poke)
            await asyncio.wait({binding}, timeout=60)  # a generous bound: fails only a hang
            assert binding.cancelled()
        finally:
            await cancel_and_wait(binding)
