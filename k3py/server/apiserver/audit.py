"""The audit log, as kube-apiserver writes it: one audit.k8s.io/v1 Event per request stage as a
JSON line, chosen by an upstream-shaped Policy (audit.k8s.io/v1 Policy: rules matched in
order on users, userGroups, verbs, resources with apiGroups and resourceNames, namespaces,
nonResourceURLs; levels None, Metadata, Request, RequestResponse; omitStages), rotated by size.

`--audit-log-path` turns it on; without `--audit-policy-file` every request is logged at
Metadata level (no bodies, so no secret values in the log), but for the servers' own frequent
calls given as `quiet` (level None, as upstream's example policies skip the system's polling),
and the RequestReceived stage is omitted. Request adds the request body (as the handler
decoded it: JSON, YAML or protobuf), RequestResponse also the response body when it is JSON.
A request is logged when its response is complete: a watch, a stream or a websocket when it
ends (no ResponseStarted stage). Health checks are never logged, whatever the policy."""

from __future__ import annotations

import fnmatch
import json
import logging
import logging.handlers
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiohttp import web

from k3py.server.configfile import ConfigError, read_yaml

__all__ = ["AuditPolicy", "AuditLog", "PolicyError", "LEVELS"]

LEVELS = ("None", "Metadata", "Request", "RequestResponse")
_SKIP_PATHS = {"/healthz", "/livez", "/readyz", "/ping"}
_MAX_BODY_IN_LOG = 256 * 1024


class PolicyError(ValueError):
    """The policy file cannot be used (one line for the user)."""


@dataclass
class _Rule:
    level: str
    users: list[str] = field(default_factory=list)
    user_groups: list[str] = field(default_factory=list)
    verbs: list[str] = field(default_factory=list)
    resources: list[dict] = field(default_factory=list)  # {group, resources, resourceNames}
    namespaces: list[str] = field(default_factory=list)
    non_resource_urls: list[str] = field(default_factory=list)
    omit_stages: list[str] = field(default_factory=list)

    def matches(self, user: str, groups: list[str], verb: str, ref: dict | None,
                path: str) -> bool:
        if self.users and user not in self.users:
            return False
        if self.user_groups and not set(groups) & set(self.user_groups):
            return False
        if self.verbs and verb not in self.verbs:
            return False
        if ref is None:  # a non-resource request
            if self.resources or self.namespaces:
                return False
            return not self.non_resource_urls or any(
                fnmatch.fnmatchcase(path, u) for u in self.non_resource_urls)
        if self.non_resource_urls:
            return False
        if self.namespaces and ref.get("namespace", "") not in self.namespaces:
            return False
        if not self.resources:
            return True
        for r in self.resources:
            if r.get("group", "") != ref.get("apiGroup", "") and r.get("group") != "*":
                continue
            names = r.get("resources") or []
            what = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            if names and not any(n == "*" or n == what or n == ref["resource"] and
                                 not ref.get("subresource") or
                                 (n.startswith("*/") and ref.get("subresource") == n[2:])
                                 for n in names):
                continue
            rn = r.get("resourceNames") or []
            if rn and ref.get("name") not in rn:
                continue
            return True
        return False


class AuditPolicy:
    def __init__(self, rules: list[_Rule], omit_stages: list[str]) -> None:
        self.rules = rules
        self.omit_stages = omit_stages

    @classmethod
    def default(cls, quiet: Iterable[tuple[str, str]] = ()) -> AuditPolicy:
        """Every request at Metadata level, RequestReceived omitted; but level None for each
        (user, non-resource path) in `quiet`."""
        return cls([*(_Rule("None", users=[user], non_resource_urls=[path])
                      for user, path in quiet), _Rule("Metadata")], ["RequestReceived"])

    @classmethod
    def load(cls, path: str) -> AuditPolicy:
        try:
            doc = read_yaml(path, "the audit policy")
        except ConfigError as e:
            raise PolicyError(str(e)) from None
        if not isinstance(doc, dict) or doc.get("kind") != "Policy" or \
                not str(doc.get("apiVersion", "")).startswith("audit.k8s.io/"):
            raise PolicyError(f"{path}: want kind Policy, apiVersion audit.k8s.io/v1")
        rules = []
        for i, r in enumerate(doc.get("rules") or []):
            if not isinstance(r, dict) or r.get("level") not in LEVELS:
                raise PolicyError(f"{path}: rules[{i}].level must be one of "
                                  f"{', '.join(LEVELS)}")
            rules.append(_Rule(r["level"], list(r.get("users") or []),
                               list(r.get("userGroups") or []), list(r.get("verbs") or []),
                               list(r.get("resources") or []), list(r.get("namespaces") or []),
                               list(r.get("nonResourceURLs") or []),
                               list(r.get("omitStages") or [])))
        return cls(rules, list(doc.get("omitStages") or []))

    def decide(self, user: str, groups: list[str], verb: str, ref: dict | None,
               path: str) -> tuple[str, list[str]]:
        """(level, stages omitted) for a request; no matching rule: level None."""
        for r in self.rules:
            if r.matches(user, groups, verb, ref, path):
                return r.level, self.omit_stages + r.omit_stages
        return "None", self.omit_stages


