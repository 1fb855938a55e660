"""autoscaling HorizontalPodAutoscaler, v2 and v1: defaults, validation, the upstream table
(NAME/REFERENCE/TARGETS/MINPODS/MAXPODS/REPLICAS/AGE) and the conversion between the two
versions, which keeps what v1 cannot say in upstream's round-trip annotations. Pure; the HPA
controller (k3py.server.controllers.hpa) writes the status these describe."""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

from k3py.api.errors import Cause
from k3py.api.kinds.printers import age, name
from k3py.api.kinds.registry import AGE_COL, NAME_COL, col, register
from k3py.api.quantity import QuantityError, format_quantity, parse_quantity
from k3py.api.validation import invalid_value, not_supported, required

__all__ = ["GROUP", "KIND", "DEFAULT_CPU_UTILIZATION", "scale_up_rules", "scale_down_rules",
           "to_v1", "to_v2", "METRICS_ANNOTATION", "CURRENT_METRICS_ANNOTATION",
           "CONDITIONS_ANNOTATION", "BEHAVIOR_ANNOTATION"]

GROUP = "autoscaling"
KIND = "HorizontalPodAutoscaler"
DEFAULT_CPU_UTILIZATION = 80

# what a v1 object carries of a v2 one (upstream's names; the values are v2 JSON here)
METRICS_ANNOTATION = "autoscaling.alpha.kubernetes.io/metrics"
CURRENT_METRICS_ANNOTATION = "autoscaling.alpha.kubernetes.io/current-metrics"
CONDITIONS_ANNOTATION = "autoscaling.alpha.kubernetes.io/conditions"
BEHAVIOR_ANNOTATION = "autoscaling.alpha.kubernetes.io/behavior"
_ROUND_TRIP = (METRICS_ANNOTATION, CURRENT_METRICS_ANNOTATION, CONDITIONS_ANNOTATION,
               BEHAVIOR_ANNOTATION)

_METRIC_TYPES = ["ContainerResource", "External", "Object", "Pods", "Resource"]
_TARGET_TYPES = ["AverageValue", "Utilization", "Value"]
_POLICY_TYPES = ["Percent", "Pods"]
_SELECT_POLICIES = ["Disabled", "Max", "Min"]


def _cpu_metric(utilization: int) -> dict:
    return {"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": utilization}}}


def scale_up_rules(given: dict | None) -> dict:
    """v2 defaults for behavior.scaleUp: no stabilization, at most 4 pods or 100% per 15 s,
    the larger."""
    given = given or {}
    return {"stabilizationWindowSeconds": given.get("stabilizationWindowSeconds", 0),
            "selectPolicy": given.get("selectPolicy") or "Max",
            "policies": given.get("policies") or [
                {"type": "Pods", "value": 4, "periodSeconds": 15},
                {"type": "Percent", "value": 100, "periodSeconds": 15}]}


def scale_down_rules(given: dict | None) -> dict:
    """v2 defaults for behavior.scaleDown: 100% per 15 s; the stabilization window stays unset
    (the controller's --horizontal-pod-autoscaler-downscale-stabilization, 300 s)."""
    given = given or {}
    out = {"selectPolicy": given.get("selectPolicy") or "Max",
           "policies": given.get("policies") or [
               {"type": "Percent", "value": 100, "periodSeconds": 15}]}
    if given.get("stabilizationWindowSeconds") is not None:
        out = {"stabilizationWindowSeconds": given["stabilizationWindowSeconds"], **out}
    return out


def _default(obj: dict, old: dict | None) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    if spec.get("minReplicas") is None:
        spec["minReplicas"] = 1
    if obj.get("apiVersion") == f"{GROUP}/v1":
        return
    if not spec.get("metrics"):
        spec["metrics"] = [_cpu_metric(DEFAULT_CPU_UTILIZATION)]
    if isinstance(spec.get("behavior"), dict):
        behavior = spec["behavior"]
        behavior["scaleUp"] = scale_up_rules(behavior.get("scaleUp"))
        behavior["scaleDown"] = scale_down_rules(behavior.get("scaleDown"))


# ---------------------------------------------------------------- validation

def _positive_quantity(v: Any) -> bool:
    try:
        return parse_quantity(v) > 0
    except QuantityError:
        return False


