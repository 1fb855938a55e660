"""The REST verbs on resources: get, list, create, update, patch, delete, deletecollection,
and the built-in subresources (status, scale, binding, eviction, finalize).

Dispatch is by HTTP method and parsed path; object semantics live in the registry."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from k3py.api import errors
from k3py.api.resources import Resource
from k3py.server import admission
from k3py.server.admission import REQUEST_WARNINGS
from k3py.server.apiserver import watch as watchmod
from k3py.server.apiserver.auth import AuthorizerChain, User, field_requirements
from k3py.server.apiserver.negotiation import (
    bool_param,
    decode_body,
    dry_run,
    finish_json,
    int_param,
    json_response,
    table_for,
    wants_table,
)
from k3py.server.apiserver.paths import ResourcePath
from k3py.server.registry import ListOptions, Registry

__all__ = ["handle_resource", "StreamHandler", "WriteOptions"]

# (request, path, user) -> response: logs, exec, attach, portforward, proxy (the tunnel adds them)
StreamHandler = Callable[[web.Request, ResourcePath, User], Awaitable[web.StreamResponse]]

VERB_BY_METHOD = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch",
                   "DELETE": "delete"}


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteOptions:
    """The query options of a write (create, update, patch, delete), parsed once per request.
    `field_validation` is checked where it is used (create and update bodies)."""
    dry_run: bool = False
    field_manager: str = ""
    field_validation: str = "Warn"
    force: bool = False


def _write_options(request: web.Request, ptype: str = "") -> WriteOptions:
    """dryRun (only "All"), fieldManager (else the User-Agent's product, except for apply,
    which requires one), fieldValidation and force."""
    return WriteOptions(dry_run=dry_run(request), field_manager=_field_manager(request, ptype),
                        field_validation=request.query.get("fieldValidation", "Warn") or "Warn",
                        force=bool_param(request, "force"))


def _field_manager(request: web.Request, ptype: str = "") -> str:
    manager = request.query.get("fieldManager", "")
    if not manager and ptype != "apply":
        manager = request.headers.get("User-Agent", "unknown").split("/")[0][:128]
    return manager


def _list_options(request: web.Request) -> ListOptions:
    q = request.query
    limit = int_param(request, "limit") or 0
    return ListOptions(label_selector=q.get("labelSelector", ""),
                       field_selector=q.get("fieldSelector", ""), limit=limit,
                       continue_=q.get("continue", ""),
                       resource_version=q.get("resourceVersion", ""),
                       resource_version_match=q.get("resourceVersionMatch", ""))


def _warning_text(text: str) -> str:
    """A warning as an HTTP quoted-string: quotes and backslashes escaped, control characters
    (a field name from the body may hold a newline) written as \\xNN, as upstream escapes."""
    out = text.replace("\\", "\\\\").replace('"', '\\"')
    return "".join(f"\\x{ord(c):02x}" if ord(c) < 32 or ord(c) == 127 else c for c in out)


def _object_response(request: web.Request, res: Resource, obj: dict,
                     status: int = 200, warnings: list[str] | None = None,
                     encoded: bytes | None = None) -> web.Response:
    """The object (`encoded`: its JSON, when already at hand) or, when asked for, its Table."""
    warnings = [*(warnings or []), *(REQUEST_WARNINGS.get() or [])]
    headers = {"Warning": ", ".join(f'299 - "{_warning_text(w)}"' for w in warnings)} \
        if warnings else None
    if wants_table(request):
        return json_response(table_for(res, [obj], request, {
            "resourceVersion": obj.get("metadata", {}).get("resourceVersion", "")}), status,
            headers)
    if encoded is not None:
        return web.Response(body=finish_json(encoded), status=status,
                            content_type="application/json", headers=headers)
    return json_response(obj, status, headers)


async def handle_resource(request: web.Request, rp: ResourcePath, user: User,
                          registry: Registry, authorizer: AuthorizerChain,
                          streams: dict[str, StreamHandler]) -> web.StreamResponse:
    res = rp.resource
    assert res is not None
    method = request.method
    is_watch = rp.legacy_watch or (method == "GET" and bool_param(request, "watch"))
    if rp.name is None:
        verb = {"GET": "watch" if is_watch else "list", "POST": "create",
                "DELETE": "deletecollection"}.get(method)
    else:
        verb = "watch" if is_watch else VERB_BY_METHOD.get(method)
    if verb is None:
        raise errors.method_not_allowed(f"the server does not allow this method on the "
                                        f"requested resource ({method})")
    sub = rp.subresource
    if sub in streams:
        authorizer.authorize(user, "create" if method != "GET" else "get", res.group,
                             res.plural, rp.namespace, rp.name, sub)
        return await streams[sub](request, rp, user)
    if sub and sub not in ("status", "scale", "binding", "eviction", "finalize"):
        raise errors.StatusError(404, "NotFound", f"the server could not find the requested "
                                 f"resource ({sub} is not available)")
    if verb not in res.verbs and not sub:
        raise errors.method_not_allowed(f"the server does not allow this method on the "
                                        f"requested resource ({verb})")
    fields = field_requirements(request.query.get("fieldSelector", "")) \
        if verb in ("list", "watch") else None
    authorizer.authorize(user, verb, res.group, res.plural, rp.namespace, rp.name, sub, fields)
    REQUEST_WARNINGS.set([])  # what admission plug-ins warn about (PodSecurity's warn mode)
    ns = rp.namespace if res.namespaced else None

    if verb == "watch":
        return await watchmod.serve_watch(request, registry, res, ns, rp.name)
    if verb == "list":
        opts = _list_options(request)
        if not wants_table(request):
            raw = await registry.list_raw(res, ns, opts)
            if raw is not None:
                return web.Response(body=finish_json(raw), content_type="application/json")
        listing = await registry.list(res, ns, opts)
        if wants_table(request):
            return json_response(table_for(res, listing["items"], request, listing["metadata"]))
        return json_response(listing)
    if verb == "deletecollection":
        options = await _delete_options(request)
        list_opts = _list_options(request)
        out = await registry.delete_collection(res, ns, list_opts, options,
                                               dry_run=_write_options(request).dry_run)
        return json_response(out)
    if verb == "create" and rp.name is None:
        body = decode_body(await request.read(), request.content_type)
        opts = _write_options(request)
        warnings = _check_unknown_fields(opts, res, body)
        created = await registry.create_encoded(res, ns, body, dry_run=opts.dry_run,
                                                field_manager=opts.field_manager)
        return _object_response(request, res, created.obj, 201, warnings, created.data)

    name = rp.name
    assert name is not None
    if sub == "scale":
        return await _scale(request, registry, res, ns, name, verb)
    if sub == "binding":
        return await _binding(request, registry, res, ns, name)
    if sub == "eviction":
        return await _eviction(request, registry, res, ns, name)
    if sub == "finalize":
        return await _finalize(request, registry, res, name)
    if verb == "get":
        return _object_response(request, res, await registry.get(res, ns, name))
    if verb == "update" or (verb == "create" and sub == "status"):
        body = decode_body(await request.read(), request.content_type)
        opts = _write_options(request)
        warnings = _check_unknown_fields(opts, res, body)
        obj = await registry.update(res, ns, name, body, subresource=sub,
                                    dry_run=opts.dry_run, field_manager=opts.field_manager,
                                    allow_create=res.plural in ("leases", "endpoints"))
        return _object_response(request, res, obj, warnings=warnings)
    if verb == "patch":
        ptype = admission.PATCH_TYPES.get(request.content_type)
        if ptype is None:
            raise errors.unsupported_media_type(request.content_type)
        body = await request.read()
        opts = _write_options(request, ptype)
        obj = await registry.patch(res, ns, name, body, ptype, subresource=sub,
                                   dry_run=opts.dry_run, field_manager=opts.field_manager,
                                   force=opts.force)
        return _object_response(request, res, obj)
    if verb == "delete":
        options = await _delete_options(request)
        obj = await registry.delete(res, ns, name, options,
                                    dry_run=_write_options(request).dry_run)
        return _object_response(request, res, obj)
    raise errors.method_not_allowed(f"{verb} is not supported here")


def _check_unknown_fields(opts: WriteOptions, res: Resource, body: object) -> list[str]:
    """fieldValidation: Strict -> 400 on unknown fields, Warn (default) -> warnings, Ignore."""
    mode = opts.field_validation
    if mode not in ("Strict", "Warn", "Ignore"):
        raise errors.bad_request(f'fieldValidation: Unsupported value: "{mode}": supported '
                                 'values: "Ignore", "Strict", "Warn"')
    if mode == "Ignore" or not isinstance(body, dict):
        return []
    unknown = admission.unknown_fields(res, body)
    if not unknown:
        return []
    messages = [f'unknown field "{f}"' for f in unknown]
    if mode == "Strict":
        raise errors.bad_request("strict decoding error: " + ", ".join(messages))
    return [m.replace('"', '\\"') for m in messages]


async def _delete_options(request: web.Request) -> dict:
    options: dict = {}
    body = await request.read()
    if body:
        parsed = decode_body(body, request.content_type)
        if isinstance(parsed, dict):
            options.update(parsed)
    grace = int_param(request, "gracePeriodSeconds")
    if grace is not None:
        options["gracePeriodSeconds"] = grace
    if request.query.get("propagationPolicy"):
        policy = request.query["propagationPolicy"]
        if policy not in ("Foreground", "Background", "Orphan"):
            raise errors.bad_request(f'propagationPolicy: Unsupported value: "{policy}": '
                                     'supported values: "Foreground", "Background", "Orphan"')
        options["propagationPolicy"] = policy
    if request.query.get("orphanDependents"):
        options["orphanDependents"] = bool_param(request, "orphanDependents")
    return options


# ------------------------------------------------------------------ scale

def _scale_of(res: Resource, obj: dict) -> dict:
    md = obj["metadata"]
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    sel = spec.get("selector")
    if isinstance(sel, dict):
        from k3py.api.selectors import selector_to_string
        sel_str = selector_to_string(sel)
    else:
        sel_str = ",".join(f"{k}={v}" for k, v in (sel or {}).items())
    scale_path = res.extra.get("scale") or {}
    replicas = spec.get("replicas", 0)
    cur = status.get("replicas", 0)
    if scale_path:
        from k3py.api.jsonpath import get_path
        replicas = get_path(obj, scale_path.get("specReplicasPath", ".spec.replicas")) or 0
        cur = get_path(obj, scale_path.get("statusReplicasPath", ".status.replicas")) or 0
        if scale_path.get("labelSelectorPath"):
            sel_str = get_path(obj, scale_path["labelSelectorPath"]) or ""
    out = {"kind": "Scale", "apiVersion": "autoscaling/v1",
           "metadata": {"name": md["name"], "namespace": md.get("namespace"),
                        "uid": md.get("uid"), "resourceVersion": md.get("resourceVersion"),
                        "creationTimestamp": md.get("creationTimestamp")},
           "spec": {"replicas": replicas}, "status": {"replicas": cur}}
    if sel_str:
        out["status"]["selector"] = sel_str
    return out


async def _scale(request: web.Request, registry: Registry, res: Resource, ns: str | None,
                 name: str, verb: str) -> web.Response:
    obj = await registry.get(res, ns, name)
    scale = _scale_of(res, obj)
    if verb == "get":
        return json_response(scale)
    if verb == "update":
        new_scale = decode_body(await request.read(), request.content_type)
    elif verb == "patch":
        ptype = admission.PATCH_TYPES.get(request.content_type)
        if ptype is None or ptype == "apply":
            raise errors.unsupported_media_type(request.content_type)
        new_scale = admission.apply_patch(res, scale, await request.read(),
                                          "merge" if ptype == "strategic" else ptype, "", False)
    else:
        raise errors.method_not_allowed(f"{verb} is not supported on scale")
    replicas = (new_scale.get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or replicas < 0:
        raise errors.invalid("autoscaling", "Scale", name, [errors.field_cause(
            "spec.replicas", f"Invalid value: {replicas}: must be greater than or equal to 0")])
    want_rv = (new_scale.get("metadata") or {}).get("resourceVersion")
    if want_rv and want_rv != obj["metadata"]["resourceVersion"]:
        raise errors.conflict(res.group, res.plural, name, "the object has been modified; "
                              "please apply your changes to the latest version and try again")

    def set_replicas(o: dict) -> dict:
        path = (res.extra.get("scale") or {}).get("specReplicasPath", ".spec.replicas")
        from k3py.api.jsonpath import set_path
        set_path(o, path, replicas)
        return o
    updated = await registry.update_with(res, ns, name, set_replicas,
                                         field_manager=_field_manager(request))
    if updated is None:
        raise errors.not_found(res.group, res.plural, name)
    return json_response(_scale_of(res, updated))


# ------------------------------------------------------------------ pods/binding, eviction

async def _binding(request: web.Request, registry: Registry, res: Resource, ns: str | None,
                   name: str) -> web.Response:
    if request.method != "POST":
        raise errors.method_not_allowed("binding only supports create")
    body = decode_body(await request.read(), request.content_type)
    node = ((body or {}).get("target") or {}).get("name")
    if not node:
        raise errors.invalid("", "Binding", name, [errors.field_cause(
            "target.name", "Required value", "FieldValueRequired")])
    await bind_pod(registry, res, ns, name, node)
    return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                          "status": "Success", "code": 201}, 201)


async def bind_pod(registry: Registry, res: Resource, ns: str | None, name: str,
                   node: str) -> dict:
    """Set spec.nodeName once; a second binding is 409 Conflict as upstream."""
    holder: dict = {}

    def bind(pod: dict) -> dict:
        spec = pod.setdefault("spec", {})
        if spec.get("nodeName"):
            holder["conflict"] = spec["nodeName"]
            return None  # type: ignore[return-value]
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            holder["terminating"] = True
            return None  # type: ignore[return-value]
        spec["nodeName"] = node
        conds = [c for c in (pod.get("status") or {}).get("conditions") or []
                 if c.get("type") != "PodScheduled"]
        from k3py.api.objects import now_rfc3339
        conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                      "lastTransitionTime": now_rfc3339()})
        pod.setdefault("status", {})["conditions"] = conds
        return pod
    out = await registry.update_with(res, ns, name, bind, subresource="binding")
    if "conflict" in holder:
        raise errors.conflict("", "pods", name,
                              f"pod {name} is already assigned to node \"{holder['conflict']}\"")
    if "terminating" in holder:
        raise errors.conflict("", "pods", name, "pod is being deleted, cannot be assigned")
    if out is None:
        raise errors.not_found("", "pods", name)
    return out


async def _eviction(request: web.Request, registry: Registry, res: Resource, ns: str | None,
                    name: str) -> web.Response:
    body = decode_body(await request.read(), request.content_type) if request.can_read_body \
        else {}
    options = (body or {}).get("deleteOptions") or {}
    await registry.delete(res, ns, name, options, dry_run=_write_options(request).dry_run)
    return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                          "status": "Success", "code": 201}, 201)


async def _finalize(request: web.Request, registry: Registry, res: Resource,
                    name: str) -> web.Response:
    body = decode_body(await request.read(), request.content_type)
    finalizers = ((body or {}).get("spec") or {}).get("finalizers") or []

    def set_finalizers(ns_obj: dict) -> dict:
        ns_obj.setdefault("spec", {})["finalizers"] = list(finalizers)
        return ns_obj
    out = await registry.update_with(res, None, name, set_finalizers, subresource="finalize")
    if out is None:
        raise errors.not_found(res.group, res.plural, name)
    return json_response(out)
