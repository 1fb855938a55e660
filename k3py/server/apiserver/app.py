"""The aiohttp application serving the Kubernetes API: health, version, discovery, OpenAPI,
and every resource path. One catch-all route; authentication (then impersonation) runs before
dispatch, and every path but health is authorized: discovery and OpenAPI as non-resource
paths (`get /apis/*`), resources by the handlers.

Built by k3py.server.main with the Registry; extra stream handlers (logs, exec...), the
create-only resources (access reviews) and extra routes (the node tunnel) are plugged in by
the server before start."""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

from k3py import __version__
from k3py.api import errors
from k3py.api.kinds import apiregistration
from k3py.api.resources import ResourceRegistry
from k3py.server.apiserver import handlers
from k3py.server.apiserver.audit import AuditLog
from k3py.server.apiserver.auth import (
    PUBLIC_PATHS,
    REQUEST_USER,
    Authenticator,
    AuthorizerChain,
    User,
)
from k3py.server.apiserver.discovery import AGGREGATED_V2, AGGREGATED_V2BETA1, Discovery
from k3py.server.apiserver.headerdeadline import HeaderDeadline
from k3py.server.apiserver.impersonation import impersonate
from k3py.server.apiserver.limits import RequestLimits
from k3py.server.apiserver.negotiation import (
    bool_param,
    decode_body,
    json_body,
    json_response,
    status_response,
    table_for,
    wants_table,
)
from k3py.server.apiserver.paths import ResourcePath, parse_resource_path
from k3py.server.registry import Registry
from k3py.server.store import InvalidKeyError, StorageFullError, StoreUnavailableError

__all__ = ["ApiServer", "API_SERVER", "build_app", "audit_target", "CreateOnlyHandler"]

log = logging.getLogger("k3py.apiserver")

KUBE_GIT_VERSION = "v1.31.0"  # the Kubernetes API level we model

# (decoded body, requesting user, namespace of the path) -> the object answered with 201
CreateOnlyHandler = Callable[[object, User, str | None], Awaitable[dict]]
# (path, query) -> the object a get names, or the items of a list
ReadOnlyHandler = Callable[[ResourcePath, Mapping[str, str]], "dict | list[dict]"]


@dataclass(kw_only=True)
class ApiServer:
    registry: Registry
    resources: ResourceRegistry
    authenticator: Authenticator
    authorizer: AuthorizerChain
    discovery: Discovery
    streams: dict[str, handlers.StreamHandler] = field(default_factory=dict)
    # (group, plural) of resources that are only ever created, answered by a handler and
    # never stored: SelfSubjectAccessReview, SubjectAccessReview, SelfSubjectReview...
    create_only: dict[tuple[str, str], CreateOnlyHandler] = field(default_factory=dict)
    # (group, plural) of resources only ever read, answered from memory and never stored:
    # metrics.k8s.io's (k3py.server.metrics)
    read_only: dict[tuple[str, str], ReadOnlyHandler] = field(default_factory=dict)
    ready: bool = False
    started: float = field(default_factory=time.time)


API_SERVER: web.AppKey[ApiServer] = web.AppKey("api_server", ApiServer)


def _version_info() -> dict:
    return {"major": "1", "minor": KUBE_GIT_VERSION.split(".")[1],
            "gitVersion": f"{KUBE_GIT_VERSION}+k3py{__version__}",
            "gitCommit": "", "gitTreeState": "clean", "buildDate": "",
            "goVersion": f"python{platform.python_version()}", "compiler": "cpython",
            "platform": f"linux/{platform.machine()}"}


def _accepts_aggregated(request: web.Request) -> str | None:
    accept = request.headers.get("Accept", "")
    if "as=APIGroupDiscoveryList" not in accept:
        return None
    if "v=v2;" in accept or accept.endswith("v=v2") or "v=v2;as" in accept:
        return AGGREGATED_V2
    if "v=v2beta1" in accept:
        return AGGREGATED_V2BETA1
    return None


