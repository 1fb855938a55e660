"""The server's half of the built-in ingress (the proxy itself runs on every node:
agent/ingress): the default IngressClass `k3py`, kept at start unless `--disable ingress`, and
a controller that writes each served Ingress's `status.loadBalancer.ingress` (the InternalIPs
of the Ready nodes: every node's proxy serves it), takes the nodes' addresses out of it when
the Ingress stops being served (its class changed), and tells what is wrong with it.

What is wrong (a backend Service or its port missing, a TLS secret missing or not a usable
`kubernetes.io/tls` secret, a path that is not absolute) is one Warning Event on the Ingress
and one log line per new problem; the proxies answer such routes 503 or present the default
certificate, as the Ingress would otherwise be served."""

from __future__ import annotations

import base64
import binascii
import logging
from collections import Counter
from dataclasses import dataclass

from cryptography import x509

from k3py.api.ingress import (
    ADDON,
    TLS_SECRET_TYPE,
    ingress_class,
    served,
    tls_secret_names,
)
from k3py.api.objects import name_of, namespace_of
from k3py.server.controllers.addonobjects import ensure_addon_object
from k3py.server.controllers.base import Controller, ControllerContext, object_key, split_key
from k3py.server.registry import Registry

__all__ = ["IngressController", "ensure_ingress_class", "Problem", "problems",
           "serving_addresses"]

log = logging.getLogger("k3py.controllers.ingress")

GROUP = "networking.k8s.io"


async def ensure_ingress_class(registry: Registry, enabled: bool) -> None:
    """At server start: the `k3py` IngressClass (see addonobjects)."""
    await ensure_addon_object(registry, registry.resources.get(GROUP, "v1", "ingressclasses"),
                              ingress_class(), ADDON, enabled)


@dataclass(frozen=True, order=True)
class Problem:
    reason: str
    message: str


def _backends(spec: dict) -> list[dict]:
    out = [spec["defaultBackend"]] if isinstance(spec.get("defaultBackend"), dict) else []
    for rule in spec.get("rules") or []:
        for p in ((rule or {}).get("http") or {}).get("paths") or []:
            if isinstance((p or {}).get("backend"), dict):
                out.append(p["backend"])
    return out


def problems(ing: dict, service, secret) -> list[Problem]:
    """What keeps `ing` from being served as written; `service(ns, name)` and
    `secret(ns, name)` look objects up (None: absent)."""
    ns, spec = namespace_of(ing), ing.get("spec") or {}
    out: set[Problem] = set()
    for b in _backends(spec):
        ref = b.get("service") or {}
        if not ref:
            continue  # a resource backend: answered 503, as the Ingress's author expects
        svc = service(ns, ref.get("name") or "")
        if svc is None:
            out.add(Problem("ServiceNotFound", f"service {ns}/{ref.get('name')} not found"))
            continue
        want = ref.get("port") or {}
        ports = (svc.get("spec") or {}).get("ports") or []
        if not any(("number" in want and p.get("port") == want["number"]) or
                   ("name" in want and p.get("name") == want["name"]) for p in ports):
            shown = want.get("name") or want.get("number")
            out.add(Problem("ServicePortNotFound",
                            f"service {ns}/{ref.get('name')} has no port {shown}"))
    for rule in spec.get("rules") or []:
        for p in ((rule or {}).get("http") or {}).get("paths") or []:
            path = (p or {}).get("path")
            if path and not str(path).startswith("/"):
                out.add(Problem("InvalidPath", f"path {path!r} of host "
                                f"{(rule or {}).get('host') or '*'} does not start with '/'"))
    for name in tls_secret_names(ing):
        why = _tls_secret_problem(secret(ns, name))
        if why:
            out.add(Problem("SecretNotFound" if why == "not found" else "InvalidSecret",
                            f"TLS secret {ns}/{name} {why}: the default certificate is served"))
    return sorted(out)


def _tls_secret_problem(secret: dict | None) -> str:
    if secret is None:
        return "not found"
    if secret.get("type") != TLS_SECRET_TYPE:
        return f"is not of type {TLS_SECRET_TYPE}"
    data = secret.get("data") or {}
    try:
        x509.load_pem_x509_certificate(base64.b64decode(data.get("tls.crt") or ""))
    except (ValueError, binascii.Error):
        return "has no PEM certificate in tls.crt"
    return ""


