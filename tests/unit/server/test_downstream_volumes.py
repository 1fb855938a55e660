"""What goes down the tunnel for volumes, over a real Registry, its informers and real node
sessions: a node's snapshot holds its pods' claims and their bound PVs and its own deleted
local-path PVs, nothing of another node's; a claim binding sends its PV first; a deleted
local-path PV goes to its node and so does its final removal."""

from __future__ import annotations

import pytest

from k3py.api.localpath import CLEANUP_FINALIZER, PROVISIONER
from k3py.server.edge.downstream import DownstreamSync
from k3py.server.edge.sessions import NodeSession
from k3py.tunnel.message import Message
from tests.unit.conftest import eventually

pytestmark = pytest.mark.unit


def _pod(name: str, node: str, claim: str = "") -> dict:
    vols = [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}] if claim else []
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "volumes": vols,
                     "containers": [{"name": "c", "image": "busybox"}]}}


def _claim(name: str, volume: str = "") -> dict:
    return {"metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                     "resources": {"requests": {"storage": "1Gi"}},
                     **({"volumeName": volume} if volume else {})}}


def _volume(name: str, node: str = "", local_path: bool = False) -> dict:
    md: dict = {"name": name}
    spec: dict = {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                  "storageClassName": "", "hostPath": {"path": f"/srv/{name}"}}
    if local_path:
        md |= {"annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
               "finalizers": [CLEANUP_FINALIZER]}
        spec["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}
    return {"metadata": md, "spec": spec}


async def _flushed(session: NodeSession) -> list[Message]:
    """What was queued for the node since the last flush, in the order it goes."""
    out: list[Message] = []

    async def write(msg: Message) -> None:
        out.append(msg)
    await session.queue.flush(write)
    return out


async def _drain(session: NodeSession) -> list[tuple[str, str]]:
    """(operation, resource) of what was queued for the node since the last drain."""
    return [(m.route.operation, m.route.resource) for m in await _flushed(session)]


async def test_volumes_go_to_the_nodes_that_need_them(env):
    reg = env.registry
    pvs, claims = env.res("persistentvolumes"), env.res("persistentvolumeclaims")
    await reg.create(pvs, None, _volume("pv-1"))
    await reg.create(claims, "default", _claim("data", "pv-1"))
    await reg.create(env.res("pods"), "default", _pod("pa", "a", "data"))
    await reg.create(env.res("pods"), "default", _pod("pb", "b"))
    await reg.create(pvs, None, _volume("pvc-gone", "a", local_path=True))
    await reg.delete(pvs, None, "pvc-gone", {})  # Terminating: the finalizer holds it
    sessions = {n: NodeSession(n) for n in ("a", "b")}
    sync = DownstreamSync(env.ctx.informers, sessions, None, lambda n: False,
                          network_policy=False)  # (peer views: to every node)
    sync.start()
    await env.ctx.informers.wait_synced()
    await eventually(lambda: sync.volumes.get(None, "pvc-gone") and
                     sync.pods.get("default", "pb"))

    def names(node: str, kind: str) -> list[str]:
        return [o["metadata"]["name"] for o in sync.snapshot(node).content[kind]]
    assert names("a", "persistentvolumeclaims") == ["data"]
    assert names("a", "persistentvolumes") == ["pv-1", "pvc-gone"]
    assert names("b", "persistentvolumeclaims") == names("b", "persistentvolumes") == []
    for s in sessions.values():
        await _drain(s)

    # a claim binding: its volume goes down before it
    await reg.create(pvs, None, _volume("pv-2"))
    await reg.create(claims, "default", _claim("late"))
    await reg.create(env.res("pods"), "default", _pod("pa2", "a", "late"))
    await eventually(lambda: sync.refs["persistentvolumeclaims"].get("default", "late"))
    await _drain(sessions["a"])
    await reg.update_with(claims, "default", "late",
                          lambda c: {**c, "spec": {**c["spec"], "volumeName": "pv-2"}})
    sent: list[tuple[str, str]] = []

    async def both_sent():
        sent.extend(await _drain(sessions["a"]))
        return len(sent) >= 2
    await eventually(both_sent)
    assert [r for _, r in sent] == ["persistentvolumes//pv-2",
                                    "persistentvolumeclaims/default/late"]

    # the node reported the directory removed: the volume's removal goes to that node only
    await reg.update_with(pvs, None, "pvc-gone",
                          lambda v: {**v, "metadata": {**v["metadata"], "finalizers": []}})
    removed: list[tuple[str, str]] = []

    async def removal_sent():
        removed.extend(await _drain(sessions["a"]))
        return ("delete", "persistentvolumes//pvc-gone") in removed
    await eventually(removal_sent)
    assert await _drain(sessions["b"]) == []
    await sync.stop()
