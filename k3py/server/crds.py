"""CustomResourceDefinitions served dynamically: CRD validation and strategy, one Resource per
served version, the controller that establishes and cleans up CRDs, and the built-in CRDs.

One CustomResources per server holds what it serves and which CRDs are terminating; bootstrap
adds its admission steps to that server's AdmissionChain and hands it to the CRDController.
Conversion strategy None only (the apiVersion is rewritten); all versions share one storage key."""

from __future__ import annotations

import asyncio
import copy
import importlib.resources
import json
import logging
import re

import yaml

from k3py.api import errors, selectablefields, structural, validation
from k3py.api.errors import Cause
from k3py.api.objects import now_rfc3339
from k3py.api.resources import Resource, ResourceRegistry
from k3py.server.admission import AdmissionChain
from k3py.server.controllers.base import Controller, ControllerContext, drop_finalizer
from k3py.server.registry import Registry

__all__ = ["CustomResources", "CRDController", "install_builtin_crds", "validate_crd",
           "resources_for", "version_priority", "CLEANUP_FINALIZER", "GROUP"]

log = logging.getLogger("k3py.crds")

GROUP = "apiextensions.k8s.io"
CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
BUILTIN_ANNOTATION = "k3py.io/builtin-crd"
_COLUMN_TYPES = "boolean,date,integer,number,string"
_COLUMN_FORMATS = "byte,date,date-time,double,float,int32,int64,password"
_KUBE_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def _is_crd(res: Resource) -> bool:
    return res.group == GROUP and res.kind == "CustomResourceDefinition"


def version_priority(name: str) -> tuple:
    """Sort key of kube-aware version order: v2, v1, v1beta2, v1beta1, v1alpha1, then others."""
    m = _KUBE_VERSION.match(name)
    if not m:
        return (3, 0, 0, name)
    stability = {None: 0, "beta": 1, "alpha": 2}[m.group(2)]
    return (stability, -int(m.group(1)), -int(m.group(3) or 0), "")


# ------------------------------------------------------------------ validation (pure)


def _inv(path: str, value, detail: str) -> Cause:
    return errors.field_cause(path, f"Invalid value: {structural.format_value(value)}: {detail}")


_req = validation.required


def _dns_errors(path: str, value, problems: list[str], prefix: str = "") -> list[Cause]:
    """One Invalid cause with all of a name check's problems (upstream joins them with ",")."""
    return [_inv(path, value, prefix + ",".join(problems))] if problems else []


def _default_spec(spec: dict) -> None:
    names = spec.setdefault("names", {})
    if isinstance(names, dict) and names.get("kind"):
        names.setdefault("singular", str(names["kind"]).lower())
        names.setdefault("listKind", f"{names['kind']}List")
    spec.setdefault("conversion", {"strategy": "None"})


def validate_crd(crd: dict, old: dict | None = None) -> list[Cause]:
    """CRD validation with the apiextensions messages for the common mistakes."""
    out: list[Cause] = []
    spec = crd.get("spec")
    if not isinstance(spec, dict):
        return [_req("spec")]
    names = spec.get("names") if isinstance(spec.get("names"), dict) else {}
    group, plural = spec.get("group") or "", names.get("plural") or ""
    name = (crd.get("metadata") or {}).get("name") or ""
    if name != f"{plural}.{group}":
        out.append(_inv("metadata.name", name, 'must be spec.names.plural+"."+spec.group'))
    if not group:
        out.append(_req("spec.group"))
    elif problems := validation.dns1123_subdomain(group):
        out.extend(_dns_errors("spec.group", group, problems))
    elif "." not in group:
        out.append(_inv("spec.group", group, "should be a domain with at least one dot"))
    scope = spec.get("scope") or ""
    if not scope:
        out.append(_req("spec.scope"))
    elif scope not in ("Cluster", "Namespaced"):
        out.append(errors.field_cause("spec.scope", f"Unsupported value: {json.dumps(scope)}: "
                                      'supported values: "Cluster", "Namespaced"',
                                      "FieldValueNotSupported"))
    if spec.get("preserveUnknownFields") is True and old is None:
        out.append(_inv("spec.preserveUnknownFields", True, "cannot set to true, set "
                        "x-kubernetes-preserve-unknown-fields to true in "
                        "spec.versions[*].schema instead"))
    out.extend(_validate_versions(spec, (old or {}).get("spec")))
    for key in ("plural", "singular", "kind", "listKind"):
        value = names.get(key)
        if not value:
            out.append(_req(f"spec.names.{key}"))
        elif key in ("plural", "singular"):
            out.extend(_dns_errors(f"spec.names.{key}", value,
                                   validation.dns1035_label(str(value))))
        else:
            out.extend(_dns_errors(f"spec.names.{key}", value,
                                   validation.dns1035_label(str(value).lower()),
                                   "may have mixed case, but should otherwise match: "))
    if names.get("kind") and names.get("kind") == names.get("listKind"):
        out.append(_inv("spec.names.listKind", names["listKind"],
                        "kind and listKind may not be the same"))
    for i, short in enumerate(names.get("shortNames") or ()):
        out.extend(_dns_errors(f"spec.names.shortNames[{i}]", short,
                               validation.dns1035_label(str(short))))
    if old is not None:
        old_scope = (old.get("spec") or {}).get("scope")
        if old_scope and scope and scope != old_scope:
            out.append(_inv("spec.scope", scope, "field is immutable"))
    return out