def _validate_target(target: Any, path: str) -> list[Cause]:
    if not isinstance(target, dict):
        return [required(path)]
    t = target.get("type")
    if t not in _TARGET_TYPES:
        return [not_supported(f"{path}.type", t, _TARGET_TYPES) if t
                else required(f"{path}.type")]
    causes = []
    util = target.get("averageUtilization")
    if util is not None and (not isinstance(util, int) or util < 1):
        causes.append(invalid_value(f"{path}.averageUtilization", util,
                                    "must be greater than 0"))
    for key in ("averageValue", "value"):
        if target.get(key) is not None and not _positive_quantity(target[key]):
            causes.append(invalid_value(f"{path}.{key}", target[key],
                                        "must be positive"))
    field = {"Utilization": "averageUtilization", "AverageValue": "averageValue",
             "Value": "value"}[t]
    if target.get(field) is None:
        causes.append(required(f"{path}.{field}", f"must set {field} when type is {t}"))
    return causes


def _validate_metrics(metrics: Any) -> list[Cause]:
    causes: list[Cause] = []
    for i, m in enumerate(metrics if isinstance(metrics, list) else []):
        path = f"spec.metrics[{i}]"
        t = (m or {}).get("type")
        if t not in _METRIC_TYPES:
            causes.append(not_supported(f"{path}.type", t, _METRIC_TYPES) if t
                          else required(f"{path}.type"))
            continue
        source = m.get(t[0].lower() + t[1:])
        if not isinstance(source, dict):
            causes.append(required(f"{path}.{t[0].lower() + t[1:]}",
                                   f"must populate information for the given metric source "
                                   f"(type {t})"))
            continue
        if t in ("Resource", "ContainerResource") and not source.get("name"):
            causes.append(required(f"{path}.{t[0].lower() + t[1:]}.name",
                                   "resource name is required"))
        if t == "Resource" and (source.get("target") or {}).get("type") == "Value":
            causes.append(not_supported(f"{path}.resource.target.type", "Value",
                                        ["AverageValue", "Utilization"]))
        causes += _validate_target(source.get("target"), f"{path}.{t[0].lower() + t[1:]}"
                                                         f".target")
    return causes


def _validate_rules(rules: Any, path: str) -> list[Cause]:
    if rules is None:
        return []
    if not isinstance(rules, dict):
        return [invalid_value(path, rules, "must be an object")]
    causes: list[Cause] = []
    window = rules.get("stabilizationWindowSeconds")
    if window is not None and (not isinstance(window, int) or not 0 <= window <= 3600):
        causes.append(invalid_value(f"{path}.stabilizationWindowSeconds", window,
                                    "must be less than or equal to 3600"
                                    if isinstance(window, int) and window > 3600
                                    else "must be greater than or equal to 0"))
    sel = rules.get("selectPolicy")
    if sel is not None and sel not in _SELECT_POLICIES:
        causes.append(not_supported(f"{path}.selectPolicy", sel, _SELECT_POLICIES))
    policies = rules.get("policies")
    if policies is not None and not policies:
        causes.append(required(f"{path}.policies", "must specify at least one Policy"))
    for i, p in enumerate(policies or []):
        ppath = f"{path}.policies[{i}]"
        if (p or {}).get("type") not in _POLICY_TYPES:
            causes.append(not_supported(f"{ppath}.type", (p or {}).get("type"), _POLICY_TYPES))
        value, period = (p or {}).get("value"), (p or {}).get("periodSeconds")
        if not isinstance(value, int) or value <= 0:
            causes.append(invalid_value(f"{ppath}.value", value, "must be greater than zero"))
        if not isinstance(period, int) or not 0 < period <= 1800:
            causes.append(invalid_value(f"{ppath}.periodSeconds", period,
                                        "must be greater than zero and less than or equal "
                                        "to 1800"))
    return causes


