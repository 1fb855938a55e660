"""Pod deletion as upstream's pod strategy and pod GC make it, against a real Registry: a pod
bound to a node stays Terminating until its node confirms or a grace-0 delete forces it; an
unscheduled or finished pod goes at once; PodGCController force-deletes the pods of a Node that
no longer exists (after its quarantine) and terminating pods that were never scheduled."""

from __future__ import annotations

import pytest

from k3py.server.controllers.podgc import PodGCController
from tests.unit.conftest import eventually

pytestmark = pytest.mark.unit


def _pod(name: str, node: str = "", grace: int | None = None) -> dict:
    spec: dict = {"containers": [{"name": "c", "image": "busybox"}]}
    if node:
        spec["nodeName"] = node
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {"metadata": {"name": name}, "spec": spec}


async def test_graceful_delete_follows_the_pod_strategy(env):
    reg, pods, nodes = env.registry, env.res("pods"), env.res("nodes")
    await reg.create(nodes, None, {"metadata": {"name": "n1"}})
    await reg.create(pods, "default", _pod("bound", "n1", grace=7))
    await reg.create(pods, "default", _pod("loose"))
    await reg.create(pods, "default", _pod("done", "n1"))
    await env.set_pod_status("done", phase="Succeeded", ready=False)

    out = await reg.delete(pods, "default", "bound")
    assert out["metadata"]["deletionTimestamp"]
    assert out["metadata"]["deletionGracePeriodSeconds"] == 7
    # a second delete may only shorten the grace
    out = await reg.delete(pods, "default", "bound", {"gracePeriodSeconds": 30})
    assert out["metadata"]["deletionGracePeriodSeconds"] == 7
    out = await reg.delete(pods, "default", "bound", {"gracePeriodSeconds": 2})
    assert out["metadata"]["deletionGracePeriodSeconds"] == 2
    assert (await reg.get(pods, "default", "bound"))["metadata"]["deletionTimestamp"]
    # kubectl delete --force --grace-period=0
    await reg.delete(pods, "default", "bound", {"gracePeriodSeconds": 0})
    assert await reg.try_get(pods, "default", "bound") is None

    for name in ("loose", "done"):  # unscheduled, finished: nothing to wait for
        await reg.delete(pods, "default", name)
        assert await reg.try_get(pods, "default", name) is None


async def test_pod_gc_force_deletes_pods_no_node_will_stop(env):
    env.ctx.extra["pod_gc_quarantine"] = 0.5
    reg, pods, nodes = env.registry, env.res("pods"), env.res("nodes")
    await reg.create(nodes, None, {"metadata": {"name": "n1"}})
    await reg.create(nodes, None, {"metadata": {"name": "n2"}})
    await reg.create(pods, "default", _pod("on-n1", "n1"))
    await reg.create(pods, "default", _pod("on-n2", "n2"))
    await reg.create(pods, "default", _pod("terminating-on-n2", "n2"))
    await reg.delete(pods, "default", "terminating-on-n2")
    await env.start(PodGCController)

    await reg.delete(nodes, None, "n2")

    async def n2_pods_gone():
        names = {p["metadata"]["name"] for p in await env.all("pods")}
        return names == {"on-n1"}
    await eventually(n2_pods_gone, timeout=10.0)
    on_n1 = await reg.get(pods, "default", "on-n1")
    assert not on_n1["metadata"].get("deletionTimestamp")


async def test_pod_gc_quarantine_keeps_pods_of_a_node_that_returns(env):
    env.ctx.extra["pod_gc_quarantine"] = 1.5
    reg, pods, nodes = env.registry, env.res("pods"), env.res("nodes")
    await reg.create(nodes, None, {"metadata": {"name": "n1"}})
    await reg.create(pods, "default", _pod("p", "n1"))
    await env.start(PodGCController)
    await reg.delete(nodes, None, "n1")
    await reg.create(nodes, None, {"metadata": {"name": "n1"}})  # re-registered in time
    await reg.create(pods, "default", _pod("orphan", "nowhere"))

    async def orphan_gone():
        return await reg.try_get(pods, "default", "orphan") is None
    await eventually(orphan_gone, timeout=10.0)
    assert await reg.try_get(pods, "default", "p") is not None
