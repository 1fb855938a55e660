"""The ingress routing table: networking.k8s.io/v1 Ingresses of our class, resolved against
Services, EndpointSlices and TLS Secrets into what the proxy needs per request.

Matching as the Ingress spec says: a rule's host is exact or a single-label wildcard
(`*.example.com` matches `a.example.com`, not `example.com` nor `a.b.example.com`), exact hosts
before wildcards before host-less rules; within them the longest path wins, Exact before Prefix
at equal length; Prefix matches element-wise (`/foo` matches `/foo` and `/foo/bar`, not
`/foobar`); ImplementationSpecific is a Prefix here. A request that matches no rule goes to
the `defaultBackend` of an Ingress (the oldest one that has one), else 404.

Ingresses served: k3py.api.ingress.served (no class, `k3py`, K3s's `traefik`, or a class of
the `k3py.io/ingress` controller), others are left out."""

from __future__ import annotations

from dataclasses import dataclass, field

from k3py.agent.network.records import ready_endpoints
from k3py.api.ingress import ingress_class, served

__all__ = ["Backend", "Route", "RouteTable", "build_routes"]


@dataclass
class Backend:
    """Where a matched request goes: `endpoints` (ip, port), local ones first; `error` when
    the backend cannot be used (answered 503 with it)."""
    service: str = ""
    endpoints: list[tuple[str, int]] = field(default_factory=list)
    error: str = ""


@dataclass
class Route:
    path: str
    exact: bool
    backend: Backend
    ingress: str  # namespace/name, for logs and Events


@dataclass
class RouteTable:
    exact_hosts: dict[str, list[Route]] = field(default_factory=dict)
    wildcard_hosts: dict[str, list[Route]] = field(default_factory=dict)  # suffix ".x.y"
    any_host: list[Route] = field(default_factory=list)
    default: Backend | None = None
    certs: dict[str, tuple[str, str]] = field(default_factory=dict)  # host -> (cert, key) PEM
    problems: list[tuple[str, str]] = field(default_factory=list)  # (ingress, message)

    def match(self, host: str, path: str) -> Backend | None:
        host = _strip_port(host).lower()
        routes = self.exact_hosts.get(host)
        if routes is not None and (b := _match_path(routes, path)) is not None:
            return b
        dot = host.find(".")
        if dot > 0:
            routes = self.wildcard_hosts.get(host[dot:])
            if routes is not None and (b := _match_path(routes, path)) is not None:
                return b
        b = _match_path(self.any_host, path)
        return b if b is not None else self.default

    def cert_for(self, server_name: str) -> tuple[str, str] | None:
        name = server_name.lower()
        if name in self.certs:
            return self.certs[name]
        dot = name.find(".")
        return self.certs.get("*" + name[dot:]) if dot > 0 else None


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _match_path(routes: list[Route], path: str) -> Backend | None:
    for r in routes:  # sorted longest first, Exact before Prefix
        if r.exact:
            if path == r.path:
                return r.backend
        elif r.path == "/" or path == r.path or path.startswith(r.path.rstrip("/") + "/"):
            return r.backend
    return None