def _validate(obj: dict, old: dict | None) -> list[Cause]:
    """ValidateHorizontalPodAutoscaler (both versions: a v1 object has no metrics list)."""
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    causes: list[Cause] = []
    ref = spec.get("scaleTargetRef") if isinstance(spec.get("scaleTargetRef"), dict) else {}
    if not ref.get("kind"):
        causes.append(required("spec.scaleTargetRef.kind"))
    if not ref.get("name"):
        causes.append(required("spec.scaleTargetRef.name"))
    low, high = spec.get("minReplicas"), spec.get("maxReplicas")
    if low is not None and (not isinstance(low, int) or low < 1):
        causes.append(invalid_value("spec.minReplicas", low,
                                    "must be greater than or equal to 1"))
    if not isinstance(high, int) or high < 1:
        causes.append(invalid_value("spec.maxReplicas", high, "must be greater than 0"))
    elif isinstance(low, int) and high < low:
        causes.append(invalid_value("spec.maxReplicas", high,
                                    "must be greater than or equal to `minReplicas`"))
    if obj.get("apiVersion") == f"{GROUP}/v1":
        cpu = spec.get("targetCPUUtilizationPercentage")
        if cpu is not None and (not isinstance(cpu, int) or cpu < 1):
            causes.append(invalid_value("spec.targetCPUUtilizationPercentage", cpu,
                                        "must be greater than 0"))
        return causes
    causes += _validate_metrics(spec.get("metrics"))
    behavior = spec.get("behavior")
    if isinstance(behavior, dict):
        causes += _validate_rules(behavior.get("scaleUp"), "spec.behavior.scaleUp")
        causes += _validate_rules(behavior.get("scaleDown"), "spec.behavior.scaleDown")
    return causes


# ---------------------------------------------------------------- v1 <-> v2

def _is_cpu_utilization(m: dict) -> bool:
    r = m.get("resource") or {}
    return m.get("type") == "Resource" and r.get("name") == "cpu" and \
        (r.get("target") or {}).get("averageUtilization") is not None


def _annotations(obj: dict) -> dict:
    md = obj.setdefault("metadata", {})
    ann = md.get("annotations") if isinstance(md.get("annotations"), dict) else {}
    md["annotations"] = ann
    return ann


def _drop_empty_annotations(obj: dict) -> None:
    if not obj["metadata"].get("annotations"):
        obj["metadata"].pop("annotations", None)


