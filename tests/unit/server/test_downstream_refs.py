"""A ConfigMap's or Secret's change goes down the tunnel to the nodes whose pods reference it
and to no other, over a real Registry, its informers and real node sessions; which nodes those
are is read from the pods' reference index, kept current as pods come, move and go."""

from __future__ import annotations

import pytest

from k3py.server.edge.downstream import DownstreamSync
from k3py.server.edge.sessions import NodeSession
from tests.unit.conftest import eventually
from tests.unit.server.test_downstream_volumes import _drain

pytestmark = pytest.mark.unit


def _pod(name: str, node: str, configmap: str = "", secret: str = "") -> dict:
    env = [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": configmap, "key": "k"}}}
           ] if configmap else []
    vols = [{"name": "s", "secret": {"secretName": secret}}] if secret else []
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "volumes": vols,
                     "containers": [{"name": "c", "image": "busybox", "env": env}]}}


async def test_a_change_goes_to_the_nodes_whose_pods_reference_it(env):
    reg, cms, secrets = env.registry, env.res("configmaps"), env.res("secrets")
    await reg.create(cms, "default", {"metadata": {"name": "conf"}, "data": {"k": "1"}})
    await reg.create(secrets, "default", {"metadata": {"name": "key"}, "data": {}})
    await reg.create(env.res("pods"), "default", _pod("pa", "a", configmap="conf"))
    await reg.create(env.res("pods"), "default", _pod("pb", "b", secret="key"))
    await reg.create(env.res("pods"), "default", _pod("pc", "c"))
    sessions = {n: NodeSession(n) for n in ("a", "b", "c")}
    sync = DownstreamSync(env.ctx.informers, sessions, None, lambda n: False,
                          network_policy=False)
    sync.start()
    await env.ctx.informers.wait_synced()
    await eventually(lambda: sync.pods.get("default", "pc"))
    for s in sessions.values():
        await _drain(s)

    async def sent() -> dict[str, list[str]]:
        return {n: [r for _, r in await _drain(s) if not r.startswith("pods/")]
                for n, s in sessions.items()}

    async def changed(res, name: str, data: dict) -> dict[str, list[str]]:
        await reg.update_with(res, "default", name, lambda o: {**o, "data": data})
        got: dict[str, list[str]] = {}

        async def arrived() -> bool:
            for n, rs in (await sent()).items():
                got.setdefault(n, []).extend(rs)
            return any(got.values())
        await eventually(arrived)
        return got
    assert await changed(cms, "conf", {"k": "2"}) == \
        {"a": ["configmaps/default/conf"], "b": [], "c": []}
    assert await changed(secrets, "key", {"k": "eA=="}) == \
        {"a": [], "b": ["secrets/default/key"], "c": []}

    # pa goes; a pod on c takes up the ConfigMap: the change goes to c alone
    await reg.delete(env.res("pods"), "default", "pa", {"gracePeriodSeconds": 0})
    await reg.create(env.res("pods"), "default", _pod("pd", "c", configmap="conf"))
    await eventually(lambda: sync.pods.get("default", "pd") and
                     not sync.pods.get("default", "pa"))
    assert await changed(cms, "conf", {"k": "3"}) == \
        {"a": [], "b": [], "c": ["configmaps/default/conf"]}
    await sync.stop()


async def test_a_pod_comes_without_what_its_node_holds_already(env):
    """A ConfigMap goes down with the first pod of a node that references it; the node's next
    such pods come alone (it holds it, and each change of it goes to it); once no pod of the
    node references it, the next one that does brings it again (its changes stopped)."""
    reg, pods = env.registry, env.res("pods")
    await reg.create(env.res("configmaps"), "default", {"metadata": {"name": "conf"},
                                                        "data": {"k": "1"}})
    sessions = {n: NodeSession(n) for n in ("a", "b")}
    sync = DownstreamSync(env.ctx.informers, sessions, None, lambda n: False,
                          network_policy=False)
    sync.start()
    await env.ctx.informers.wait_synced()

    async def arrives(name: str, node: str) -> list[str]:
        await reg.create(pods, "default", _pod(name, node, configmap="conf"))
        got: list[str] = []

        async def pod_sent() -> bool:
            got.extend(r for _, r in await _drain(sessions[node]))
            return f"pods/default/{name}" in got
        await eventually(pod_sent)
        return got
    assert await arrives("p1", "a") == ["configmaps/default/conf", "pods/default/p1"]
    assert await arrives("p2", "a") == ["pods/default/p2"]
    assert await arrives("p3", "b") == ["configmaps/default/conf", "pods/default/p3"]
    for name in ("p1", "p2"):
        await reg.delete(pods, "default", name, {"gracePeriodSeconds": 0})
    await eventually(lambda: not sync.pods.get("default", "p1") and
                     not sync.pods.get("default", "p2"))
    await _drain(sessions["a"])  # (the deletions)
    assert await arrives("p4", "a") == ["configmaps/default/conf", "pods/default/p4"]
    await sync.stop()
