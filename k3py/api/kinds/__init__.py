"""Per-kind admission facts, keyed by (group, kind): strategies (what a write may change,
generation), upstream defaults, validation and server-side table printing. Pure; the order
they run in is k3py.server.admission's job."""

from __future__ import annotations

import datetime as _dt

from k3py.api.errors import Cause
from k3py.api.kinds.defaults import DEFAULTERS
from k3py.api.kinds.tables import build_table as _build_table
from k3py.api.kinds.validation import VALIDATORS, name_check_for
from k3py.api.objects import deepcopy
from k3py.api.resources import Resource
from k3py.api.validation import check_object_meta

__all__ = ["default", "validate", "prepare_for_create", "prepare_for_update", "build_table",
           "convert"]

# Kinds whose objects carry metadata.generation (bumped when the spec changes).
_NO_GENERATION = {("", "ConfigMap"), ("", "Secret"), ("", "Event"), ("events.k8s.io", "Event"),
                  ("", "Endpoints"), ("discovery.k8s.io", "EndpointSlice"),
                  ("coordination.k8s.io", "Lease"), ("", "ServiceAccount"),
                  ("apps", "ControllerRevision")}
# Status that a create may not set (upstream strategies reset it).
_RESET_STATUS_ON_CREATE = {("apps", "Deployment"), ("apps", "ReplicaSet"), ("apps", "DaemonSet"),
                           ("apps", "StatefulSet"), ("batch", "Job"), ("batch", "CronJob"),
                           ("", "Service"), ("networking.k8s.io", "Ingress"),
                           ("", "ReplicationController"), ("", "Namespace")}


def convert(res: Resource, obj: dict) -> dict:
    obj["apiVersion"] = res.api_version
    return obj


def default(res: Resource, obj: dict, old: dict | None = None) -> None:
    fn = DEFAULTERS.get((res.group, res.kind))
    if fn is not None:
        fn(obj, old)


def validate(res: Resource, obj: dict, old: dict | None = None) -> list[Cause]:
    md = obj.get("metadata") or {}
    causes = check_object_meta(md, name_check_for(res.group, res.kind))
    if res.crd:
        return causes
    fn = VALIDATORS.get((res.group, res.kind))
    if fn is not None:
        causes += fn(obj, old)
    return causes


def prepare_for_create(res: Resource, obj: dict) -> None:
    key = (res.group, res.kind)
    if key in _RESET_STATUS_ON_CREATE:
        obj.pop("status", None)
    if key not in _NO_GENERATION and ("spec" in obj or res.crd):
        obj["metadata"]["generation"] = 1
    elif key not in _NO_GENERATION and key[1] not in ("Namespace", "Node"):
        obj["metadata"].setdefault("generation", 1)


def _spec_part(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def prepare_for_update(res: Resource, obj: dict, old: dict, subresource: str) -> dict:
    """The object to write: status-only writes keep everything else, and main-resource
    writes keep the status (for kinds with a status subresource). Bumps generation."""
    if subresource == "status":
        new = deepcopy(old)
        if "status" in obj:
            new["status"] = obj["status"]
        else:
            new.pop("status", None)
        nmd, omd = new["metadata"], obj.get("metadata") or {}
        # upstream lets status writers touch these two (and only these) metadata maps
        for k in ("labels", "annotations"):
            if k in omd:
                nmd[k] = omd[k]
        return new
    if subresource in ("binding", "finalize"):
        return obj
    new = obj
    if "status" in res.subresources and not res.crd:
        if "status" in old:
            new["status"] = deepcopy(old["status"])
        else:
            new.pop("status", None)
    key = (res.group, res.kind)
    if key not in _NO_GENERATION:
        gen = (old.get("metadata") or {}).get("generation")
        if gen is not None:
            changed = _spec_part(new) != _spec_part(old)
            new.setdefault("metadata", {})["generation"] = gen + 1 if changed else gen
    return new


def build_table(res: Resource, objs: list[dict], now: _dt.datetime | None = None,
                include_object: str = "Metadata") -> dict:
    return _build_table(res, objs, now, include_object)