async def _dispatch(request: web.Request) -> web.StreamResponse:
    api: ApiServer = request.app[API_SERVER]
    path = request.path
    if path in ("/healthz", "/livez", "/ping"):
        return web.Response(text="ok")
    if path == "/readyz":
        if not api.ready:
            return web.Response(status=503, text="not ready")
        return web.Response(text="ok")
    user = api.authenticator.identify(request)
    if user is None and path not in PUBLIC_PATHS:
        raise errors.unauthorized()
    if user is not None:
        user = impersonate(request.headers, user, api.authorizer)
        REQUEST_USER.set(user)
    if path == "/version":
        if user is not None:
            api.authorizer.authorize_path(user, request.method.lower(), path)
        return json_response(_version_info())
    if user is None:
        raise errors.unauthorized()
    if _is_non_resource(path):
        api.authorizer.authorize_path(user, request.method.lower(), path)
    if path in ("/api", "/api/"):
        agg = _accepts_aggregated(request)
        if agg:
            doc = api.discovery.aggregated(core=True, api_version=_agg_version(agg))
            return _aggregated_response(doc, agg)
        return json_response(api.discovery.api_versions())
    if path in ("/apis", "/apis/"):
        agg = _accepts_aggregated(request)
        if agg:
            doc = api.discovery.aggregated(core=False, api_version=_agg_version(agg))
            return _aggregated_response(doc, agg)
        return json_response(api.discovery.api_group_list())
    if path.startswith("/openapi/") or path == _SWAGGER_PB:
        return await _openapi(request, api)
    parts = [p for p in path.split("/") if p]
    if len(parts) == 2 and parts[0] == "apis":
        group = api.discovery.api_group(parts[1])
        if group is None:
            raise errors.StatusError(404, "NotFound",
                                     "the server could not find the requested resource")
        return json_response(group)
    if len(parts) >= 3 and parts[0] == "apis" and \
            not api.resources.in_group_version(parts[1], parts[2]):
        await _refuse_aggregated(api, parts[1], parts[2])
    rp = parse_resource_path(path, api.resources)
    if rp is None:
        api.authorizer.authorize_path(user, request.method.lower(), path)
        raise errors.StatusError(404, "NotFound", "the server could not find the requested resource")
    if rp.resource is None:
        return json_response(api.discovery.resource_list(rp.group, rp.version))
    create_only = api.create_only.get((rp.resource.group, rp.resource.plural))
    if create_only is not None:
        return await _create_only(request, rp, user, api.authorizer, create_only)
    read_only = api.read_only.get((rp.resource.group, rp.resource.plural))
    if read_only is not None:
        return _read_only(request, rp, user, api.authorizer, read_only)
    return await handlers.handle_resource(request, rp, user, api.registry, api.authorizer,
                                          api.streams)


def _is_non_resource(path: str) -> bool:
    """Discovery roots, group and group-version documents (`/api`, `/api/v1`, `/apis`,
    `/apis/<g>`, `/apis/<g>/<v>`), OpenAPI: authorized as non-resource paths before anything
    else is looked at, as upstream."""
    parts = [p for p in path.split("/") if p]
    if path.startswith("/openapi") or path == _SWAGGER_PB or not parts:
        return True
    return parts[0] == "api" and len(parts) <= 2 or parts[0] == "apis" and len(parts) <= 3


async def _create_only(request: web.Request, rp: ResourcePath, user: User,
                       authorizer: AuthorizerChain, handler: CreateOnlyHandler) -> web.Response:
    res = rp.resource
    assert res is not None
    if request.method != "POST" or rp.name is not None or rp.subresource:
        raise errors.method_not_allowed(f"the server does not allow this method on the "
                                        f"requested resource ({request.method})")
    authorizer.authorize(user, "create", res.group, res.plural, rp.namespace)
    body = decode_body(await request.read(), request.content_type)
    return json_response(await handler(body, user, rp.namespace), 201)