def _old_selectable_fields(old_spec: dict | None) -> dict[str, object]:
    """The selectableFields of an updated CRD's versions, by version name."""
    versions = old_spec.get("versions") if isinstance(old_spec, dict) else None
    if not isinstance(versions, list):
        return {}
    return {str(v.get("name")): v.get("selectableFields") for v in versions
            if isinstance(v, dict)}


def _validate_selectable_fields(v: dict, schema: object, path: str,
                                old: dict[str, object]) -> list[Cause]:
    """A version's selectableFields; an update may keep a list over the limit unchanged."""
    fields = v.get("selectableFields")
    if not fields:
        return []
    if schema is None:
        # upstream's message, worded as it is
        return [_inv(f"{path}.selectableFields", "", "may only be set when "
                     "`version.schema.openAPIV3Schema` is not included")]
    kept = old.get(str(v.get("name"))) == fields and isinstance(fields, list) and \
        len(fields) > selectablefields.MAX_SELECTABLE_FIELDS
    return selectablefields.validate(fields, schema, f"{path}.selectableFields", kept)


def _validate_versions(spec: dict, old_spec: dict | None = None) -> list[Cause]:
    out: list[Cause] = []
    versions = spec.get("versions") or []
    if not isinstance(versions, list):
        return [_inv("spec.versions", versions, "must be a list")]
    old_fields = _old_selectable_fields(old_spec)
    seen: set[str] = set()
    for i, v in enumerate(versions):
        path = f"spec.versions[{i}]"
        vname = str(v.get("name") or "")
        out.extend(_dns_errors(f"{path}.name", vname, validation.dns1035_label(vname)))
        schema = (v.get("schema") or {}).get("openAPIV3Schema")
        subs = v.get("subresources") or {}
        if schema is None:
            out.append(_req(f"{path}.schema.openAPIV3Schema"))
        else:
            sp = f"{path}.schema.openAPIV3Schema"
            if "status" in subs and isinstance(schema, dict) and \
                    schema.get("type", "object") != "object":
                out.append(_inv(f"{sp}.type", schema.get("type"), 'only "object" is allowed as '
                                "the type at the root of the schema if the status subresource "
                                "is enabled"))
            out.extend(structural.check_structural(schema, sp))
        out.extend(_validate_subresources(subs, f"{path}.subresources"))
        out.extend(_validate_selectable_fields(v, schema, path, old_fields))
        for j, col in enumerate(v.get("additionalPrinterColumns") or ()):
            out.extend(_validate_column(col, f"{path}.additionalPrinterColumns[{j}]"))
        seen_before = vname in seen
        seen.add(vname)
        if seen_before:
            out.append(_inv("spec.versions", versions, "must contain unique version names"))
    if sum(1 for v in versions if v.get("storage")) != 1:
        out.append(_inv("spec.versions", versions,
                        "must have exactly one version marked as storage version"))
    return out


