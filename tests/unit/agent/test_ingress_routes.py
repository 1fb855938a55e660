"""The ingress routing table as the Ingress spec and K3s's class names say, without a proxy:
which Ingresses are served (no class, `k3py`, K3s's `traefik`, the deprecated annotation, a
class of our controller; not another controller's), service ports by name, resource backends
(503), ImplementationSpecific as Prefix, longest path first with Exact before Prefix, the
oldest Ingress's defaultBackend, and this node's endpoints first."""

from __future__ import annotations

import pytest

from k3py.agent.ingress.routes import build_routes
from k3py.api.ingress import ingress_class

pytestmark = pytest.mark.unit


def _svc(name: str) -> dict:
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"name": "web", "port": 8000}]}}


def _slice(svc: str, *endpoints: tuple[str, str]) -> dict:
    return {"metadata": {"name": f"{svc}-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": svc}},
            "ports": [{"name": "web", "port": 9000}],
            "endpoints": [{"addresses": [ip], "nodeName": node, "conditions": {"ready": True}}
                          for ip, node in endpoints]}


def _ing(name: str, host: str, *paths: tuple[str, str, dict], created: str = "2026-01-01",
         cls: str | None = None, annotation: str | None = None, **spec) -> dict:
    md: dict = {"name": name, "namespace": "default", "creationTimestamp": created}
    if annotation:
        md["annotations"] = {"kubernetes.io/ingress.class": annotation}
    return {"metadata": md, "spec": {
        "ingressClassName": cls, **spec,
        "rules": [{"host": host, "http": {"paths": [
            {"path": p, "pathType": t, "backend": b} for p, t, b in paths]}}]}}


def _to(svc: str) -> dict:
    return {"service": {"name": svc, "port": {"name": "web"}}}


def test_classes_served():
    ours = {"metadata": {"name": "edge"}, "spec": {"controller": "k3py.io/ingress"}}
    nginx = {"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}}
    ings = [_ing(f"i-{c}", f"{c}.test", ("/", "Prefix", _to("s")), cls=c)
            for c in ("k3py", "traefik", "edge", "nginx")]
    ings += [_ing("none", "none.test", ("/", "Prefix", _to("s"))),
             _ing("ann", "ann.test", ("/", "Prefix", _to("s")), annotation="traefik"),
             _ing("ann-nginx", "ann-nginx.test", ("/", "Prefix", _to("s")), annotation="nginx")]
    table = build_routes(ings, [_svc("s")], [_slice("s", ("10.0.0.1", "n1"))], [], "n1",
                         [ingress_class(), ours, nginx])
    assert sorted(table.exact_hosts) == ["ann.test", "edge.test", "k3py.test", "none.test",
                                         "traefik.test"]
    # no IngressClass of our controller: nothing served
    assert build_routes(ings, [_svc("s")], [], [], "n1", [nginx]).exact_hosts == {}


def test_paths_ports_by_name_resource_backends_and_default():
    resource = {"resource": {"apiGroup": "k8s.example.com", "kind": "Bucket", "name": "b"}}
    ings = [_ing("new", "app.test", ("/", "Prefix", _to("b")), created="2026-02-01",
                 defaultBackend=_to("b")),
            _ing("old", "app.test", ("/api", "ImplementationSpecific", _to("a")),
                 ("/api/v1", "Exact", _to("b")), ("/api/v1", "Prefix", _to("a")),
                 ("/static", "Prefix", resource), created="2026-01-01",
                 defaultBackend=_to("a"))]
    slices = [_slice("a", ("10.0.0.1", "n2"), ("10.0.0.2", "n1")),
              _slice("b", ("10.0.1.1", "n1"))]
    table = build_routes(ings, [_svc("a"), _svc("b")], slices, [], "n1")

    def service(path: str, host: str = "app.test") -> str:
        b = table.match(host, path)
        return b.service if b is not None and not b.error else (b.error if b else "")
    assert service("/api") == "default/a"
    assert service("/api/x") == "default/a"           # ImplementationSpecific: a Prefix
    assert service("/apix") == "default/b"
    assert service("/api/v1") == "default/b"          # Exact before Prefix, same length
    assert service("/api/v1/x") == "default/a"
    assert "not supported" in service("/static/x")    # resource backend: answered 503
    assert service("/", "other.test") == "default/a"  # the oldest Ingress's defaultBackend
    # port by name, the slice's target port; this node's endpoint first
    assert table.match("app.test", "/api").endpoints == [("10.0.0.2", 9000), ("10.0.0.1", 9000)]