def _read_only(request: web.Request, rp: ResourcePath, user: User,
               authorizer: AuthorizerChain, handler: ReadOnlyHandler) -> web.Response:
    res = rp.resource
    assert res is not None
    watch = rp.legacy_watch or bool_param(request, "watch")
    verb = "watch" if watch else "get" if rp.name is not None else "list"
    if request.method != "GET" or rp.subresource or verb not in res.verbs:
        what = verb if request.method == "GET" else request.method
        raise errors.method_not_allowed(f"the server does not allow this method on the "
                                        f"requested resource ({what})")
    authorizer.authorize(user, verb, res.group, res.plural, rp.namespace, rp.name)
    out = handler(rp, request.query)
    items = [out] if isinstance(out, dict) else out
    if wants_table(request):
        return json_response(table_for(res, items, request, {}))
    if isinstance(out, dict):
        return json_response(out)
    return json_response({"kind": res.list_kind, "apiVersion": res.api_version,
                          "metadata": {}, "items": items})


async def _refuse_aggregated(api: ApiServer, group: str, version: str) -> None:
    """503 for a group version an APIService hands to an aggregated API server: k3py does
    not proxy to one (a local APIService for a group nobody serves stays a 404)."""
    res = api.resources.find(apiregistration.GROUP, "apiservices")
    if res is None:
        return
    name = apiregistration.apiservice_name(group, version)
    try:
        obj = await api.registry.get(res, None, name)
    except errors.StatusError:
        return
    ref = apiregistration.service_of(obj)
    if ref is not None:
        raise errors.service_unavailable(
            f"the server is currently unable to handle the request: APIService {name} is "
            f"backed by service {ref.get('namespace')}/{ref.get('name')}, and k3py does not "
            f"proxy to aggregated API servers")


def _agg_version(content_type: str) -> str:
    return "apidiscovery.k8s.io/v2" if content_type == AGGREGATED_V2 \
        else "apidiscovery.k8s.io/v2beta1"


def _aggregated_response(doc: dict, content_type: str) -> web.Response:
    return web.Response(body=json_body(doc), headers={"Content-Type": content_type})


_SWAGGER_PB = "/swagger-2.0.0.pb-v1"  # the older path of the same protobuf, which kubectl tries


def _openapi_v2_protobuf(request: web.Request, resources: list, gen: int) -> web.Response:
    """The gnostic protobuf of the v2 document, with upstream's ETag and 304 on a match."""
    from k3py.api import openapi, openapi_pb
    body, etag = openapi.openapi_v2_protobuf(resources, gen)
    headers = {"ETag": etag, "Vary": "Accept", "Cache-Control": "no-cache, private"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, headers={**headers, "Content-Type": openapi_pb.CONTENT_TYPE})


async def _openapi(request: web.Request, api: ApiServer) -> web.Response:
    from k3py.api import openapi, openapi_pb
    path = request.path
    gen = api.resources.generation
    resources = list(api.resources)
    if path == _SWAGGER_PB:
        return _openapi_v2_protobuf(request, resources, gen)
    if path == "/openapi/v2":
        accept = request.headers.get("Accept", "")
        if any(t in accept for t in openapi_pb.ACCEPTED):
            return _openapi_v2_protobuf(request, resources, gen)
        if "protobuf" in accept and "json" not in accept:
            raise errors.not_acceptable("only application/json is served")
        return web.Response(body=openapi.openapi_v2(resources, gen),
                            content_type="application/json")
    if path in ("/openapi/v3", "/openapi/v3/"):
        return json_response(openapi.openapi_v3_index(resources, gen))
    if path.startswith("/openapi/v3/"):
        gv = path[len("/openapi/v3/"):].strip("/")
        parts = gv.split("/")
        if parts[0] == "api" and len(parts) == 2:
            group, version = "", parts[1]
        elif parts[0] == "apis" and len(parts) == 3:
            group, version = parts[1], parts[2]
        else:
            raise errors.StatusError(404, "NotFound", "the server could not find the requested resource")
        body = openapi.openapi_v3_group_version(resources, group, version, gen)
        if body is None:
            raise errors.StatusError(404, "NotFound", "the server could not find the requested resource")
        return web.Response(body=body, content_type="application/json",
                            headers={"Cache-Control": "public, immutable"})
    raise errors.StatusError(404, "NotFound", "the server could not find the requested resource")