def _validate_subresources(subs: dict, path: str) -> list[Cause]:
    out: list[Cause] = []
    scale = subs.get("scale")
    if isinstance(scale, dict):
        spec_path = scale.get("specReplicasPath") or ""
        status_path = scale.get("statusReplicasPath") or ""
        if not spec_path:
            out.append(_req(f"{path}.scale.specReplicasPath"))
        elif not spec_path.startswith(".spec."):
            out.append(_inv(f"{path}.scale.specReplicasPath", spec_path,
                            "should be a json path under .spec"))
        if not status_path:
            out.append(_req(f"{path}.scale.statusReplicasPath"))
        elif not status_path.startswith(".status."):
            out.append(_inv(f"{path}.scale.statusReplicasPath", status_path,
                            "should be a json path under .status"))
        sel = scale.get("labelSelectorPath")
        if sel and not (sel.startswith(".spec.") or sel.startswith(".status.")):
            out.append(_inv(f"{path}.scale.labelSelectorPath", sel,
                            "should be a json path under either .spec or .status"))
    return out


def _validate_column(col: dict, path: str) -> list[Cause]:
    out: list[Cause] = []
    if not col.get("name"):
        out.append(_req(f"{path}.name"))
    if not col.get("type"):
        out.append(_req(f"{path}.type", f"must be one of {_COLUMN_TYPES}"))
    elif col["type"] not in _COLUMN_TYPES.split(","):
        out.append(_inv(f"{path}.type", col["type"], f"must be one of {_COLUMN_TYPES}"))
    if col.get("format") and col["format"] not in _COLUMN_FORMATS.split(","):
        out.append(_inv(f"{path}.format", col["format"], f"must be one of {_COLUMN_FORMATS}"))
    if not col.get("jsonPath"):
        out.append(_req(f"{path}.JSONPath"))
    return out


# ------------------------------------------------------------------ resources of a CRD


def resources_for(crd: dict) -> list[Resource]:
    """One Resource per served version, in kube-aware priority order (first = preferred)."""
    spec = crd["spec"]
    names = spec["names"]
    storage = next((v["name"] for v in spec.get("versions") or () if v.get("storage")), "")
    preserve = bool(spec.get("preserveUnknownFields"))
    out = []
    for v in sorted((v for v in spec.get("versions") or () if v.get("served")),
                    key=lambda v: version_priority(v["name"])):
        subs = v.get("subresources") or {}
        extra: dict = {"schema": (v.get("schema") or {}).get("openAPIV3Schema"),
                       "printer_columns": list(v.get("additionalPrinterColumns") or ()),
                       "crd_name": crd["metadata"]["name"], "preserve_unknown_fields": preserve}
        if isinstance(subs.get("scale"), dict):
            extra["scale"] = dict(subs["scale"])
        if v.get("selectableFields"):
            extra["selectable_fields"] = selectablefields.field_names(v["selectableFields"])
        if v.get("deprecated"):
            extra["deprecated"] = True
            extra["deprecation_warning"] = v.get("deprecationWarning") or ""
        out.append(Resource(
            group=spec["group"], version=v["name"], kind=names["kind"], plural=names["plural"],
            namespaced=spec.get("scope") == "Namespaced",
            singular=names.get("singular") or names["kind"].lower(),
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            subresources=tuple(s for s in ("status", "scale") if s in subs),
            storage_version=storage, crd=True, extra=extra))
    return out


def _names_conflict(resources: ResourceRegistry, crd: dict) -> str:
    spec, name = crd["spec"], crd["metadata"]["name"]
    kind = spec["names"]["kind"]
    for r in resources:
        if r.group == spec["group"] and r.extra.get("crd_name") != name and \
                (r.kind == kind or r.plural == spec["names"]["plural"]):
            return f'"{kind}" is already in use' if r.kind == kind else \
                f'"{r.plural}" is already in use'
    return ""


# ------------------------------------------------------------------ admission hooks


def _spec_changed(new: dict, old: dict, ignore: tuple[str, ...]) -> bool:
    def strip(o: dict) -> dict:
        return {k: v for k, v in o.items() if k not in ignore}
    return strip(new) != strip(old)


