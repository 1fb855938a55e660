"""The server's half of the built-in ingress against the real registry: the default `k3py`
IngressClass (and its removal under --disable ingress), status.loadBalancer.ingress from the
Ready nodes' InternalIPs (a deleted node's out, and all of them once the Ingress names another
class), and a Warning Event per problem of a served Ingress (missing service
or port, missing or unusable TLS secret, a relative path); Ingresses of another class are left
alone."""

from __future__ import annotations

import base64

import pytest

from k3py import pki
from k3py.server.controllers.ingress import IngressController, ensure_ingress_class
from tests.unit.controllers.test_core_support import cluster, eventually
from tests.unit.controllers.test_storage_binding import wait_event

pytestmark = pytest.mark.unit

NET = "networking.k8s.io"


def node(name: str, ip: str, ready: bool = True) -> dict:
    return {"metadata": {"name": name}, "status": {
        "addresses": [{"type": "InternalIP", "address": ip},
                      {"type": "Hostname", "address": name}],
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def backend(svc: str, number: int = 80) -> dict:
    return {"service": {"name": svc, "port": {"number": number}}}


def ingress(name: str, cls: str | None = None, **spec) -> dict:
    return {"metadata": {"name": name}, "spec": {"ingressClassName": cls, **spec}}


async def test_default_class_and_disable(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        await ensure_ingress_class(c.registry, True)
        cls = await c.get("ingressclasses", None, "k3py", group=NET)
        assert cls["spec"]["controller"] == "k3py.io/ingress"
        assert cls["metadata"]["annotations"][
            "ingressclass.kubernetes.io/is-default-class"] == "true"
        await ensure_ingress_class(c.registry, True)  # idempotent
        await ensure_ingress_class(c.registry, False)
        assert await c.get("ingressclasses", None, "k3py", group=NET) is None


async def test_status_lists_ready_nodes_and_problems_become_events(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        await ensure_ingress_class(c.registry, True)
        await c.create("nodes", node("n1", "192.0.2.1"))
        await c.create("nodes", node("n2", "192.0.2.2", ready=False))
        await c.create("services", {"metadata": {"name": "web"}, "spec": {
            "ports": [{"name": "http", "port": 80}]}})
        cert, key = pki.default_serving_cert("ok.example.com")
        await c.create("secrets", {"metadata": {"name": "good"}, "type": "kubernetes.io/tls",
                                   "data": {"tls.crt": base64.b64encode(cert).decode(),
                                            "tls.key": base64.b64encode(key).decode()}})
        await c.create("secrets", {"metadata": {"name": "opaque"}, "data": {"x": "eA=="}})
        paths = [{"path": "/", "pathType": "Prefix", "backend": backend("web")},
                 {"path": "/x", "pathType": "Prefix", "backend": backend("web", 81)},
                 {"path": "rel", "pathType": "ImplementationSpecific",
                  "backend": backend("gone")}]
        await c.create("ingresses", ingress("bad", rules=[{"host": "a.example.com",
                                                          "http": {"paths": paths}}],
                                            tls=[{"secretName": "good"},
                                                 {"secretName": "opaque"},
                                                 {"secretName": "missing"}]), group=NET)
        await c.create("ingresses", ingress("theirs", "nginx",
                                            defaultBackend=backend("gone")), group=NET)
        await c.start(IngressController)

        async def addresses(name: str):
            ing = await c.get("ingresses", "default", name, group=NET)
            return ((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress")
        assert await eventually(lambda: addresses("bad")) == [{"ip": "192.0.2.1"}]
        for reason in ("ServiceNotFound", "ServicePortNotFound", "InvalidPath",
                       "SecretNotFound", "InvalidSecret"):
            await wait_event(c, "bad", reason)
        messages = {e[3] for e in await c.events("default") if e[0] == "bad"}
        assert "service default/gone not found" in messages, messages
        assert "service default/web has no port 81" in messages, messages
        assert not any("default/good" in m for m in messages), messages

        # n2 becomes Ready: both addresses; the other class's Ingress stays untouched
        def ready(cur):
            cur["status"]["conditions"][0]["status"] = "True"
            return cur
        await c.registry.update_with(c.res("nodes", ""), None, "n2", ready,
                                     subresource="status")
        await eventually(
            lambda: _equal(addresses("bad"), [{"ip": "192.0.2.1"}, {"ip": "192.0.2.2"}]),
            what="both nodes' addresses")
        assert await addresses("theirs") is None
        assert not [e for e in await c.events("default") if e[0] == "theirs"]

        # n2 deleted: out of the list; then another class: the nodes' addresses go
        await c.delete("nodes", None, "n2")
        await eventually(lambda: _equal(addresses("bad"), [{"ip": "192.0.2.1"}]),
                         what="the deleted node's address out")

        def nginx(cur):
            cur["spec"]["ingressClassName"] = "nginx"
            return cur
        await c.registry.update_with(c.res("ingresses", NET), "default", "bad", nginx)
        await eventually(lambda: _equal(addresses("bad"), None),
                         what="status.loadBalancer.ingress cleared once not served")


async def _equal(value, want) -> bool:
    return await value == want