MAX_BODY_BYTES = 3 * 1024 * 1024  # kube-apiserver's MaxRequestBodyBytes


@web.middleware
async def _errors_middleware(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except errors.StatusError as e:
        if e.code >= 500:
            log.warning("%s %s -> %s %s", request.method, request.path, e.code, e.message)
        return status_response(e)
    except web.HTTPRequestEntityTooLarge:
        return status_response(errors.request_entity_too_large(f"limit is {MAX_BODY_BYTES}"))
    except InvalidKeyError as e:  # a name the datastore cannot hold (validation is looser)
        return status_response(errors.bad_request(str(e)))
    except StorageFullError as e:  # logged by the store when the disk filled up
        return status_response(errors.insufficient_storage(str(e)))
    except StoreUnavailableError as e:  # a shared datastore's outage: clients retry
        log.warning("%s %s -> datastore unavailable: %s", request.method, request.path, e)
        err = errors.timeout(str(e)) if e.timeout else errors.service_unavailable(str(e))
        return status_response(err)
    except web.HTTPException:
        raise
    except Exception as e:  # noqa: BLE001 - one bad request must not take the server down
        log.exception("internal error on %s %s", request.method, request.path)
        return status_response(errors.internal_error(str(e) or type(e).__name__))


def audit_target(api: ApiServer):
    """request -> (verb, objectRef or None), as the audit log records them."""
    def resolve(request: web.Request) -> tuple[str, dict | None]:
        method = request.method
        rp = parse_resource_path(request.path, api.resources)
        if rp is None or rp.resource is None:
            return method.lower(), None
        watch = rp.legacy_watch or (method == "GET" and request.query.get("watch") in
                                    ("1", "true"))
        if watch:
            verb = "watch"
        elif rp.name is None:
            verb = {"GET": "list", "DELETE": "deletecollection"}.get(
                method, handlers.VERB_BY_METHOD.get(method, method.lower()))
        else:
            verb = handlers.VERB_BY_METHOD.get(method, method.lower())
        ref = {"resource": rp.resource.plural, "namespace": rp.namespace, "name": rp.name,
               "apiGroup": rp.resource.group, "apiVersion": rp.version,
               "subresource": rp.subresource}
        return verb, {k: v for k, v in ref.items() if v}
    return resolve


def build_app(api: ApiServer, audit: AuditLog | None = None,
              limits: RequestLimits | None = None,
              deadline: HeaderDeadline | None = None) -> web.Application:
    """The API's aiohttp app; with `audit`, its middleware records every request (outermost,
    so it sees the final status of errors too); `limits` (in-flight and timeout) run inside
    the error handling, so their 429 and 504 are Status bodies; `deadline` (the first
    request's header timeout) is disarmed before anything else runs."""
    middlewares = [_errors_middleware]
    if limits is not None:
        middlewares.append(limits.middleware())
    if audit is not None:
        middlewares.insert(0, audit.middleware(audit_target(api)))
    if deadline is not None:
        middlewares.insert(0, deadline.middleware())
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY_BYTES)
    app[API_SERVER] = api
    return app


def add_resource_routes(app: web.Application) -> None:
    """The catch-all route; call after any specific routes (e.g. the node tunnel)."""
    app.router.add_route("*", "/{tail:.*}", _dispatch)
