"""Admission for every write: strategies (status vs spec, generation), defaults, validation,
patch application, managed fields, version conversion. Called only by the registry.

Per-kind facts live in k3py/api/kinds (pure); this module decides the order they run in. The
plug-in steps (CRDs, service allocation, ServiceAccount) sit in one AdmissionChain per server:
k3py.server.bootstrap fills it at start, the server's Registry owns and runs it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Generic, TypeVar

from k3py.api import apply as applylib
from k3py.api import decoding, errors, kinds, schema, selectors, structural
from k3py.api import patch as patchlib
from k3py.api.errors import Cause
from k3py.api.kinds import autoscaling
from k3py.api.objects import deepcopy
from k3py.api.resources import Resource

__all__ = [
    "AdmissionChain", "Step", "Preparer", "Mutator", "Validator", "UpdateCheck", "Converter",
    "DeleteHook",
    "label_selector", "field_selector", "track_managed_fields", "apply_patch",
    "parse_apply_body", "server_side_apply", "unknown_fields", "needs_finalization",
    "on_terminating", "finalize_when_empty", "PATCH_TYPES", "REQUEST_WARNINGS", "warn",
]

PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
    "application/apply-patch+cbor": "apply-cbor",
}

_EVENT_FIELDS = (  # core/v1 Event field <-> events.k8s.io/v1 Event field
    ("involvedObject", "regarding"), ("message", "note"), ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"), ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"), ("reportingComponent", "reportingController"),
)


def _convert_event(obj: dict, to_core: bool) -> dict:
    out = dict(obj)
    for core, new in _EVENT_FIELDS:
        src, dst = (new, core) if to_core else (core, new)
        if src in out:
            out[dst] = out.pop(src)
    out["apiVersion"] = "v1" if to_core else "events.k8s.io/v1"
    return out


def label_selector(s: str):
    return selectors.parse_label_selector(s) if s else None


def field_selector(s: str, res: Resource):
    return selectors.parse_field_selector(s, res) if s else None


def track_managed_fields(new: dict, old: dict | None, manager: str, operation: str) -> None:
    applylib.update_managed_fields(old, new, manager, operation)


def parse_apply_body(body: bytes) -> dict:
    obj = decoding.load_yaml(body, "YAML")
    if not isinstance(obj, dict):
        raise errors.bad_request("apply patch must be an object")
    return obj


def server_side_apply(res: Resource, live: dict | None, applied: dict, manager: str,
                      force: bool) -> dict:
    if not manager:
        raise errors.bad_request("PATCH, application/apply-patch+yaml requires fieldManager "
                                 "to be set")
    wrong = schema.wrong_type(res.api_version, res.kind, applied, crd=res.crd)
    if wrong:  # the applied configuration is typed before it is merged, as upstream
        raise errors.bad_request(wrong)
    return applylib.server_side_apply(live, applied, manager, force, patchlib.schema_lookup)


# upstream's answer to a strategic merge patch of a custom resource (kubectl patch's default)
_CR_PATCH_TYPES = ("the body of the request was in an unknown format - accepted media types "
                   "include: application/json-patch+json, application/merge-patch+json, "
                   "application/apply-patch+yaml")


def apply_patch(res: Resource, cur: dict, body: bytes, patch_type: str, manager: str,
                force: bool) -> dict:
    if patch_type == "apply":
        return server_side_apply(res, cur, parse_apply_body(body), manager, force)
    patch = decoding.load_json(body, "patch")
    doc = deepcopy(cur)
    if patch_type == "json":
        if not isinstance(patch, list):
            raise errors.bad_request("json patch must be a list of operations")
        return patchlib.apply_json_patch(doc, patch)
    if not isinstance(patch, dict):
        raise errors.bad_request("patch must be a JSON object")
    if res.crd and patch_type == "strategic":  # no patch strategy for a custom resource
        raise errors.StatusError(415, "UnsupportedMediaType", _CR_PATCH_TYPES)
    if patch_type == "merge":
        return patchlib.apply_merge_patch(doc, patch)
    if patch_type == "strategic":
        return patchlib.apply_strategic_merge_patch(doc, patch, patchlib.schema_lookup(
            res.api_version, res.kind))
    raise errors.unsupported_media_type(patch_type)


def unknown_fields(res: Resource, obj: dict) -> list[str]:
    """Dotted paths of fields the schema of `res` does not know (for fieldValidation)."""
    if res.crd:
        if res.extra.get("preserve_unknown_fields"):
            return []
        return structural.find_unknown_fields(res.extra.get("schema"), obj)
    return list(patchlib.find_unknown_fields(res.api_version, res.kind, obj))


def needs_finalization(res: Resource, obj: dict) -> bool:
    """Objects that wait for a controller before they go (namespaces with spec.finalizers)."""
    if res.group == "" and res.kind == "Namespace":
        return bool((obj.get("spec") or {}).get("finalizers"))
    return False


def on_terminating(res: Resource, obj: dict) -> None:
    if res.group == "" and res.kind == "Namespace":
        obj.setdefault("status", {})["phase"] = "Terminating"


def finalize_when_empty(res: Resource, obj: dict) -> bool:
    """A terminating object whose finalizers are all gone is removed by the same write."""
    return not needs_finalization(res, obj)


# ------------------------------------------------------------------ request warnings

# The Warning headers of the request being served: the API handler sets a fresh list per
# request; a plug-in calls warn() (PodSecurity's warn mode), outside a request it is a no-op.
REQUEST_WARNINGS: ContextVar[list[str] | None] = ContextVar("k3py_request_warnings",
                                                            default=None)


def warn(text: str) -> None:
    warnings = REQUEST_WARNINGS.get()
    if warnings is not None:
        warnings.append(text)


# ------------------------------------------------------------------ the plug-in chain

# (res, obj, old | None, subresource) -> new obj, or None when changed in place; runs after
# the kind's own strategy (CRDs: the custom-resource status/spec split)
Preparer = Callable[[Resource, dict, dict | None, str], dict | None]
# (res, obj) on create, after defaults and before validation; may be async (may read the store)
Mutator = Callable[[Resource, dict], Awaitable[None] | None]
# (res, obj, old | None) -> causes of a 422 Invalid
Validator = Callable[[Resource, dict, dict | None], list[Cause]]
# (res, obj, old) on update, after validation; may be async (may read the store), raises a
# StatusError to refuse
UpdateCheck = Callable[[Resource, dict, dict], Awaitable[None] | None]
# (res, stored obj) -> the object in the served version, or None when not this step's kind
Converter = Callable[[Resource, dict], dict | None]
# (res, obj) after an object is gone from the store; may be async
DeleteHook = Callable[[Resource, dict], Awaitable[None] | None]

F = TypeVar("F")


@dataclass(frozen=True, slots=True)
class Step(Generic[F]):
    """One named plug-in step; the name is what `AdmissionChain.describe` lists."""
    name: str
    fn: F


class AdmissionChain:
    """The ordered plug-in steps of one server's admission, run by its Registry.

    A write runs: the kind's strategy, then `preparers`; the kind's defaults; on create the
    `mutators`; the kind's validation plus `validators`; on update the `update_checks`.
    Reads in another version run the
    `converters` (the first that answers wins, then the built-in Event conversion). A delete
    that removed the object runs `delete_hooks`. Each list runs in the order steps were added."""

    def __init__(self) -> None:
        self.preparers: list[Step[Preparer]] = []
        self.mutators: list[Step[Mutator]] = []
        self.validators: list[Step[Validator]] = []
        self.update_checks: list[Step[UpdateCheck]] = []
        self.converters: list[Step[Converter]] = []
        self.delete_hooks: list[Step[DeleteHook]] = []

    def add_preparer(self, name: str, fn: Preparer) -> None:
        self.preparers.append(Step(name, fn))

    def add_mutator(self, name: str, fn: Mutator) -> None:
        self.mutators.append(Step(name, fn))

    def add_validator(self, name: str, fn: Validator) -> None:
        self.validators.append(Step(name, fn))

    def add_update_check(self, name: str, fn: UpdateCheck) -> None:
        self.update_checks.append(Step(name, fn))

    def add_converter(self, name: str, fn: Converter) -> None:
        self.converters.append(Step(name, fn))

    def add_delete_hook(self, name: str, fn: DeleteHook) -> None:
        self.delete_hooks.append(Step(name, fn))

    def describe(self) -> list[tuple[str, str]]:
        """(phase, step name) in the order a write meets them, for a reader or a test."""
        phases = (("prepare", self.preparers), ("mutate", self.mutators),
                  ("validate", self.validators), ("update-check", self.update_checks),
                  ("convert", self.converters),
                  ("after-delete", self.delete_hooks))
        return [(phase, step.name) for phase, steps in phases for step in steps]

    # ------------------------------------------------------------ run by the registry

    def convert(self, res: Resource, obj: dict) -> dict:
        """Present a stored object in the served version of its resource."""
        for step in self.converters:
            out = step.fn(res, obj)
            if out is not None:
                return out
        if (res.group, res.kind) == (autoscaling.GROUP, autoscaling.KIND):
            return autoscaling.to_v1(obj) if res.version == "v1" else autoscaling.to_v2(obj)
        if res.kind == "Event" and obj.get("kind") == "Event":
            if res.group == "events.k8s.io" and obj.get("apiVersion") == "v1":
                return _convert_event(obj, to_core=False)
            if res.group == "" and obj.get("apiVersion") == "events.k8s.io/v1":
                return _convert_event(obj, to_core=True)
        obj["apiVersion"] = res.api_version
        return obj

    def prepare_for_create(self, res: Resource, obj: dict) -> None:
        kinds.prepare_for_create(res, obj)
        for step in self.preparers:
            step.fn(res, obj, None, "")

    def prepare_for_update(self, res: Resource, obj: dict, old: dict, subresource: str) -> dict:
        new = kinds.prepare_for_update(res, obj, old, subresource)
        for step in self.preparers:
            new = step.fn(res, new, old, subresource) or new
        return new

    @staticmethod
    def default(res: Resource, obj: dict, old: dict | None = None) -> None:
        kinds.default(res, obj, old)

    async def mutate_create(self, res: Resource, obj: dict) -> None:
        for step in self.mutators:
            r = step.fn(res, obj)
            if asyncio.iscoroutine(r):
                await r

    def check_valid(self, res: Resource, obj: dict, old: dict | None = None) -> None:
        causes = list(kinds.validate(res, obj, old))
        for step in self.validators:
            causes.extend(step.fn(res, obj, old) or [])
        if causes:
            name = (obj.get("metadata") or {}).get("name") or ""
            raise errors.invalid(res.group, res.kind, name, causes)

    async def check_update(self, res: Resource, obj: dict, old: dict) -> None:
        for step in self.update_checks:
            r = step.fn(res, obj, old)
            if asyncio.iscoroutine(r):
                await r

    async def after_delete(self, res: Resource, obj: dict) -> None:
        for step in self.delete_hooks:
            r = step.fn(res, obj)
            if asyncio.iscoroutine(r):
                await r
