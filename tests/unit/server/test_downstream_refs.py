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
