"""DaemonSet rolling-update budget, NoSchedule vs NoExecute, revision history, Job indexes, and a
one-at-a-time DaemonSet rollout against the real registry."""

from __future__ import annotations

import asyncio

import pytest

from k3py.server.controllers.daemonset import (
    DaemonSetController,
    node_should_run,
    rolling_budget,
)
from k3py.server.controllers.workloads_common import revision_data
from tests.unit.controllers.conftest import eventually

pytestmark = pytest.mark.unit


def ds(max_unavailable=None, max_surge=None) -> dict:
    ru = {}
    if max_unavailable is not None:
        ru["maxUnavailable"] = max_unavailable
    if max_surge is not None:
        ru["maxSurge"] = max_surge
    return {"spec": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": ru}}}


def test_rolling_budget() -> None:
    assert rolling_budget(ds(), 10) == (0, 1)
    assert rolling_budget(ds("25%"), 10) == (0, 3)  # the DaemonSet controller rounds up
    assert rolling_budget(ds(0, "10%"), 5) == (1, 0)
    assert rolling_budget(ds(0, 0), 5) == (0, 1)


def test_should_run_vs_continue() -> None:
    def node(effect: str) -> dict:
        return {"metadata": {"name": "n"}, "spec": {"taints": [{"key": "k", "effect": effect}]}}
    assert node_should_run({}, node("NoSchedule")) == (False, True)
    assert node_should_run({}, node("NoExecute")) == (False, False)
    assert node_should_run({"tolerations": [{"key": "k", "operator": "Exists"}]},
                           node("NoExecute")) == (True, True)
    assert node_should_run({"nodeSelector": {"a": "b"}},
                           {"metadata": {"name": "n", "labels": {}}}) == (False, False)


def test_revision_data_is_a_replace_patch() -> None:
    t = {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}}
    data = revision_data(t)
    assert data["spec"]["template"]["$patch"] == "replace"
    assert "$patch" not in t


async def test_daemonset_rolls_one_node_at_a_time(env) -> None:
    await env.start(DaemonSetController)
    reg = env.registry
    nodes, ds_res = env.res("nodes"), env.res("daemonsets")
    for n in ("n1", "n2", "n3"):
        await reg.create(nodes, None, {"apiVersion": "v1", "kind": "Node",
                                       "metadata": {"name": n}})
    await reg.create(ds_res, "default", {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "updateStrategy": {"type": "RollingUpdate"},
                 "template": {"metadata": {"labels": {"app": "agent"}},
                              "spec": {"containers": [{"name": "c", "image": "x:1"}]}}}})

    async def n_pods() -> int:
        return len(await env.all("pods"))

    async def n_revisions() -> int:
        return len(await env.all("controllerrevisions"))
    await eventually(lambda: _is(n_pods(), 3))
    for p in await env.all("pods"):
        await env.set_pod_status(p["metadata"]["name"])
    await eventually(lambda: _is(n_revisions(), 1))

    def set_image(obj: dict) -> dict:
        obj["spec"]["template"]["spec"]["containers"][0]["image"] = "x:2"
        return obj
    await reg.update_with(ds_res, "default", "agent", set_image)
    seen_max_down = 0
    for _ in range(60):
        pods = await env.all("pods")
        images = [p["spec"]["containers"][0]["image"] for p in pods]
        ready = [p for p in pods if (p.get("status") or {}).get("conditions")]
        seen_max_down = max(seen_max_down, 3 - len(ready))
        if images.count("x:2") == 3 and len(pods) == 3:
            break
        for p in pods:
            if not (p.get("status") or {}).get("conditions"):
                await env.set_pod_status(p["metadata"]["name"])
        await asyncio.sleep(0.05)
    assert sorted(images) == ["x:2"] * 3
    assert seen_max_down <= 1
    revs = sorted(r["revision"] for r in await env.all("controllerrevisions"))
    assert revs == [1, 2]


async def _is(value, expected) -> bool:
    return await value == expected


def test_completed_indexes_round_trip() -> None:
    from k3py.server.controllers.job import format_indexes, parse_indexes
    assert format_indexes({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    assert format_indexes(set()) == ""
    assert parse_indexes("0-2,5,7-8") == {0, 1, 2, 5, 7, 8}
    assert parse_indexes("") == set()
