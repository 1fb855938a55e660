"""The HPA controller against the real registry and informers, with usage put in the
metrics UsageStore as the node tunnel would: it scales a StatefulSet on memory AverageValue
and a ReplicaSet on CPU Utilization through their scale, writes status, conditions and
Events as upstream, and reports a target that is missing."""

from __future__ import annotations

import time

import pytest

from k3py.server.controllers.hpa import HorizontalPodAutoscalerController
from k3py.server.metrics.store import UsageStore
from k3py.tunnel.protocol import PodUsage, Usage, UsageReport
from tests.unit.controllers.conftest import eventually

pytestmark = pytest.mark.unit

MI = 2 ** 20
LONG_AGO = "2000-01-01T00:00:00Z"


def _workload(kind: str, name: str, replicas: int) -> dict:
    return {"apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "serviceName": name,
                     "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "x"}]}}}}


async def _pods(env, app: str, n: int, cpu_request: str = "100m") -> list[dict]:
    out = []
    for i in range(n):
        pod = await env.registry.create(env.res("pods"), "default", {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{app}-{i}", "namespace": "default",
                         "labels": {"app": app}},
            "spec": {"containers": [{"name": "c", "image": "x", "resources": {
                "requests": {"cpu": cpu_request}}}]}})
        await env.set_pod_status(pod["metadata"]["name"], startTime=LONG_AGO)
        out.append(pod)
    return out


def _report(usage: UsageStore, pods: list[dict], cpu: int, memory: int) -> None:
    usage.record("node-a", UsageReport(time.time(), 15.0, Usage(0, 0), tuple(
        PodUsage("default", p["metadata"]["name"], p["metadata"]["uid"],
                 {"c": Usage(cpu, memory)}) for p in pods)))


def _hpa(name: str, kind: str, metric: dict, **spec) -> dict:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": name},
                     "minReplicas": 1, "maxReplicas": 6,
                     "metrics": [{"type": "Resource", "resource": metric}], **spec}}


async def _start(env) -> UsageStore:
    usage = UsageStore()
    env.ctx.extra.update({"usage": usage, "hpa_sync_period": 0.1})
    await env.start(HorizontalPodAutoscalerController)
    return usage


async def _replicas(env, plural: str, name: str) -> int:
    obj = await env.registry.get(env.res(plural), "default", name)
    return obj["spec"]["replicas"]


async def test_statefulset_scales_up_on_memory_average_value(env) -> None:
    usage = await _start(env)
    await env.registry.create(env.res("statefulsets"), "default",
                              _workload("StatefulSet", "db", 2))
    _report(usage, await _pods(env, "db", 2), cpu=0, memory=300 * MI)
    await env.registry.create(env.res("horizontalpodautoscalers", "autoscaling"), "default",
                              _hpa("db", "StatefulSet", {"name": "memory", "target": {
                                  "type": "AverageValue", "averageValue": "100Mi"}}))

    async def status() -> dict | None:
        hpa = await env.registry.get(env.res("horizontalpodautoscalers", "autoscaling"),
                                     "default", "db")
        st = hpa.get("status") or {}
        return st if st.get("desiredReplicas") == 6 else None
    # 2 -> 4 (no behavior: at most max(2 x current, 4) a step), then 4 -> 6 (maxReplicas)
    st = await eventually(status, what="the HPA scaling the StatefulSet to 6")
    assert await _replicas(env, "statefulsets", "db") == 6 and st["currentReplicas"] in (4, 6)
    assert st["currentMetrics"] == [{"type": "Resource", "resource": {
        "name": "memory", "current": {"averageValue": str(300 * MI)}}}]
    conditions = {c["type"]: (c["status"], c["reason"]) for c in st["conditions"]}
    assert conditions["ScalingActive"] == ("True", "ValidMetricFound")
    assert conditions["ScalingLimited"] == ("False", "DesiredWithinRange")
    assert conditions["AbleToScale"] in (("True", "SucceededRescale"),  # the sync to 6
                                         ("True", "ReadyForNewScale"))  # or one after it
    events = await env.events()
    for size in (4, 6):
        assert ("db", "Normal", "SuccessfulRescale",
                f"New size: {size}; reason: memory resource above target") in events, events


async def test_replicaset_scales_down_on_cpu_utilization_after_its_window(env) -> None:
    usage = await _start(env)
    await env.registry.create(env.res("replicasets"), "default",
                              _workload("ReplicaSet", "web", 4))
    _report(usage, await _pods(env, "web", 4), cpu=10_000_000, memory=MI)  # 10m of 100m
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 0, "policies": [
        {"type": "Pods", "value": 2, "periodSeconds": 60}]}}
    await env.registry.create(env.res("horizontalpodautoscalers", "autoscaling"), "default",
                              _hpa("web", "ReplicaSet", {"name": "cpu", "target": {
                                  "type": "Utilization", "averageUtilization": 50}},
                                  behavior=behavior))

    async def scaled() -> bool:
        return await _replicas(env, "replicasets", "web") == 2
    await eventually(scaled, what="the ReplicaSet scaled down by the policy's 2 pods")

    async def status() -> dict | None:  # written after the scale
        hpa = await env.registry.get(env.res("horizontalpodautoscalers", "autoscaling"),
                                     "default", "web")
        return hpa if (hpa.get("status") or {}).get("currentMetrics") else None
    hpa = await eventually(status, what="the HPA's status")
    assert hpa["status"]["currentMetrics"][0]["resource"]["current"] == {
        "averageUtilization": 10, "averageValue": "10m"}
    events = await env.events()
    assert ("web", "Normal", "SuccessfulRescale",
            "New size: 2; reason: All metrics below target") in events
    assert not any(e[3] and e[3].startswith("New size: 1") for e in events), \
        "2 pods per 60 s: no second step yet"


async def test_missing_target_is_reported(env) -> None:
    await _start(env)
    await env.registry.create(env.res("horizontalpodautoscalers", "autoscaling"), "default",
                              _hpa("gone", "Deployment", {"name": "cpu", "target": {
                                  "type": "Utilization", "averageUtilization": 50}}))

    async def reported() -> dict | None:
        hpa = await env.registry.get(env.res("horizontalpodautoscalers", "autoscaling"),
                                     "default", "gone")
        return next((c for c in (hpa.get("status") or {}).get("conditions") or []
                     if c["reason"] == "FailedGetScale"), None)
    cond = await eventually(reported, what="FailedGetScale")
    assert cond["status"] == "False" and 'deployments.apps "gone" not found' in cond["message"]