def _status_only(new: dict, old: dict) -> dict:
    out = copy.deepcopy(old)
    if "status" in new:
        out["status"] = new["status"]
    else:
        out.pop("status", None)
    md = new.get("metadata") or {}
    for k in ("managedFields", "resourceVersion"):
        if k in md:
            out["metadata"][k] = md[k]
    return out


def _add_stored_version(crd: dict) -> None:
    storage = next((v.get("name") for v in (crd.get("spec") or {}).get("versions") or ()
                    if v.get("storage")), None)
    stored = crd.setdefault("status", {}).setdefault("storedVersions", [])
    if storage and storage not in stored:
        stored.append(storage)


def _prepare_crd(obj: dict, old: dict | None, sub: str) -> dict:
    if old is not None and sub == "status":
        return _status_only(obj, old)
    if isinstance(obj.get("spec"), dict):
        _default_spec(obj["spec"])
    md = obj.setdefault("metadata", {})
    if old is None:
        obj["status"] = {"acceptedNames": {"kind": "", "plural": ""}, "conditions": [],
                         "storedVersions": []}
        md["generation"] = 1
        if CLEANUP_FINALIZER not in (md.get("finalizers") or []):
            md["finalizers"] = [*(md.get("finalizers") or []), CLEANUP_FINALIZER]
    else:
        obj["status"] = copy.deepcopy(old.get("status") or {})
        gen = (old.get("metadata") or {}).get("generation") or 1
        md["generation"] = gen + 1 if obj.get("spec") != old.get("spec") else gen
    _add_stored_version(obj)
    return obj


def _prepare_custom(res: Resource, obj: dict, old: dict | None, sub: str,
                    terminating: set[str]) -> dict:
    has_status = "status" in res.subresources
    md = obj.setdefault("metadata", {})
    if old is None:
        if res.extra.get("crd_name") in terminating:
            raise errors.method_not_allowed(
                "create not allowed while custom resource definition is terminating")
        if has_status:
            obj.pop("status", None)
        md["generation"] = 1
        return obj
    if sub == "status":
        return _status_only(obj, old)
    if has_status:
        if "status" in old:
            obj["status"] = copy.deepcopy(old["status"])
        else:
            obj.pop("status", None)
    ignore = ("metadata", "status") if has_status else ("metadata",)
    gen = (old.get("metadata") or {}).get("generation") or 1
    md["generation"] = gen + 1 if _spec_changed(obj, old, ignore) else gen
    return obj


def validate_custom(res: Resource, obj: dict, old: dict | None) -> list[Cause]:
    """Validation of CRDs themselves and of custom objects against their version's schema
    (pruned and defaulted first, as upstream)."""
    if _is_crd(res):
        return validate_crd(obj, old)
    if not res.crd:
        return []
    schema = res.extra.get("schema")
    if not schema:
        return []
    if not res.extra.get("preserve_unknown_fields"):
        structural.prune(schema, obj)
    structural.apply_defaults(schema, obj)
    return structural.validate(schema, obj)


def convert_custom(res: Resource, obj: dict) -> dict | None:
    if not res.crd:
        return None
    group = str(obj.get("apiVersion") or "").rpartition("/")[0]
    if group and group != res.group:
        return None
    obj["apiVersion"] = res.api_version  # conversion strategy None
    structural.apply_defaults(res.extra.get("schema"), obj)
    return obj



# ------------------------------------------------------------------ one server's CRDs


