"""OpenAPI documents served at /openapi/v2 (one swagger document) and /openapi/v3 (an index plus
one document per group/version), built from the generated definitions and the served resources.

kubectl reads v3: `explain` finds a kind by its x-kubernetes-group-version-kind, client-side
apply takes patch metadata from components.schemas when the PATCH operation accepts
strategic-merge-patch, and field validation is left to the server when PATCH lists the
`fieldValidation` parameter. A custom kind lists its version's field selectors in
x-kubernetes-selectable-fields, as upstream. Results are cached per (registry generation,
resource set)."""

from __future__ import annotations

import copy
import hashlib
import re
import threading
from collections.abc import Iterable
from typing import Any

import orjson

from k3py.api import openapi_pb
from k3py.api import schema as schemalib
from k3py.api.resources import Resource

__all__ = ["openapi_v2", "openapi_v2_protobuf", "openapi_v3_index", "openapi_v3_group_version", "schema_name",
           "v3_path"]

_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_LIST_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"
_STATUS = "io.k8s.apimachinery.pkg.apis.meta.v1.Status"
_DELETE_OPTIONS = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"
_PATCH = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch"
_WATCH_EVENT = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent"

_PATCH_BODY = {"description": "Patch is provided to give a concrete name and type to the "
                              "Kubernetes PATCH request body.", "type": "object"}
_WATCH_EVENT_BODY = {"description": "Event represents a single event to a watched resource.",
                     "type": "object", "required": ["type", "object"], "properties": {
                         "object": {"type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True},
                         "type": {"type": "string"}}}

_BUILTIN_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
                        "application/strategic-merge-patch+json", "application/apply-patch+yaml")
_CRD_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
                    "application/apply-patch+yaml")
_PRODUCES = ("application/json", "application/yaml", "application/vnd.kubernetes.protobuf")

_QUERY = {
    "dryRun": "When present, indicates that modifications should not be persisted.",
    "fieldManager": "fieldManager is a name associated with the actor or entity that is "
                    "making these changes.",
    "fieldValidation": "fieldValidation instructs the server on how to handle objects in the "
                       "request containing unknown or duplicate fields. Valid values are: "
                       "Ignore, Warn (default) and Strict.",
    "force": "Force is going to \"force\" Apply requests.",
    "pretty": "If 'true', then the output is pretty printed.",
    "labelSelector": "A selector to restrict the list of returned objects by their labels.",
    "fieldSelector": "A selector to restrict the list of returned objects by their fields.",
    "limit": "limit is a maximum number of responses to return for a list call.",
    "continue": "The continue option should be set when retrieving more results from the "
                "server.",
    "resourceVersion": "resourceVersion sets a constraint on what resource versions a request "
                       "may be served from.",
    "watch": "Watch for changes to the described resources.",
    "gracePeriodSeconds": "The duration in seconds before the object should be deleted.",
    "propagationPolicy": "Whether and how garbage collection will be performed.",
}
_QUERY_TYPES = {"force": "boolean", "watch": "boolean", "limit": "integer",
                "gracePeriodSeconds": "integer"}

_lock = threading.Lock()
_cache: dict[tuple, Any] = {}


# ------------------------------------------------------------------ names and definitions


def schema_name(res: Resource) -> str:
    """Definition name of a resource's kind: upstream's for built-ins, reversed group for CRDs."""
    if not res.crd:
        name = schemalib.definition_name(res.api_version, res.kind)
        if name:
            return name
    group = ".".join(reversed(res.group.split("."))) if res.group else "core"
    return f"{group}.{res.version}.{res.kind}"


def _list_name(res: Resource) -> str:
    return schema_name(res) + "List"


def _gvk(res: Resource, kind: str | None = None) -> dict:
    return {"group": res.group, "kind": kind or res.kind, "version": res.version}


