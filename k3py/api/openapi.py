"""OpenAPI documents served at /openapi/v2 and /openapi/v3: the paths of every served
resource (with the operations' GVK extension and the fieldValidation parameter kubectl probes
for server-side validation) and the schemas we have (CRD structural schemas, built-in ones
when generated data is packaged). Cached per ResourceRegistry generation."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from k3py.api.resources import Resource

__all__ = ["openapi_v2", "openapi_v3_index", "openapi_v3_group_version", "schema_name"]

_cache: dict[tuple, Any] = {}

_QUERY_PARAMS = ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")


def schema_name(res: Resource) -> str:
    group = ".".join(reversed(res.group.split("."))) if res.group else "core"
    if res.crd:
        return f"{group}.{res.version}.{res.kind}"
    return f"io.k8s.api.{group.split('.')[-1] if '.' in group else group}.{res.version}.{res.kind}"


def _gvk(res: Resource) -> dict:
    return {"group": res.group, "version": res.version, "kind": res.kind}


def _paths(res: Resource, ref_prefix: str) -> dict[str, dict]:
    base = f"/api/{res.version}" if not res.group else f"/apis/{res.group}/{res.version}"
    coll = f"{base}/namespaces/{{namespace}}/{res.plural}" if res.namespaced \
        else f"{base}/{res.plural}"
    item = f"{coll}/{{name}}"
    params = [{"name": p, "in": "query", "schema": {"type": "string"}, "uniqueItems": True}
              for p in _QUERY_PARAMS]
    ref = {"$ref": f"{ref_prefix}{schema_name(res)}"}
    ext = {"x-kubernetes-group-version-kind": _gvk(res)}

    def op(action: str, verb: str) -> dict:
        return {"operationId": f"{verb}{res.kind}", "parameters": params,
                "responses": {"200": {"description": "OK", "content": {
                    "application/json": {"schema": ref}}}},
                "x-kubernetes-action": action, **ext}
    out: dict[str, dict] = {
        coll: {"get": op("list", "list"), "post": op("post", "create")},
        item: {"get": op("get", "read"), "put": op("put", "replace"),
               "patch": op("patch", "patch"), "delete": op("delete", "delete")},
    }
    for sub in res.subresources:
        if sub == "status":
            out[f"{item}/status"] = {"get": op("get", "read"), "put": op("put", "replace"),
                                     "patch": op("patch", "patch")}
    return out


def _schemas(resources: list[Resource]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for r in resources:
        schema = r.extra.get("schema") if r.crd else _builtin_schema(r)
        if not isinstance(schema, dict):
            # no schema: clients fall back to their compiled-in types (kubectl apply's SMP)
            continue
        body = dict(schema)
        body["x-kubernetes-group-version-kind"] = [_gvk(r)]
        out[schema_name(r)] = body
    return out


def _builtin_schema(res: Resource) -> dict | None:
    try:
        from k3py.api import schema as generated  # packaged definitions, when present
    except ImportError:
        return None
    return generated.definition_for(res.api_version, res.kind)  # type: ignore[attr-defined]


def openapi_v3_index(resources: list[Resource], generation: int = 0) -> dict:
    key = ("v3index", generation)
    if key not in _cache:
        paths = {}
        for gv in sorted({(r.group, r.version) for r in resources}):
            rel = f"api/{gv[1]}" if not gv[0] else f"apis/{gv[0]}/{gv[1]}"
            body = openapi_v3_group_version(resources, gv[0], gv[1], generation) or b""
            digest = hashlib.sha512(body).hexdigest()[:64].upper()
            paths[rel] = {"serverRelativeURL": f"/openapi/v3/{rel}?hash={digest}"}
        _cache[key] = {"paths": paths}
    return _cache[key]


def openapi_v3_group_version(resources: list[Resource], group: str, version: str,
                             generation: int = 0) -> bytes | None:
    key = ("v3", group, version, generation)
    if key not in _cache:
        members = [r for r in resources if r.group == group and r.version == version]
        if not members:
            return None
        paths: dict[str, dict] = {}
        for r in members:
            paths.update(_paths(r, "#/components/schemas/"))
        doc = {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": version},
               "paths": paths, "components": {"schemas": _schemas(members)}}
        _cache[key] = orjson.dumps(doc)
    return _cache[key]


def openapi_v2(resources: list[Resource], generation: int = 0) -> bytes:
    key = ("v2", generation)
    if key not in _cache:
        paths: dict[str, dict] = {}
        for r in resources:
            for p, ops in _paths(r, "#/definitions/").items():
                paths[p] = {m: {k: v for k, v in o.items() if k != "responses"}
                            | {"responses": {"200": {"description": "OK"}}}
                            for m, o in ops.items()}
        doc = {"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.31.0"},
               "paths": paths, "definitions": _schemas(resources)}
        _cache[key] = orjson.dumps(doc)
    return _cache[key]