class CustomResources:
    """What one server serves from its CRDs, and which CRDs are terminating (their objects
    may not be created). Written by the CRDController and at start-up (`load`); read by the
    custom objects' strategy in the server's AdmissionChain."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.terminating: set[str] = set()
        self._registered: dict[str, str] = {}  # CRD name -> signature of its Resources

    def install(self, chain: AdmissionChain) -> None:
        """Add the CRD and custom-object steps to this server's admission chain."""
        chain.add_preparer("CustomResourceStrategy", self.prepare)
        chain.add_validator("CustomResourceValidation", validate_custom)
        chain.add_converter("CustomResourceConversion", convert_custom)

    def prepare(self, res: Resource, obj: dict, old: dict | None, sub: str) -> dict | None:
        if _is_crd(res):
            return _prepare_crd(obj, old, sub)
        if res.crd:
            return _prepare_custom(res, obj, old, sub, self.terminating)
        return None

    def register(self, crd: dict) -> str:
        """Serve the CRD's versions; returns a names conflict message ("" when accepted)."""
        resources = self.registry.resources
        conflict = _names_conflict(resources, crd)
        if conflict:
            return conflict
        name, spec = crd["metadata"]["name"], crd["spec"]
        new = resources_for(crd)
        sig = json.dumps([[r.version, r.namespaced, r.kind, r.singular, r.short_names,
                           r.categories, r.subresources, r.storage_version, r.extra]
                          for r in new], sort_keys=True, default=str)
        if self._registered.get(name) == sig and \
                resources.find(spec["group"], spec["names"]["plural"]):
            return ""
        # No await between remove and add: requests on the event loop never see a gap.
        resources.remove_group_resource(spec["group"], spec["names"]["plural"])
        for r in new:
            resources.add(r)
        self._registered[name] = sig
        return ""

    def unregister(self, name: str) -> None:
        plural, _, group = name.partition(".")
        resources = self.registry.resources
        if self._registered.pop(name, None) is not None or resources.find(group, plural):
            resources.remove_group_resource(group, plural)

    async def load(self) -> int:
        """Serve every stored CRD before the API opens (a restart serves them immediately)."""
        listing = await self.registry.list(_crd_resource(self.registry), None)
        n = 0
        for crd in listing["items"]:
            try:
                conflict = self.register(crd)
            except (KeyError, TypeError) as e:
                log.warning("CRD %s not served: %s", crd["metadata"].get("name"), e)
                continue
            if conflict:
                log.warning("CRD %s not served: %s", crd["metadata"]["name"], conflict)
                continue
            if crd["metadata"].get("deletionTimestamp"):
                self.terminating.add(crd["metadata"]["name"])
            n += 1
        return n


# ------------------------------------------------------------------ start-up


def _crd_resource(registry: Registry) -> Resource:
    res = registry.resources.get(GROUP, "v1", "customresourcedefinitions")
    if res is None:
        raise RuntimeError("customresourcedefinitions is not a served resource")
    return res


def _read_builtin() -> list[dict]:
    out = []
    folder = importlib.resources.files("k3py.api") / "data" / "crds"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith((".yaml", ".yml")):
            out.extend(d for d in yaml.safe_load_all(entry.read_text()) if d)
    return out


async def install_builtin_crds(registry: Registry) -> list[str]:
    """Create (or bring up to date) the CRDs k3py ships: KubeEdge devices. Idempotent.
    The registry's admission chain must hold the CRD steps (CustomResources.install)."""
    res = _crd_resource(registry)
    wanted = await asyncio.to_thread(_read_builtin)
    done = []
    for crd in wanted:
        name = crd["metadata"]["name"]
        crd["metadata"].setdefault("annotations", {})[BUILTIN_ANNOTATION] = "true"
        live = await registry.try_get(res, None, name)
        if live is None:
            try:
                await registry.create(res, None, copy.deepcopy(crd))
            except errors.StatusError as e:
                if e.code != 409:
                    raise
        elif (live["metadata"].get("annotations") or {}).get(BUILTIN_ANNOTATION) == "true":
            want = copy.deepcopy(crd["spec"])
            _default_spec(want)

            def refresh(cur: dict, want: dict = want) -> dict | None:
                if cur.get("spec") == want:
                    return None
                cur["spec"] = want
                return cur
            await registry.update_with(res, None, name, refresh)
        done.append(name)
    return done


# ------------------------------------------------------------------ controller


def _condition(type_: str, status: str, reason: str, message: str, old: list) -> dict:
    prev = next((c for c in old if c.get("type") == type_), None)
    when = prev["lastTransitionTime"] if prev and prev.get("status") == status and \
        prev.get("lastTransitionTime") else now_rfc3339()
    return {"type": type_, "status": status, "lastTransitionTime": when, "reason": reason,
            "message": message}


