"""Per-kind admission facts, keyed by (group, kind): strategies (what a write may change,
generation), upstream defaults, validation and server-side table printing. Pure; the order
they run in is k3py.server.admission's job.

Unknown kinds and custom resources fall back to: no defaults, metadata validation only,
NAME/AGE columns (or the CRD's additionalPrinterColumns)."""

from __future__ import annotations

from k3py.api.errors import Cause
from k3py.api.kinds import (  # noqa: F401
    apiregistration,
    autoscaling,
    core,
    metrics,
    other,
    printers_core,
    printers_more,
    workloads,
)
from k3py.api.kinds.printers import build_table, table_columns, table_row
from k3py.api.kinds.registry import HOOKS, KindHooks, hooks_for, register
from k3py.api.objects import deepcopy
from k3py.api.resources import Resource
from k3py.api.validation import check_object_meta, check_object_meta_update

__all__ = ["default", "validate", "prepare_for_create", "prepare_for_update", "build_table",
           "table_columns", "table_row", "convert", "has_generation", "register", "hooks_for",
           "HOOKS", "KindHooks"]


# kinds whose PrepareForCreate drops any status the client sent
_RESET_STATUS_ON_CREATE = {("apps", "Deployment"), ("apps", "ReplicaSet"), ("apps", "DaemonSet"),
                           ("apps", "StatefulSet"), ("batch", "Job"), ("batch", "CronJob"),
                           ("", "Service"), ("networking.k8s.io", "Ingress"),
                           ("", "ReplicationController"), ("", "PersistentVolumeClaim"),
                           ("policy", "PodDisruptionBudget"),
                           ("apiregistration.k8s.io", "APIService"),
                           ("autoscaling", "HorizontalPodAutoscaler")}


def convert(res: Resource, obj: dict) -> dict:
    obj["apiVersion"] = res.api_version
    return obj


def has_generation(res: Resource) -> bool:
    """Whether the kind's strategy keeps metadata.generation (custom resources always do)."""
    return res.crd or hooks_for(res.group, res.kind).generation


def default(res: Resource, obj: dict, old: dict | None = None) -> None:
    """Upstream defaulting, in place (old is the stored object on update)."""
    if res.crd:
        return
    fn = hooks_for(res.group, res.kind).default
    if fn is not None:
        fn(obj, old)


def validate(res: Resource, obj: dict, old: dict | None = None) -> list[Cause]:
    """Field errors as upstream reports them; empty when the object is valid."""
    md = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    hooks = hooks_for(res.group, res.kind)
    causes = check_object_meta(md, hooks.name_check)
    if old is not None:
        causes += check_object_meta_update(md, old.get("metadata") or {})
    if res.crd:
        return causes
    if hooks.validate is not None:
        causes += hooks.validate(obj, old)
    return causes


def prepare_for_create(res: Resource, obj: dict) -> None:
    """The strategy's PrepareForCreate: status reset and metadata.generation = 1."""
    md = obj.setdefault("metadata", {})
    key = (res.group, res.kind)
    if key == ("", "Pod"):
        # upstream resets the whole status; k3py's own components create pods with status
        status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
        status.setdefault("phase", "Pending")
        obj["status"] = status
    elif key == ("", "Namespace"):
        obj["status"] = {"phase": "Active"}
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        fins = list(spec.get("finalizers") or [])
        if "kubernetes" not in fins:
            fins.append("kubernetes")
        spec["finalizers"] = fins
        obj["spec"] = spec
    elif key in _RESET_STATUS_ON_CREATE:
        obj.pop("status", None)
    if has_generation(res):
        md["generation"] = 1
    else:
        md.pop("generation", None)


def _spec_part(res: Resource, obj: dict) -> dict:
    if res.crd:
        return {k: val for k, val in obj.items()
                if k not in ("metadata", "status", "apiVersion", "kind")}
    return {k: obj.get(k) for k in hooks_for(res.group, res.kind).spec_fields}


def prepare_for_update(res: Resource, obj: dict, old: dict, subresource: str) -> dict:
    """The object to write. Main-resource writes keep the stored status (kinds with a status
    subresource); /status writes keep everything but the status (and, for built-ins, the
    metadata the kind allows). Bumps metadata.generation when the spec changes."""
    key = (res.group, res.kind)
    if subresource == "status":
        # the stored object's parts, shared with `old` rather than copied: a status write
        # changes none of them (its metadata is a dict of its own: the kind may take some
        # of it from the write)
        new = {k: v for k, v in old.items() if k != "status"}
        new["metadata"] = dict(old.get("metadata") or {})
        if "status" in obj:
            new["status"] = obj["status"]
        else:
            new.pop("status", None)
        omd = obj.get("metadata") or {}
        nmd = new.setdefault("metadata", {})
        if res.crd:
            if "managedFields" in omd:
                nmd["managedFields"] = omd["managedFields"]
        else:
            keep = hooks_for(*key).status_keeps_metadata
            for k, val in omd.items():
                if k not in keep and k not in ("deletionTimestamp",):
                    nmd[k] = val
            for k in list(nmd):
                if k not in omd and k not in keep and k in ("labels", "annotations"):
                    nmd.pop(k)
        if "resourceVersion" in omd:
            nmd["resourceVersion"] = omd["resourceVersion"]
        return new
    if subresource == "finalize" and key == ("", "Namespace"):
        new = deepcopy(old)
        new.setdefault("spec", {})["finalizers"] = (obj.get("spec") or {}).get("finalizers") \
            or []
        if "resourceVersion" in (obj.get("metadata") or {}):
            new["metadata"]["resourceVersion"] = obj["metadata"]["resourceVersion"]
        return new
    if subresource:
        return obj
    new = obj
    if "status" in res.subresources or key == ("", "Namespace"):
        if "status" in old:
            new["status"] = deepcopy(old["status"])
        else:
            new.pop("status", None)
    if key == ("", "Namespace"):
        spec = new.get("spec") if isinstance(new.get("spec"), dict) else {}
        spec["finalizers"] = list((old.get("spec") or {}).get("finalizers") or [])
        new["spec"] = spec
    md = new.setdefault("metadata", {})
    if has_generation(res):
        gen = (old.get("metadata") or {}).get("generation") or 1
        changed = _spec_part(res, new) != _spec_part(res, old)
        md["generation"] = gen + 1 if changed else gen
    else:
        md.pop("generation", None)
    return new
