"""DaemonSet node eligibility (selectors, taints vs tolerations) and the controller placing
one pod per node against the real registry."""

from __future__ import annotations

import pytest

from k3py.server.controllers.daemonset import (
    DEFAULT_TOLERATIONS,
    DaemonSetController,
    node_eligible,
    pod_node,
    tolerates,
)
from tests.unit.controllers.conftest import eventually

pytestmark = pytest.mark.unit


def node(name: str, labels: dict | None = None, taints: list | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"taints": taints or []}}


def test_eligibility() -> None:
    master = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
    assert not node_eligible({}, node("a", taints=[master]))
    assert node_eligible({"tolerations": [{"operator": "Exists"}]}, node("a", taints=[master]))
    assert node_eligible({}, node("a", taints=[{"key": "node.kubernetes.io/not-ready",
                                               "effect": "NoExecute"}]))
    assert node_eligible({}, node("a", taints=[{"key": "x", "effect": "PreferNoSchedule"}]))
    assert not node_eligible({"nodeSelector": {"disk": "ssd"}}, node("a"))
    assert node_eligible({"nodeSelector": {"disk": "ssd"}}, node("a", {"disk": "ssd"}))
    assert tolerates([{"key": "k", "operator": "Equal", "value": "v"}],
                     [{"key": "k", "value": "v", "effect": "NoSchedule"}])
    assert len(DEFAULT_TOLERATIONS) == 6


async def test_daemonset_one_pod_per_node(env) -> None:
    await env.start(DaemonSetController)
    reg = env.registry
    nodes, ds_res = env.res("nodes"), env.res("daemonsets")

    async def n_pods(n: int) -> bool:
        return len(await env.all("pods")) == n

    await reg.create(nodes, None, node("n1"))
    await reg.create(nodes, None, node("n2", taints=[{"key": "x", "effect": "NoSchedule"}]))
    await reg.create(ds_res, "default", {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "template": {"metadata": {"labels": {"app": "agent"}},
                              "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
    await eventually(lambda: n_pods(1))
    assert pod_node((await env.all("pods"))[0]) == "n1"
    await reg.create(nodes, None, node("n3"))
    await eventually(lambda: n_pods(2))
    for p in await env.all("pods"):
        await env.set_pod_status(p["metadata"]["name"])

    async def ready2() -> bool:
        return ((await env.all("daemonsets"))[0].get("status") or {}).get("numberReady") == 2
    await eventually(ready2)
    st = (await env.all("daemonsets"))[0]["status"]
    assert st["desiredNumberScheduled"] == 2 and st["updatedNumberScheduled"] == 2