def _crd_definitions(res: Resource) -> dict[str, dict]:
    raw = res.extra.get("schema")
    body: dict = copy.deepcopy(raw) if isinstance(raw, dict) else {
        "type": "object", "x-kubernetes-preserve-unknown-fields": True}
    body.setdefault("type", "object")
    props = body.setdefault("properties", {})
    props["apiVersion"] = {"type": "string", "description": "APIVersion defines the versioned "
                           "schema of this representation of an object."}
    props["kind"] = {"type": "string", "description": "Kind is a string value representing "
                     "the REST resource this object represents."}
    props["metadata"] = {"$ref": f"#/definitions/{_OBJECT_META}",
                         "description": "Standard object's metadata."}
    body["x-kubernetes-group-version-kind"] = [_gvk(res)]
    if res.extra.get("selectable_fields"):
        body["x-kubernetes-selectable-fields"] = [
            {"fieldPath": name} for name in res.extra["selectable_fields"]]
    lst = {"description": f"{res.kind}List is a list of {res.kind}", "type": "object",
           "required": ["items"], "properties": {
               "apiVersion": props["apiVersion"], "kind": props["kind"],
               "items": {"type": "array", "items": {"$ref": f"#/definitions/{schema_name(res)}"}},
               "metadata": {"$ref": f"#/definitions/{_LIST_META}"}},
           "x-kubernetes-group-version-kind": [_gvk(res, res.list_kind)]}
    return {schema_name(res): body, _list_name(res): lst}


def _all_definitions(resources: list[Resource]) -> dict[str, dict]:
    defs = dict(schemalib.definitions())
    defs.setdefault(_PATCH, _PATCH_BODY)
    defs.setdefault(_WATCH_EVENT, _WATCH_EVENT_BODY)
    for r in resources:
        if r.crd:
            defs.update(_crd_definitions(r))
        elif schema_name(r) not in defs:
            defs[schema_name(r)] = {"type": "object", "x-kubernetes-preserve-unknown-fields":
                                    True, "x-kubernetes-group-version-kind": [_gvk(r)]}
    return defs