def _same(a: list, b: list) -> bool:
    def key(c: dict) -> tuple:
        return c.get("type"), c.get("status"), c.get("reason"), c.get("message")
    return sorted(map(key, a)) == sorted(map(key, b))


class CRDController(Controller):
    """Serves CRDs as they come and go: NamesAccepted/Established, cleanup on delete."""

    name = "crd"
    workers = 2

    def __init__(self, ctx: ControllerContext, crds: CustomResources) -> None:
        super().__init__(ctx)
        self.crds = crds

    def setup(self) -> None:
        inf = self.ctx.informers.informer(GROUP, "customresourcedefinitions")

        def on_event(_etype: str, old: dict | None, new: dict | None) -> None:
            obj = new or old
            if obj is not None:
                self.enqueue(obj["metadata"]["name"])
        inf.add_handler(on_event)

    async def reconcile(self, key: str) -> None:
        res = _crd_resource(self.registry)
        crd = await self.registry.try_get(res, None, key)
        if crd is None:
            self.crds.unregister(key)
            self.crds.terminating.discard(key)
            return
        if crd["metadata"].get("deletionTimestamp"):
            await self._finalize(res, crd)
            return
        self.crds.terminating.discard(key)
        conflict = self.crds.register(crd)
        await self._set_status(res, crd, conflict)

    async def _set_status(self, res: Resource, crd: dict, conflict: str) -> None:
        names = crd["spec"]["names"]
        old = (crd.get("status") or {}).get("conditions") or []
        if conflict:
            conds = [_condition("NamesAccepted", "False", "KindConflict", conflict, old),
                     _condition("Established", "False", "NotAccepted", "not all names are "
                                "accepted", old)]
            accepted = {"kind": "", "plural": ""}
        else:
            conds = [_condition("NamesAccepted", "True", "NoConflicts", "no conflicts found", old),
                     _condition("Established", "True", "InitialNamesAccepted",
                                "the initial names have been accepted", old)]
            accepted = {k: names[k] for k in ("plural", "singular", "shortNames", "kind",
                                              "listKind", "categories") if names.get(k)}

        def mutate(cur: dict) -> dict | None:
            status = cur.setdefault("status", {})
            if _same(status.get("conditions") or [], conds) and \
                    status.get("acceptedNames") == accepted:
                return None
            status["conditions"] = conds
            status["acceptedNames"] = accepted
            _add_stored_version(cur)
            return cur
        await self.registry.update_with(res, None, crd["metadata"]["name"], mutate,
                                        subresource="status", field_manager="k3py-crd")

    async def _finalize(self, res: Resource, crd: dict) -> None:
        name = crd["metadata"]["name"]
        self.crds.terminating.add(name)
        if CLEANUP_FINALIZER not in (crd["metadata"].get("finalizers") or []):
            return
        old = (crd.get("status") or {}).get("conditions") or []
        term = _condition("Terminating", "True", "InstanceDeletionInProgress",
                          "CustomResource deletion is in progress", old)

        def mark(cur: dict) -> dict | None:
            conds = (cur.get("status") or {}).get("conditions") or []
            if cur["metadata"].get("uid") != crd["metadata"].get("uid") or \
                    any(c.get("type") == "Terminating" for c in conds):
                return None
            cur.setdefault("status", {})["conditions"] = [*conds, term]
            return cur
        await self.registry.update_with(res, None, name, mark, subresource="status")
        spec = crd["spec"]
        served = self.registry.resources.find(spec["group"], spec["names"]["plural"])
        if served is None and resources_for(crd):
            self.crds.register(crd)
            served = self.registry.resources.find(spec["group"], spec["names"]["plural"])
        if served is not None:
            listing = await self.registry.list(served, None)
            for item in listing["items"]:
                md = item["metadata"]
                try:
                    await self.registry.delete(served, md.get("namespace"), md["name"])
                except errors.StatusError as e:
                    if e.code != 404:
                        raise
            if (await self.registry.list(served, None))["items"]:
                self.enqueue(name, 1.0)  # instances with finalizers are still going away
                return
        self.crds.unregister(name)
        await drop_finalizer(self.registry, res, crd, CLEANUP_FINALIZER)