def build_routes(ingresses: list[dict], services: list[dict], slices: list[dict],
                 secrets: list[dict], node_name: str = "",
                 classes: list[dict] | None = None) -> RouteTable:
    """The table for the Ingresses served given `classes` (every IngressClass; None: the
    server's `k3py` class alone); endpoints on `node_name` come first."""
    classes = [ingress_class()] if classes is None else classes
    svc_index = {_key(s): s for s in services}
    slice_index: dict[tuple[str, str], list[dict]] = {}
    for es in slices:
        md = es.get("metadata") or {}
        owner = (md.get("labels") or {}).get("kubernetes.io/service-name")
        if owner:
            slice_index.setdefault((md.get("namespace") or "default", owner), []).append(es)
    secret_index = {_key(s): s for s in secrets}
    table = RouteTable()
    ordered = sorted((i for i in ingresses if served(i, classes)),
                     key=lambda i: ((i.get("metadata") or {}).get("creationTimestamp") or "",
                                    _key(i)))
    for ing in ordered:
        ns, name = _key(ing)
        ident = f"{ns}/{name}"
        spec = ing.get("spec") or {}

        def backend(b: dict | None, ns: str = ns, ident: str = ident) -> Backend:
            return _resolve(b or {}, ns, svc_index, slice_index, node_name, table, ident)
        if spec.get("defaultBackend") and table.default is None:
            table.default = backend(spec["defaultBackend"])
        for rule in spec.get("rules") or []:
            host = str(rule.get("host") or "").lower()
            for p in ((rule.get("http") or {}).get("paths") or []):
                path = p.get("path") or "/"
                ptype = p.get("pathType") or "ImplementationSpecific"
                if not path.startswith("/"):
                    table.problems.append((ident, f"path {path!r} must start with '/'"))
                    continue
                route = Route(path, ptype == "Exact", backend(p.get("backend")), ident)
                if not host:
                    table.any_host.append(route)
                elif host.startswith("*."):
                    table.wildcard_hosts.setdefault(host[1:], []).append(route)
                else:
                    table.exact_hosts.setdefault(host, []).append(route)
        for tls in spec.get("tls") or []:
            secret = secret_index.get((ns, tls.get("secretName") or ""))
            data = (secret or {}).get("data") or {}
            if secret is None or "tls.crt" not in data or "tls.key" not in data:
                table.problems.append((ident, f"TLS secret {ns}/{tls.get('secretName')} is "
                                              f"missing or has no tls.crt/tls.key"))
                continue
            pair = (_b64(data["tls.crt"]), _b64(data["tls.key"]))
            for host in tls.get("hosts") or []:
                table.certs.setdefault(str(host).lower(), pair)
    for routes in (*table.exact_hosts.values(), *table.wildcard_hosts.values(),
                   table.any_host):
        routes.sort(key=lambda r: (-len(r.path), not r.exact))
    return table


def _resolve(b: dict, ns: str, services: dict, slices: dict, node_name: str,
             table: RouteTable, ident: str) -> Backend:
    if b.get("resource"):
        return Backend(error="resource backends are not supported")
    svc_ref = b.get("service") or {}
    svc_name = svc_ref.get("name") or ""
    svc = services.get((ns, svc_name))
    if svc is None:
        table.problems.append((ident, f"service {ns}/{svc_name} not found"))
        return Backend(f"{ns}/{svc_name}", error=f"service {ns}/{svc_name} not found")
    want = svc_ref.get("port") or {}
    port = next((p for p in (svc.get("spec") or {}).get("ports") or []
                 if ("number" in want and p.get("port") == want["number"])
                 or ("name" in want and p.get("name") == want["name"])), None)
    if port is None:
        table.problems.append((ident, f"service {ns}/{svc_name} has no port {want}"))
        return Backend(f"{ns}/{svc_name}", error=f"service {ns}/{svc_name} has no port {want}")
    eps: list[tuple[bool, str, int]] = []
    for es in slices.get((ns, svc_name), []):
        target = next((q.get("port") for q in es.get("ports") or []
                       if (q.get("name") or "") == (port.get("name") or "")), None)
        if not isinstance(target, int):
            continue
        for ep, addrs in ready_endpoints(es):
            eps.extend((ep.get("nodeName") != node_name, ip, target) for ip in addrs)
    eps.sort()
    return Backend(f"{ns}/{svc_name}", [(ip, p) for _, ip, p in eps])


def _key(obj: dict) -> tuple[str, str]:
    md = obj.get("metadata") or {}
    return md.get("namespace") or "default", md.get("name") or ""


def _b64(value: str) -> str:
    import base64
    return base64.b64decode(value).decode()