def to_v1(obj: dict) -> dict:
    """A v2 object as autoscaling/v1 shows it: the CPU utilization target and current value
    in v1's own fields, everything else in the round-trip annotations."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    ann = _annotations(obj)
    for key in _ROUND_TRIP:
        ann.pop(key, None)
    metrics = spec.get("metrics") or []
    cpu = next((m for m in metrics if _is_cpu_utilization(m)), None)
    other = [m for m in metrics if m is not cpu]
    v1spec = {k: spec[k] for k in ("scaleTargetRef", "minReplicas", "maxReplicas") if k in spec}
    if cpu is not None:
        v1spec["targetCPUUtilizationPercentage"] = cpu["resource"]["target"][
            "averageUtilization"]
    if other:
        ann[METRICS_ANNOTATION] = json.dumps(other, separators=(",", ":"))
    if spec.get("behavior"):
        ann[BEHAVIOR_ANNOTATION] = json.dumps(spec["behavior"], separators=(",", ":"))
    v1status: dict = {k: status[k] for k in ("observedGeneration", "lastScaleTime",
                                             "currentReplicas", "desiredReplicas")
                      if k in status}
    v1status.setdefault("currentReplicas", 0)
    v1status.setdefault("desiredReplicas", 0)
    for m in status.get("currentMetrics") or []:
        r = m.get("resource") or {}
        if m.get("type") == "Resource" and r.get("name") == "cpu" and \
                (r.get("current") or {}).get("averageUtilization") is not None:
            v1status["currentCPUUtilizationPercentage"] = r["current"]["averageUtilization"]
    if status.get("currentMetrics"):
        ann[CURRENT_METRICS_ANNOTATION] = json.dumps(status["currentMetrics"],
                                                     separators=(",", ":"))
    if status.get("conditions"):
        ann[CONDITIONS_ANNOTATION] = json.dumps(status["conditions"], separators=(",", ":"))
    _drop_empty_annotations(obj)
    obj["apiVersion"] = f"{GROUP}/v1"
    obj["spec"] = v1spec
    obj["status"] = v1status
    return obj


def _decoded(ann: dict, key: str, kind: type) -> Any:
    try:
        value = json.loads(ann.pop(key))
    except (KeyError, ValueError):
        return None
    return value if isinstance(value, kind) else None


def to_v2(obj: dict) -> dict:
    """A v1 object as autoscaling/v2 shows it (the inverse of to_v1; a v1 object without a
    CPU target gets v2's default, 80% CPU utilization)."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    ann = _annotations(obj)
    metrics = _decoded(ann, METRICS_ANNOTATION, list) or []
    behavior = _decoded(ann, BEHAVIOR_ANNOTATION, dict)
    current = _decoded(ann, CURRENT_METRICS_ANNOTATION, list)
    conditions = _decoded(ann, CONDITIONS_ANNOTATION, list)
    cpu = spec.get("targetCPUUtilizationPercentage")
    if cpu is not None:
        metrics = [_cpu_metric(cpu), *metrics]
    v2spec = {k: spec[k] for k in ("scaleTargetRef", "minReplicas", "maxReplicas") if k in spec}
    v2spec["metrics"] = metrics or [_cpu_metric(DEFAULT_CPU_UTILIZATION)]
    if behavior:
        v2spec["behavior"] = behavior
    v2status = {k: status[k] for k in ("observedGeneration", "lastScaleTime",
                                       "currentReplicas", "desiredReplicas") if k in status}
    if current is None and status.get("currentCPUUtilizationPercentage") is not None:
        current = [{"type": "Resource", "resource": {"name": "cpu", "current": {
            "averageUtilization": status["currentCPUUtilizationPercentage"]}}}]
    if current:
        v2status["currentMetrics"] = current
    if conditions:
        v2status["conditions"] = conditions
    _drop_empty_annotations(obj)
    obj["apiVersion"] = f"{GROUP}/v2"
    obj["spec"] = v2spec
    if v2status or "status" in obj:
        obj["status"] = v2status
    return obj


# ---------------------------------------------------------------- the table

def _target(spec: dict, status: dict | None) -> str:
    """One metric as formatHPAMetrics prints it: `cpu: 250%/50%`, `memory: 10Mi/20Mi`."""
    if spec.get("type") != "Resource":
        return "<unknown type>" if spec.get("type") not in _METRIC_TYPES else \
            "<unknown>/<unknown>"
    r = spec.get("resource") or {}
    target = r.get("target") or {}
    current = ((status or {}).get("resource") or {}).get("current") or {}
    if target.get("averageValue") is not None:
        cur = current.get("averageValue")
        return f"{r.get('name')}: {cur if cur is not None else '<unknown>'}/" \
               f"{_quantity(target['averageValue'])}"
    util = current.get("averageUtilization")
    want = target.get("averageUtilization")
    return f"{r.get('name')}: {'<unknown>' if util is None else f'{util}%'}/" \
           f"{'<auto>' if want is None else f'{want}%'}"


def _quantity(v: Any) -> str:
    try:
        return format_quantity(parse_quantity(v), binary=isinstance(v, str) and "i" in v)
    except QuantityError:
        return str(v)


def _targets(o: dict) -> str:
    spec, status = o.get("spec") or {}, o.get("status") or {}
    if o.get("apiVersion") == f"{GROUP}/v1":
        o = to_v2(json.loads(json.dumps(o)))
        spec, status = o["spec"], o.get("status") or {}
    metrics = spec.get("metrics") or []
    if not metrics:
        return "<none>"
    current = status.get("currentMetrics") or []
    shown = [_target(m, current[i] if i < len(current) else None)
             for i, m in enumerate(metrics)]
    if len(shown) > 2:
        return ", ".join(shown[:2]) + f" + {len(shown) - 2} more..."
    return ", ".join(shown)


def _row(o: dict, now: _dt.datetime) -> list:
    spec, status = o.get("spec") or {}, o.get("status") or {}
    ref = spec.get("scaleTargetRef") or {}
    low = spec.get("minReplicas")
    return [name(o), f"{ref.get('kind', '')}/{ref.get('name', '')}", _targets(o),
            "<unset>" if low is None else str(low), spec.get("maxReplicas", 0),
            status.get("currentReplicas", 0), age(o, now)]


register(GROUP, KIND, default=_default, validate=_validate, generation=True, row=_row,
         columns=[
             NAME_COL,
             col("Reference", "string", "The identifier for the scaled object."),
             col("Targets", "string", "The current and target metric values."),
             col("MinPods", "string", "The lower limit on the number of pods."),
             col("MaxPods", "integer", "The upper limit on the number of pods."),
             col("Replicas", "integer", "The current number of replicas."),
             AGE_COL])