class AuditLog:
    def __init__(self, path: str, policy: AuditPolicy, *, max_size_mb: int = 100,
                 max_backups: int = 10) -> None:
        self.policy = policy
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_size_mb * 1024 * 1024 if max_size_mb > 0 else 0,
            backupCount=max_backups, encoding="utf-8", delay=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger = logging.Logger("k3py.audit")  # not in the logging tree: only the file
        self._logger.addHandler(handler)
        self._logger.setLevel(logging.INFO)
        self._handler = handler

    def close(self) -> None:
        self._handler.close()

    def write(self, event: dict) -> None:
        self._logger.info(json.dumps(event, separators=(",", ":")))

    def middleware(self, resolve):
        """An aiohttp middleware; `resolve(request)` -> (verb, objectRef or None)."""
        @web.middleware
        async def audit(request: web.Request, handler) -> web.StreamResponse:
            if request.path in _SKIP_PATHS:
                return await handler(request)
            received = time.time()
            audit_id = str(uuid.uuid4())
            response = None
            try:
                response = await handler(request)
                return response
            finally:
                self._log(request, response, received, audit_id, resolve)
        return audit

    def _log(self, request: web.Request, response: web.StreamResponse | None,
             received: float, audit_id: str, resolve) -> None:
        from k3py.server.apiserver.auth import REQUEST_USER
        user = REQUEST_USER.get()
        name, groups = (user.name, list(user.groups)) if user is not None else \
            ("system:anonymous", ["system:unauthenticated"])
        try:
            verb, ref = resolve(request)
        except Exception:  # noqa: BLE001 - a path we cannot place: log it as non-resource
            verb, ref = request.method.lower(), None
        level, omit = self.policy.decide(name, groups, verb, ref, request.path)
        if level == "None":
            return
        base = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": level,
                "auditID": audit_id, "requestURI": request.path_qs, "verb": verb,
                "user": {"username": name, "groups": groups},
                "sourceIPs": [request.remote or ""],
                "userAgent": request.headers.get("User-Agent", "")}
        if ref is not None:
            base["objectRef"] = ref
        stamp = _ts(received)
        if "RequestReceived" not in omit:
            self.write({**base, "stage": "RequestReceived",
                        "requestReceivedTimestamp": stamp, "stageTimestamp": stamp})
        if "ResponseComplete" in omit:
            return
        status = response.status if response is not None else 500
        event = {**base, "stage": "ResponseComplete",
                 "responseStatus": {"metadata": {}, "code": status},
                 "requestReceivedTimestamp": stamp, "stageTimestamp": _ts(time.time())}
        if level in ("Request", "RequestResponse"):
            body = _request_object(request)
            if body is not None:
                event["requestObject"] = body
        if level == "RequestResponse" and isinstance(response, web.Response):
            body = _json_body(response.body if isinstance(response.body, bytes) else None)
            if body is not None:
                event["responseObject"] = body
        self.write(event)


def _request_object(request: web.Request):
    """The request body as an object (JSON, YAML or protobuf, as the handlers decode it),
    when the handler read it; None otherwise."""
    raw = getattr(request, "_read_bytes", None)
    if not raw or len(raw) > _MAX_BODY_IN_LOG:
        return None
    from k3py.server.apiserver.negotiation import decode_body
    try:
        return decode_body(raw, request.content_type)
    except Exception:  # noqa: BLE001 - a body the handler refused: left out of the log
        return None


def _json_body(raw: bytes | None):
    if not raw or len(raw) > _MAX_BODY_IN_LOG:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _ts(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"
