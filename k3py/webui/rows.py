"""Slim rows: the few fields of an object that a dashboard view shows, so that what a tab is
sent (and what it keeps) is a small projection, not the object.

Pure functions of one decoded object; read by live.py, which projects each watch event once
per subscription before coalescing it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["Row", "project"]

Row = dict[str, Any]


def _base(obj: dict) -> Row:
    md = obj.get("metadata") or {}
    row: Row = {"uid": md.get("uid", ""), "name": md.get("name", ""),
                "created": md.get("creationTimestamp", "")}
    if md.get("namespace"):
        row["namespace"] = md["namespace"]
    return row


def _node(obj: dict) -> Row:
    status = obj.get("status") or {}
    ready = next((c.get("status") for c in status.get("conditions") or []
                  if c.get("type") == "Ready"), "Unknown")
    info = status.get("nodeInfo") or {}
    return {**_base(obj), "ready": ready == "True", "arch": info.get("architecture", ""),
            "kubelet": info.get("kubeletVersion", "")}


def _pod(obj: dict) -> Row:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    phase = status.get("phase", "")
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        phase = "Terminating"
    return {**_base(obj), "phase": phase, "node": spec.get("nodeName", ""),
            "restarts": sum(c.get("restartCount", 0) for c in status.get("containerStatuses") or []),
            "containers": [c.get("name", "") for c in spec.get("containers") or []]}


def _twin_value(twin: dict, key: str) -> str | None:
    part = twin.get(key)
    return part.get("value") if isinstance(part, dict) else None


def _device(obj: dict) -> Row:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    twins = [{"property": t.get("propertyName", ""), "desired": _twin_value(t, "desired"),
              "reported": _twin_value(t, "reported")}
             for t in status.get("twins") or [] if isinstance(t, dict)]
    return {**_base(obj), "model": (spec.get("deviceModelRef") or {}).get("name", ""),
            "node": spec.get("nodeName", ""), "twins": twins,
            "state": status.get("state") or "unknown"}


def _device_model(obj: dict) -> Row:
    props = []
    for p in (obj.get("spec") or {}).get("properties") or []:
        kind, mode = p.get("type", ""), p.get("accessMode", "")  # v1beta1: "INT", "ReadOnly"
        if isinstance(kind, dict):  # v1alpha1/2: {"int": {"accessMode": ...}}
            kind, detail = next(iter(kind.items()), ("", {}))
            mode = (detail or {}).get("accessMode", "")
        props.append({"name": p.get("name", ""), "type": kind, "accessMode": mode})
    return {**_base(obj), "properties": props}


def _event(obj: dict) -> Row:
    """core/v1 Event (events.k8s.io/v1's fields as fallbacks: note, regarding, series)."""
    md = obj.get("metadata") or {}
    involved = obj.get("involvedObject") or obj.get("regarding") or {}
    series = obj.get("series") or {}
    return {**_base(obj), "type": obj.get("type", ""), "reason": obj.get("reason", ""),
            "message": obj.get("message") or obj.get("note") or "",
            "object": {"kind": involved.get("kind", ""), "name": involved.get("name", ""),
                       "uid": involved.get("uid", "")},
            "count": obj.get("count") or series.get("count") or 1,
            "last": (obj.get("lastTimestamp") or series.get("lastObservedTime")
                     or obj.get("eventTime") or md.get("creationTimestamp", ""))}


def _images(template: dict) -> list[str]:
    return [c.get("image", "") for c in ((template or {}).get("spec") or {}).get("containers") or []]


def _owner(obj: dict) -> str:
    """The name of the object's controller (a ReplicaSet's Deployment, a Job's CronJob)."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return next((r.get("name", "") for r in refs if r.get("controller")), "")


def _workload(obj: dict, desired: int, ready: int) -> Row:
    spec = obj.get("spec") or {}
    return {**_base(obj), "desired": desired, "ready": ready,
            "images": _images(spec.get("template")),
            "selector": (spec.get("selector") or {}).get("matchLabels") or {}}


def _replicated(obj: dict) -> Row:
    """A Deployment or StatefulSet."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return {**_workload(obj, spec.get("replicas", 1), status.get("readyReplicas", 0)),
            "upToDate": status.get("updatedReplicas", 0)}


def _daemonset(obj: dict) -> Row:
    status = obj.get("status") or {}
    return {**_workload(obj, status.get("desiredNumberScheduled", 0), status.get("numberReady", 0)),
            "upToDate": status.get("updatedNumberScheduled", 0)}


def _replicaset(obj: dict) -> Row:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return {**_workload(obj, spec.get("replicas", 1), status.get("readyReplicas", 0)),
            "current": status.get("replicas", 0), "owner": _owner(obj)}


def _job_status(obj: dict) -> str:
    """Complete or Failed once a condition of that type is True, Suspended, else Running."""
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return c["type"]
    return "Suspended" if (obj.get("spec") or {}).get("suspend") else "Running"


def _job(obj: dict) -> Row:
    """A Job: succeeded of completions (1 when unset, as kubectl shows it), active pods, its
    status, start and completion times (the page shows the duration) and its CronJob."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    completions = spec.get("completions")
    return {**_workload(obj, 1 if completions is None else completions, status.get("succeeded", 0)),
            "active": status.get("active", 0), "failed": status.get("failed", 0),
            "status": _job_status(obj), "start": status.get("startTime", ""),
            "end": status.get("completionTime", ""), "owner": _owner(obj)}


def _cronjob(obj: dict) -> Row:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return {**_base(obj), "schedule": spec.get("schedule", ""), "suspend": bool(spec.get("suspend")),
            "active": len(status.get("active") or []),
            "lastSchedule": status.get("lastScheduleTime", ""),
            "images": _images(((spec.get("jobTemplate") or {}).get("spec") or {}).get("template"))}


_PROJECTIONS: dict[tuple[str, str], Callable[[dict], Row]] = {
    ("", "nodes"): _node,
    ("", "pods"): _pod,
    ("", "events"): _event,
    ("apps", "deployments"): _replicated,
    ("apps", "statefulsets"): _replicated,
    ("apps", "daemonsets"): _daemonset,
    ("apps", "replicasets"): _replicaset,
    ("batch", "jobs"): _job,
    ("batch", "cronjobs"): _cronjob,
    ("devices.kubeedge.io", "devices"): _device,
    ("devices.kubeedge.io", "devicemodels"): _device_model,
}


def project(group: str, plural: str, obj: dict) -> Row:
    """The row a view of group/plural shows for `obj` (name, namespace, uid and age for a
    resource with no projection of its own)."""
    return _PROJECTIONS.get((group, plural), _base)(obj)
