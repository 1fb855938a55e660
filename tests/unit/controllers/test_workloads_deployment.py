"""Deployment math (surge/unavailable rounding, new RS size, template hash) and a rollout
driven end to end against the real registry with the ReplicaSet controller."""

from __future__ import annotations

import asyncio

import pytest

from k3py.api.objects import deepcopy
from k3py.server.controllers.deployment import (
    HASH_LABEL,
    REVISION,
    DeploymentController,
    equal_ignore_hash,
    new_rs_replicas,
    surge_and_unavailable,
)
from k3py.server.controllers.replicaset import ReplicaSetController
from k3py.server.controllers.workloads_common import resolve_int_or_percent, template_hash
from tests.unit.controllers.conftest import eventually

pytestmark = pytest.mark.unit


def deploy(replicas: int = 3, image: str = "nginx:1", strategy: dict | None = None) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "strategy": strategy or {"type": "RollingUpdate", "rollingUpdate": {
                         "maxSurge": "25%", "maxUnavailable": "25%"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": image}]}}}}


def test_percent_rounding() -> None:
    assert resolve_int_or_percent("25%", 10, True) == 3
    assert resolve_int_or_percent("25%", 10, False) == 2
    assert resolve_int_or_percent(2, 10, False) == 2
    assert resolve_int_or_percent("3", 10, False) == 3
    assert surge_and_unavailable(deploy(3)) == (1, 0)
    assert surge_and_unavailable(deploy(4)) == (1, 1)
    d = deploy(3, strategy={"type": "RollingUpdate",
                            "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}})
    assert surge_and_unavailable(d) == (0, 1)
    assert surge_and_unavailable(deploy(3, strategy={"type": "Recreate"})) == (0, 0)


def test_new_rs_replicas() -> None:
    d = deploy(4)
    old = {"spec": {"replicas": 4}}
    assert new_rs_replicas(d, [old], None) == 1
    new = {"spec": {"replicas": 1}}
    assert new_rs_replicas(d, [old, new], new) == 1
    old["spec"]["replicas"] = 3
    assert new_rs_replicas(d, [old, new], new) == 2
    assert new_rs_replicas(deploy(4, strategy={"type": "Recreate"}), [old], None) == 4


def test_template_hash_stable_and_distinct() -> None:
    a = deploy()["spec"]["template"]
    b = deploy(image="nginx:2")["spec"]["template"]
    assert template_hash(a) == template_hash(deploy()["spec"]["template"])
    assert template_hash(a) != template_hash(b)
    assert template_hash(a) != template_hash(a, 1)
    h = template_hash(a)
    assert h.isalnum() and not set(h) & set("aeiou013")
    t = deploy()["spec"]["template"]
    t["metadata"]["labels"][HASH_LABEL] = h
    assert equal_ignore_hash(a, t)


async def _ready_all(env) -> None:
    for p in await env.all("pods"):
        if (p.get("status") or {}).get("phase") != "Running":
            await env.set_pod_status(p["metadata"]["name"])


async def test_rolling_update_and_undo(env) -> None:
    await env.start(DeploymentController, ReplicaSetController)
    reg = env.registry
    d_res = env.res("deployments")

    async def n_pods() -> int:
        return len(await env.all("pods"))

    async def deployment() -> dict:
        return (await env.all("deployments"))[0]

    await reg.create(d_res, "default", deploy(3))
    await eventually(lambda: _is(n_pods(), 3))
    rs1 = (await env.all("replicasets"))[0]
    assert rs1["metadata"]["name"].startswith("web-")
    assert rs1["metadata"]["annotations"][REVISION] == "1"
    assert HASH_LABEL in rs1["spec"]["selector"]["matchLabels"]
    await _ready_all(env)

    async def done() -> bool:
        st = (await deployment()).get("status") or {}
        conds = {c["type"]: c for c in st.get("conditions") or []}
        return st.get("availableReplicas") == 3 and st.get("updatedReplicas") == 3 and \
            st.get("replicas") == 3 and \
            conds.get("Progressing", {}).get("reason") == "NewReplicaSetAvailable"
    await eventually(done)
    st = (await deployment())["status"]
    assert {c["type"]: c["reason"] for c in st["conditions"]}["Available"] == \
        "MinimumReplicasAvailable"

    async def roll(image: str) -> None:
        d = deepcopy(await deployment())
        d["spec"]["template"]["spec"]["containers"][0]["image"] = image
        await reg.update(d_res, "default", "web", d)
        for _ in range(300):
            assert await n_pods() <= 4  # replicas + maxSurge
            await _ready_all(env)
            cur = await deployment()
            if await done() and cur["status"]["observedGeneration"] == \
                    cur["metadata"]["generation"]:
                return
            await asyncio.sleep(0.02)
        raise AssertionError((await deployment())["status"])

    await roll("nginx:2")
    rss = await env.all("replicasets")
    assert len(rss) == 2
    revs = {r["metadata"]["name"]: r["metadata"]["annotations"][REVISION] for r in rss}
    assert sorted(revs.values()) == ["1", "2"]
    assert {r["metadata"]["name"]: r["spec"]["replicas"] for r in rss}[
        rs1["metadata"]["name"]] == 0
    await roll("nginx:1")  # undo: the first RS is reused with revision 3
    rss = await env.all("replicasets")
    assert len(rss) == 2
    rs1_now = [r for r in rss if r["metadata"]["name"] == rs1["metadata"]["name"]][0]
    assert rs1_now["metadata"]["annotations"][REVISION] == "3"
    assert rs1_now["spec"]["replicas"] == 3
    msgs = [e[3] for e in await env.events() if e[2] == "ScalingReplicaSet"]
    assert f"Scaled up replica set {rs1['metadata']['name']} to 3" in msgs


async def _is(value, expected) -> bool:
    return await value == expected