def node_addresses(nodes: list[dict], *, ready_only: bool = False) -> list[str]:
    """The InternalIPs of the nodes (only the Ready ones with `ready_only`), sorted."""
    out = set()
    for node in nodes:
        status = node.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in status.get("conditions") or [])
        if ready or not ready_only:
            out.update(a["address"] for a in status.get("addresses") or []
                       if a.get("type") == "InternalIP" and a.get("address"))
    return sorted(out)


def serving_addresses(nodes: list[dict]) -> list[str]:
    """The InternalIPs of the Ready nodes, sorted: where every node's proxy listens."""
    return node_addresses(nodes, ready_only=True)


def _lb_ingress(ing: dict) -> list[dict]:
    return ((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []


class IngressController(Controller):
    """Status and problems of the Ingresses k3py serves."""

    name = "ingress"
    workers = 1

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.res = ctx.resource(GROUP, "ingresses")
        self._reported: dict[str, tuple[str, list[Problem]]] = {}  # key -> (uid, problems)
        self._addresses: list[str] = []
        self._serving: Counter[str] = Counter()  # InternalIP -> Ready nodes that have it

    def setup(self) -> None:
        inf = self.ctx.informers
        self.ingresses = inf.informer(GROUP, "ingresses")
        self.classes = inf.informer(GROUP, "ingressclasses")
        self.services = inf.informer("", "services")
        self.secrets = inf.informer("", "secrets")
        self.nodes = inf.informer("", "nodes")
        self.ingresses.add_handler(self._on_ingress)
        self.classes.add_handler(lambda *_: self._enqueue_all())
        self.services.add_handler(self._on_referenced)
        self.secrets.add_handler(self._on_referenced)
        self.nodes.add_handler(self._on_node)

    def _on_ingress(self, etype: str, old: dict | None, new: dict | None) -> None:
        obj = new or old
        if obj is not None:
            self.enqueue(object_key(obj))

    def _enqueue_all(self, namespace: str | None = None) -> None:
        for ing in self.ingresses.list(namespace):
            self.enqueue(object_key(ing))

    def _on_referenced(self, etype: str, old: dict | None, new: dict | None) -> None:
        obj = new or old
        if obj is not None:
            self._enqueue_all(namespace_of(obj))

    def _on_node(self, etype: str, old: dict | None, new: dict | None) -> None:
        """Counts each node's serving addresses in and out as it changes: a scan of every
        node at each event would cost N x N while N nodes join, and at each heartbeat."""
        before = serving_addresses([old]) if old is not None else []
        after = serving_addresses([new]) if new is not None and etype != "DELETED" else []
        if before == after:
            return  # a heartbeat: this node's share of the addresses is the same
        self._serving -= Counter(before)  # (keeps only the addresses still counted)
        self._serving += Counter(after)
        addresses = sorted(self._serving)
        if addresses != self._addresses:
            self._addresses = addresses
            self._enqueue_all()

    async def reconcile(self, key: str) -> None:
        for inf in (self.ingresses, self.classes, self.services, self.secrets, self.nodes):
            await inf.synced.wait()
        ns, name = split_key(key)
        ing = self.ingresses.get(ns, name)
        if ing is None:
            self._reported.pop(key, None)
            return
        if not served(ing, self.classes.list()):
            self._reported.pop(key, None)
            ours = set(node_addresses(self.nodes.list()))
            await self._write_status(ing, [e for e in _lb_ingress(ing) if e.get("ip") not in ours])
            return
        await self._report(key, ing)
        await self._write_status(ing, [{"ip": ip} for ip in serving_addresses(self.nodes.list())])

    async def _write_status(self, ing: dict, want: list[dict]) -> None:
        if _lb_ingress(ing) == want:
            return

        def write(cur: dict) -> dict:
            cur.setdefault("status", {})["loadBalancer"] = {"ingress": want} if want else {}
            return cur
        await self.registry.update_with(self.res, namespace_of(ing), name_of(ing), write,
                                        subresource="status")

    async def _report(self, key: str, ing: dict) -> None:
        found = problems(ing, self.services.get, self.secrets.get)
        uid = (ing.get("metadata") or {}).get("uid") or ""
        seen_uid, seen = self._reported.get(key, ("", []))
        self._reported[key] = (uid, found)
        for p in found:
            if seen_uid == uid and p in seen:
                continue
            log.warning("ingress %s/%s: %s", namespace_of(ing), name_of(ing), p.message)
            await self.ctx.recorder.record(ing, "Warning", p.reason, p.message,
                                           component="k3py-ingress")