def _refs(node: Any, out: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            out.add(ref.rsplit("/", 1)[-1])
        for v in node.values():
            _refs(v, out)
    elif isinstance(node, list):
        for v in node:
            _refs(v, out)


def _closure(defs: dict[str, dict], roots: Iterable[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    todo = [r for r in roots if r in defs]
    while todo:
        name = todo.pop()
        if name in out or name not in defs:
            continue
        out[name] = defs[name]
        found: set[str] = set()
        _refs(defs[name], found)
        todo.extend(found - out.keys())
    return dict(sorted(out.items()))


_REF_V2 = re.compile(r"#/definitions/")


def _to_v3(node: Any) -> Any:
    """v2 schema -> v3: refs into components, refs with siblings wrapped in allOf (upstream)."""
    if isinstance(node, dict):
        out = {k: _to_v3(v) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str):
            ref = _REF_V2.sub("#/components/schemas/", ref)
            siblings = {k: v for k, v in out.items() if k != "$ref"}
            if siblings:
                return {"allOf": [{"$ref": ref}], **siblings}
            out["$ref"] = ref
        return out
    if isinstance(node, list):
        return [_to_v3(v) for v in node]
    return node


# ------------------------------------------------------------------ paths


def _base(res: Resource) -> str:
    return f"/api/{res.version}" if not res.group else f"/apis/{res.group}/{res.version}"


def _query_params(names: Iterable[str], v3: bool) -> list[dict]:
    out = []
    for n in names:
        p: dict = {"name": n, "in": "query", "description": _QUERY[n], "uniqueItems": True}
        if v3:
            p["schema"] = {"type": _QUERY_TYPES.get(n, "string"), "uniqueItems": True}
        else:
            p["type"] = _QUERY_TYPES.get(n, "string")
        out.append(p)
    return out


def _path_param(name: str, desc: str, v3: bool) -> dict:
    p: dict = {"name": name, "in": "path", "required": True, "description": desc,
               "uniqueItems": True}
    if v3:
        p["schema"] = {"type": "string", "uniqueItems": True}
    else:
        p["type"] = "string"
    return p


def _paths(res: Resource, v3: bool) -> dict[str, dict]:
    ref_base = "#/components/schemas/" if v3 else "#/definitions/"
    obj_ref = {"$ref": ref_base + schema_name(res)}
    list_ref = {"$ref": ref_base + _list_name(res)}
    status_ref = {"$ref": ref_base + _STATUS}
    base = _base(res)
    coll = f"{base}/namespaces/{{namespace}}/{res.plural}" if res.namespaced \
        else f"{base}/{res.plural}"
    item = f"{coll}/{{name}}"
    patch_types = _CRD_PATCH_TYPES if res.crd else _BUILTIN_PATCH_TYPES
    gvk = _gvk(res)
    kind_id = res.kind + ("Namespaced" if res.namespaced else "")

    def op(action: str, verb: str, response: dict, query: tuple[str, ...],
           body: dict | None = None, consumes: Iterable[str] = ("*/*",)) -> dict:
        o: dict = {"description": f"{verb} {res.kind}", "operationId": f"{verb}{kind_id}",
                   "tags": [res.group_version.replace("/", "_") or "core_v1"],
                   "parameters": _query_params(query, v3)}
        if v3:
            o["responses"] = {"200": {"description": "OK", "content": {
                ct: {"schema": response} for ct in ("application/json", "application/yaml")}},
                "401": {"description": "Unauthorized"}}
            if body is not None:
                o["requestBody"] = {"required": True, "content": {
                    ct: {"schema": body} for ct in consumes}}
        else:
            o["consumes"] = list(consumes)
            o["produces"] = list(_PRODUCES)
            o["schemes"] = ["https"]
            o["responses"] = {"200": {"description": "OK", "schema": response},
                              "401": {"description": "Unauthorized"}}
            if body is not None:
                o["parameters"] = [{"name": "body", "in": "body", "required": True,
                                    "schema": body}] + o["parameters"]
        o["x-kubernetes-action"] = action
        o["x-kubernetes-group-version-kind"] = gvk
        return o

    write = ("dryRun", "fieldManager", "fieldValidation")
    listq = ("labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "watch")
    common = [_path_param("namespace", "object name and auth scope, such as for teams and "
                          "projects", v3)] if res.namespaced else []
    named = [_path_param("name", f"name of the {res.kind}", v3)] + common
    common_q = _query_params(("pretty",), v3)
    obj_ct = ("application/json", "application/yaml")
    out: dict[str, dict] = {}
    verbs = set(res.verbs)
    coll_ops: dict = {"parameters": common + common_q}
    if "list" in verbs:
        coll_ops["get"] = op("list", "list", list_ref, listq)
    if "create" in verbs:
        coll_ops["post"] = op("post", "create", obj_ref, write, obj_ref, obj_ct)
    if "deletecollection" in verbs:
        coll_ops["delete"] = op("deletecollection", "deletecollection", status_ref,
                                listq[:-1] + ("dryRun", "gracePeriodSeconds",
                                              "propagationPolicy"))
    if len(coll_ops) > 1:
        out[coll] = coll_ops
    item_ops: dict = {"parameters": named + common_q}
    if "get" in verbs:
        item_ops["get"] = op("get", "read", obj_ref, ())
    if "update" in verbs:
        item_ops["put"] = op("put", "replace", obj_ref, write, obj_ref, obj_ct)
    if "patch" in verbs:
        item_ops["patch"] = op("patch", "patch", obj_ref, write + ("force",),
                               {"$ref": ref_base + _PATCH}, patch_types)
    if "delete" in verbs:
        item_ops["delete"] = op("delete", "delete", status_ref,
                                ("dryRun", "gracePeriodSeconds", "propagationPolicy"),
                                {"$ref": ref_base + _DELETE_OPTIONS}, obj_ct)
    if len(item_ops) > 1:
        out[item] = item_ops
    for sub in res.subresources:
        if sub != "status":
            continue
        sub_ops: dict = {"parameters": named + common_q,
                         "get": op("get", "read", obj_ref, ())}
        sub_ops["get"]["operationId"] = f"read{kind_id}Status"
        if "update" in verbs:
            sub_ops["put"] = op("put", "replace", obj_ref, write, obj_ref, obj_ct)
            sub_ops["put"]["operationId"] = f"replace{kind_id}Status"
        if "patch" in verbs:
            sub_ops["patch"] = op("patch", "patch", obj_ref, write + ("force",),
                                  {"$ref": ref_base + _PATCH}, patch_types)
            sub_ops["patch"]["operationId"] = f"patch{kind_id}Status"
        out[f"{item}/status"] = sub_ops
    return out


# ------------------------------------------------------------------ documents and caching


def _fingerprint(resources: list[Resource]) -> int:
    return hash(tuple((r.group, r.version, r.kind, r.plural, r.namespaced, r.crd, r.verbs,
                       r.subresources, id(r.extra.get("schema"))) for r in resources))


def _cached(key: tuple, build: Any) -> Any:
    with _lock:
        if key in _cache:
            return _cache[key]
    value = build()
    with _lock:
        if len(_cache) > 128:
            _cache.clear()
        _cache[key] = value
    return value


def _v2_document(resources: list[Resource], generation: int) -> dict:
    def build() -> dict:
        paths: dict[str, dict] = {}
        for r in resources:
            paths.update(_paths(r, v3=False))
        defs = _all_definitions(resources)
        return {"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.37.1"},
                "paths": dict(sorted(paths.items())), "definitions": defs,
                "securityDefinitions": {"BearerToken": {
                    "description": "Bearer Token authentication", "type": "apiKey",
                    "name": "authorization", "in": "header"}},
                "security": [{"BearerToken": []}]}

    return _cached(("v2doc", generation, _fingerprint(resources)), build)


def openapi_v2(resources: list[Resource], generation: int = 0) -> bytes:
    """The swagger 2.0 document (JSON bytes) of every served resource."""
    resources = list(resources)
    return _cached(("v2", generation, _fingerprint(resources)),
                   lambda: orjson.dumps(_v2_document(resources, generation)))


def openapi_v2_protobuf(resources: list[Resource], generation: int = 0) -> tuple[bytes, str]:
    """The same document as the gnostic protobuf kubectl asks for when a kind is missing from
    the v3 index (`kind: List`), and older kubectl always; with its ETag (upstream's: the
    quoted upper-case hex SHA-512 of the body)."""
    resources = list(resources)

    def build() -> tuple[bytes, str]:
        body = openapi_pb.encode(_v2_document(resources, generation))
        return body, f'"{hashlib.sha512(body).hexdigest().upper()}"'

    return _cached(("v2pb", generation, _fingerprint(resources)), build)


def v3_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def openapi_v3_index(resources: list[Resource], generation: int = 0) -> dict:
    """`/openapi/v3`: {"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=…"}}}"""
    resources = list(resources)

    def build() -> dict:
        paths: dict[str, dict] = {}
        for group, version in sorted({(r.group, r.version) for r in resources}):
            body = openapi_v3_group_version(resources, group, version, generation) or b""
            digest = hashlib.sha512(body).hexdigest().upper()
            rel = v3_path(group, version)
            paths[rel] = {"serverRelativeURL": f"/openapi/v3/{rel}?hash={digest}"}
        return {"paths": paths}

    return _cached(("v3index", generation, _fingerprint(resources)), build)


def openapi_v3_group_version(resources: list[Resource], group: str, version: str,
                             generation: int = 0) -> bytes | None:
    """The OpenAPI 3.0 document (JSON bytes) of one group/version; None when not served."""
    resources = list(resources)
    members = [r for r in resources if r.group == group and r.version == version]
    if not members:
        return None

    def build() -> bytes:
        defs = _all_definitions(members)
        paths: dict[str, dict] = {}
        roots = {_STATUS, _DELETE_OPTIONS, _PATCH}
        for r in members:
            paths.update(_paths(r, v3=True))
            roots.update((schema_name(r), _list_name(r)))
        schemas = {name: _to_v3(body) for name, body in _closure(defs, roots).items()}
        doc = {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.37.1"},
               "paths": dict(sorted(paths.items())),
               "components": {"schemas": schemas, "securitySchemes": {"BearerToken": {
                   "type": "apiKey", "description": "Bearer Token authentication",
                   "name": "authorization", "in": "header"}}},
               "security": [{"BearerToken": []}]}
        return orjson.dumps(doc)

    return _cached(("v3", group, version, generation, _fingerprint(members)), build)
