"""autoscaling HorizontalPodAutoscaler as the API serves it: v2 defaults (minReplicas,
80% CPU, behavior rules filled in), validation messages, the v1 <-> v2 conversion keeping
what v1 cannot say in annotations, and the `kubectl get hpa` row."""

from __future__ import annotations

import copy
import datetime as _dt

import pytest

from k3py.api import kinds
from k3py.api.kinds.autoscaling import METRICS_ANNOTATION, to_v1, to_v2
from k3py.api.resources import builtin_registry

pytestmark = pytest.mark.unit

V2 = builtin_registry().get("autoscaling", "v2", "horizontalpodautoscalers")
V1 = builtin_registry().get("autoscaling", "v1", "horizontalpodautoscalers")


def _hpa(**spec) -> dict:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": "web"}, "maxReplicas": 5, **spec}}


def test_v2_defaults():
    obj = _hpa(behavior={"scaleDown": {"stabilizationWindowSeconds": 5}})
    kinds.default(V2, obj)
    spec = obj["spec"]
    assert spec["minReplicas"] == 1
    assert spec["metrics"] == [{"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": 80}}}]
    assert spec["behavior"]["scaleUp"] == {
        "stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 15},
            {"type": "Percent", "value": 100, "periodSeconds": 15}]}
    assert spec["behavior"]["scaleDown"] == {
        "stabilizationWindowSeconds": 5, "selectPolicy": "Max",
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}
    plain = _hpa()
    kinds.default(V2, plain)
    assert "behavior" not in plain["spec"], "no behavior given: none defaulted, as upstream"


def test_validation():
    def messages(obj: dict) -> list[str]:
        return [f"{c['field']}: {c['message']}" for c in kinds.validate(V2, obj)]
    assert messages(_hpa()) == []
    bad = _hpa(minReplicas=4, maxReplicas=2, metrics=[
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization"}}},
        {"type": "Magic"}],
        behavior={"scaleDown": {"stabilizationWindowSeconds": 4000,
                                "policies": [{"type": "Pods", "value": 0,
                                              "periodSeconds": 15}]}})
    out = messages(bad)
    assert any(m.startswith("spec.maxReplicas") and "minReplicas" in m for m in out), out
    assert any(m.startswith("spec.metrics[0].resource.target.averageUtilization") for m in out)
    assert any(m.startswith("spec.metrics[1].type") for m in out), out
    assert any(m.startswith("spec.behavior.scaleDown.stabilizationWindowSeconds")
               for m in out), out
    assert any(m.startswith("spec.behavior.scaleDown.policies[0].value") for m in out), out


def test_conversion_round_trips_through_v1():
    v2 = _hpa(minReplicas=1, metrics=[
        {"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": 50}}},
        {"type": "Resource", "resource": {"name": "memory", "target": {
            "type": "AverageValue", "averageValue": "100Mi"}}}],
        behavior={"scaleDown": {"stabilizationWindowSeconds": 5}})
    v2["status"] = {"currentReplicas": 2, "desiredReplicas": 3, "currentMetrics": [
        {"type": "Resource", "resource": {"name": "cpu", "current": {
            "averageUtilization": 120, "averageValue": "120m"}}}],
        "conditions": [{"type": "AbleToScale", "status": "True"}]}
    v1 = to_v1(copy.deepcopy(v2))
    assert v1["apiVersion"] == "autoscaling/v1"
    assert v1["spec"]["targetCPUUtilizationPercentage"] == 50
    assert v1["status"]["currentCPUUtilizationPercentage"] == 120
    assert "memory" in v1["metadata"]["annotations"][METRICS_ANNOTATION]
    assert to_v2(v1) == v2
    bare = to_v2({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
                  "metadata": {"name": "x"}, "spec": {"maxReplicas": 2}})
    assert bare["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 80


def test_kubectl_get_hpa_row():
    obj = _hpa(minReplicas=1, metrics=[
        {"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": 50}}},
        {"type": "Resource", "resource": {"name": "memory", "target": {
            "type": "AverageValue", "averageValue": "100Mi"}}}])
    obj["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    obj["status"] = {"currentReplicas": 3, "currentMetrics": [
        {"type": "Resource", "resource": {"name": "cpu", "current": {
            "averageUtilization": 250, "averageValue": "250m"}}}]}
    table = kinds.build_table(V2, [obj], now=_dt.datetime(2026, 1, 1, 0, 5, tzinfo=_dt.UTC))
    assert [c["name"] for c in table["columnDefinitions"]] == [
        "Name", "Reference", "Targets", "MinPods", "MaxPods", "Replicas", "Age"]
    assert table["rows"][0]["cells"] == ["web", "Deployment/web",
                                         "cpu: 250%/50%, memory: <unknown>/100Mi", "1", 5, 3,
                                         "5m"]
    v1_row = kinds.build_table(V1, [to_v1(copy.deepcopy(obj))])["rows"][0]["cells"]
    assert v1_row[2] == "cpu: 250%/50%, memory: <unknown>/100Mi"
