"""cloudhub and edgehub talking over a real websocket, in one process (no TLS, no podman):
snapshot on first connect, live pod changes, resend after reconnect, status written up,
ingresses and the TLS secrets they serve.

A real Registry on SQLite serves as the server's state; a test authenticator stands in for the
node client certificate."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from k3py.agent.edgehub import EdgeHub
from k3py.agent.metamanager import MetaManager
from k3py.api.resources import builtin_registry
from k3py.tunnel import framing
from k3py.tunnel.message import (
    EDGE,
    GROUP_RESOURCE,
    GROUP_STREAM,
    OP_DELETE,
    OP_INSERT,
    OP_UPDATE,
    new_message,
)
from k3py.tunnel.protocol import FRAME_CLOSE, FRAME_ERROR, TUNNEL_PATH
from k3py.tunnel.reliability import Backoff

pytestmark = pytest.mark.unit

# the server package is being completed in parallel; skip (not fail) until it imports
pytest.importorskip("k3py.server.registry")
from k3py.server.apiserver.auth import Authenticator, User  # noqa: E402
from k3py.server.bootstrap import authorizer_chain  # noqa: E402
from k3py.server.controllers.base import InformerFactory  # noqa: E402
from k3py.server.controllers.ingress import ensure_ingress_class  # noqa: E402
from k3py.server.edge.cloudhub import CloudHub  # noqa: E402
from k3py.server.edge.downstream import status_only  # noqa: E402
from k3py.server.registry import Registry  # noqa: E402
from k3py.server.store.sqlite import SQLiteBackend  # noqa: E402
from tests.unit.conftest import serve_app  # noqa: E402


class NodeAuth(Authenticator):
    """The server's Authenticator, with every request from `node` (no certificates here)."""

    def __init__(self, node: str = "n1") -> None:
        super().__init__()
        self.user = User(f"system:node:{node}", ("system:nodes",))

    def authenticate(self, request):
        return self.user


def _pod(name: str, node: str = "n1", cm: str = "") -> dict:
    spec: dict = {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}
    if cm:
        spec["volumes"] = [{"name": "v", "configMap": {"name": cm}}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": spec}


async def _wait(pred, timeout: float = 10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.fixture
async def cluster(tmp_path):
    backend = SQLiteBackend(str(tmp_path / "state.db"))
    await backend.start()
    registry = Registry(backend, builtin_registry())
    ns = registry.resources.get("", "v1", "namespaces")
    for name in ("default", "kube-node-lease"):
        await registry.create(ns, None, {"metadata": {"name": name}})
    informers = InformerFactory(registry)
    hub = CloudHub(registry, NodeAuth(), informers=informers,
                   authorizer=authorizer_chain(informers))
    # open unless a test closes it: a closed gate answers the tunnel's handshake 503, so an
    # agent stays away (retrying) exactly as long as the test needs it away
    gate = asyncio.Event()
    gate.set()

    async def tunnel(request):
        if not gate.is_set():
            return web.Response(status=503, text="gate closed by the test")
        return await hub.handle_tunnel(request)
    app = web.Application()
    app.router.add_get(TUNNEL_PATH, tunnel)
    runner, port = await serve_app(app)
    session = aiohttp.ClientSession()
    agents = []

    async def agent():
        meta = MetaManager(str(tmp_path / f"meta{len(agents)}.db"))
        await meta.open()
        eh = EdgeHub(server=f"http://127.0.0.1:{port}", ssl_context=None, meta=meta,
                     session=session, backoff=Backoff(base=0.05, cap=0.2), node_name="n1")
        eh.start()
        agents.append(eh)
        return eh
    agent.url = f"http://127.0.0.1:{port}"  # for a test's own raw websocket
    try:
        yield registry, hub, agent, gate
    finally:
        for eh in agents:
            await eh.stop()
            await eh.meta.close()
        await session.close()
        await hub.stop()
        await informers.stop()
        await runner.cleanup()
        await backend.close()


async def test_snapshot_live_updates_and_status_up(cluster):
    registry, hub, agent, _ = cluster
    pods = registry.resources.get("", "v1", "pods")
    cms = registry.resources.get("", "v1", "configmaps")
    await registry.create(cms, "default", {"metadata": {"name": "cfg"}, "data": {"a": "1"}})
    await registry.create(pods, "default", _pod("before", cm="cfg"))
    await registry.create(pods, "default", _pod("elsewhere", node="n2"))
    eh = await agent()
    meta = eh.meta
    await _wait(lambda: [p["metadata"]["name"] for p in meta.pods()] == ["before"])
    assert meta.get("configmaps", "default", "cfg")["data"] == {"a": "1"}
    assert meta.synced

    await registry.create(pods, "default", _pod("after"))
    await _wait(lambda: len(meta.pods()) == 2)
    # the node is connected: deletion is graceful, the agent gets a deletionTimestamp and
    # finishes the deletion (grace 0) once its containers are stopped
    await registry.delete(pods, "default", "before")
    assert (await registry.get(pods, "default", "before"))["metadata"]["deletionTimestamp"]
    await _wait(lambda: meta.get("pods", "default", "before")["metadata"].get(
        "deletionTimestamp"))
    before_uid = meta.get("pods", "default", "before")["metadata"]["uid"]
    await eh.send(new_message(source=EDGE, group=GROUP_RESOURCE, operation=OP_DELETE,
                              resource="pods/default/before", content={"uid": before_uid}))
    await _wait(lambda: [p["metadata"]["name"] for p in meta.pods()] == ["after"])
    assert await registry.try_get(pods, "default", "before") is None
    # everything sent down was ACKed
    await _wait(lambda: len(hub.sessions["n1"].queue.outbox) == 0)

    uid = (await registry.get(pods, "default", "after"))["metadata"]["uid"]
    applied: list[str] = []  # what the agent stores from now on, by kind
    meta.listeners.append(applied.append)
    await eh.send(new_message(source=EDGE, group=GROUP_RESOURCE, operation=OP_UPDATE,
                              resource="pods/default/after/status", key="s",
                              content={"uid": uid, "status": {"phase": "Running"}}))
    async def phase():
        return (await registry.get(pods, "default", "after")).get("status", {}).get("phase")
    for _ in range(200):
        if await phase() == "Running":
            break
        await asyncio.sleep(0.02)
    assert await phase() == "Running"
    await _wait(lambda: len(eh.queue.outbox) == 0)
    assert meta.queued() == []
    # the node's own status is not echoed back down; a later change of the pod is (and,
    # messages going in order, it is the barrier that shows no echo came before it)
    def label(cur):
        cur["metadata"]["labels"] = {"l": "1"}
        return cur
    await registry.update_with(pods, "default", "after", label)
    await _wait(lambda: meta.get("pods", "default", "after")["metadata"].get("labels"))
    assert applied == ["pods"], applied  # (no IP: no peer view, tests/unit/server/...policy)


async def test_ingresses_and_the_tls_secrets_they_serve_reach_the_node(cluster):
    """Every Ingress and IngressClass go down; of the secrets, only the kubernetes.io/tls ones
    a served Ingress names, added and removed as the Ingress changes."""
    registry, _, agent, _ = cluster
    await ensure_ingress_class(registry, True)
    secrets = registry.resources.get("", "v1", "secrets")
    ingresses = registry.resources.get("networking.k8s.io", "v1", "ingresses")
    for name, type_ in (("a-tls", "kubernetes.io/tls"), ("b-tls", "kubernetes.io/tls"),
                        ("opaque", "Opaque")):
        await registry.create(secrets, "default", {"metadata": {"name": name}, "type": type_,
                                                   "data": {"tls.crt": "", "tls.key": ""}})
    backend = {"service": {"name": "web", "port": {"number": 80}}}

    def ingress(name: str, cls: str | None, *tls: str) -> dict:
        return {"metadata": {"name": name}, "spec": {
            "ingressClassName": cls, "defaultBackend": backend,
            "tls": [{"secretName": s} for s in tls]}}
    await registry.create(ingresses, "default", ingress("web", None, "a-tls", "opaque"))
    await registry.create(ingresses, "default", ingress("other", "nginx", "b-tls"))
    meta = (await agent()).meta

    def held(kind: str) -> set[str]:
        return {o["metadata"]["name"] for o in meta.objects(kind)}
    await _wait(lambda: held("ingresses") == {"web", "other"})
    assert held("ingressclasses") == {"k3py"}
    await _wait(lambda: held("secrets") == {"a-tls"})
    # the served Ingress now names b-tls instead: it comes, a-tls goes
    def swap(cur):
        cur["spec"]["tls"] = [{"secretName": "b-tls"}]
        return cur
    await registry.update_with(ingresses, "default", "web", swap)
    await _wait(lambda: held("secrets") == {"b-tls"})
    await registry.delete(ingresses, "default", "web")
    await _wait(lambda: held("secrets") == set() and held("ingresses") == {"other"})


def test_status_only_tells_a_status_write_from_a_change():
    pod = {"metadata": {"name": "p", "resourceVersion": "1"}, "spec": {"nodeName": "n1"},
           "status": {"phase": "Pending"}}
    written = {**pod, "metadata": {**pod["metadata"], "resourceVersion": "2"},
               "status": {"phase": "Running"}}
    assert status_only(pod, written)
    assert not status_only(pod, {**written, "status": {"phase": "Running", "podIP": "10.1"}})
    assert not status_only(pod, {**written, "metadata": {**written["metadata"],
                                                         "labels": {"a": "b"}}})
    assert not status_only(None, written)


async def test_changes_while_disconnected_arrive_after_reconnect(cluster):
    registry, hub, agent, gate = cluster
    pods = registry.resources.get("", "v1", "pods")
    eh = await agent()
    await _wait(lambda: eh.connected.is_set() and eh.meta.synced)
    session = hub.sessions["n1"]
    # the node's ACK of the sync may still be on its way: the outbox starts empty
    await _wait(lambda: len(session.queue.outbox) == 0)
    # cut the link from the server side and change things while the node is away; the gate
    # keeps it away until then (with a 50-200 ms backoff it would otherwise be back, and the
    # queued change sent and ACKed, before the checks below see it queued)
    gate.clear()
    await session.ws.close()
    await _wait(lambda: not eh.connected.is_set())
    await registry.create(pods, "default", _pod("while-away"))
    await _wait(lambda: len(session.queue.outbox) == 1)  # the pod (no IP yet: no peer view)
    # not connected: deleting a pod of this node leaves it Terminating until the node confirms
    await registry.create(pods, "default", _pod("gone"))
    await registry.delete(pods, "default", "gone")
    gone = await registry.get(pods, "default", "gone")
    assert gone["metadata"]["deletionTimestamp"]
    assert not eh.connected.is_set() and eh.connects == 1
    gate.set()
    await _wait(lambda: eh.connected.is_set(), timeout=10)
    await _wait(lambda: sorted((p["metadata"]["name"], bool(p["metadata"].get(
        "deletionTimestamp"))) for p in eh.meta.pods()) == [("gone", True), ("while-away", False)])
    await _wait(lambda: len(session.queue.outbox) == 0)
    await eh.send(new_message(source=EDGE, group=GROUP_RESOURCE, operation=OP_DELETE,
                              resource="pods/default/gone",
                              content={"uid": gone["metadata"]["uid"]}))
    await _wait(lambda: [p["metadata"]["name"] for p in eh.meta.pods()] == ["while-away"])
    assert await registry.try_get(pods, "default", "gone") is None
    assert eh.connects >= 2


async def test_a_replaced_link_ends_its_streams(cluster):
    """A node dialling again while its old socket is still open (a link cut the server did not
    notice yet) replaces it; the streams of the old link end with an error at once instead of
    waiting for frames that will never come."""
    _, hub, agent, _ = cluster
    async with aiohttp.ClientSession() as client:
        url = agent.url + TUNNEL_PATH
        old = await client.ws_connect(url, protocols=(framing.SUBPROTOCOL,))
        await _wait(lambda: "n1" in hub.sessions and hub.sessions["n1"].connected)
        session, stream_id, queue = await hub.open_stream("n1", "portforward", {"port": 1})
        new = await client.ws_connect(url, protocols=(framing.SUBPROTOCOL,))
        kind, content = await asyncio.wait_for(queue.get(), 5)
        assert kind == FRAME_ERROR and "disconnected" in str(content), (kind, content)
        await new.close()
        await old.close()


async def test_a_port_forward_upload_waiting_for_credit_ends_with_its_stream(cluster):
    """Client bytes for a port-forward stream the node already closed are dropped: a send
    waiting for credit returns (False) instead of blocking every other port's uploads."""
    from k3py.server.edge.portforward import _Flow
    _, hub, agent, _ = cluster
    async with aiohttp.ClientSession() as client:
        node = await client.ws_connect(agent.url + TUNNEL_PATH, protocols=(framing.SUBPROTOCOL,))
        await _wait(lambda: "n1" in hub.sessions and hub.sessions["n1"].connected)
        flow = _Flow(*await hub.open_stream("n1", "portforward", {"port": 1}), True)
        upload = asyncio.ensure_future(flow.send(b"x" * (1 << 20)))  # more than one window
        await asyncio.sleep(0.2)
        assert not upload.done()  # waiting for the node's credit
        await node.send_str(framing.encode(new_message(
            source=EDGE, group=GROUP_STREAM, operation=FRAME_CLOSE, parent_id=flow.stream_id)))
        assert await asyncio.wait_for(upload, 5) is False
        assert await flow.send(b"more") is False
        flow.close()
        await node.close()


async def test_events_over_the_cap_are_dropped_and_reported_at_reconnect(cluster):
    registry, hub, agent, gate = cluster
    gate.clear()  # offline from the start
    eh = await agent()
    eh.meta.max_queued_events = 3
    for i in range(5):
        key = f"events/default/e{i}"
        await eh.send(new_message(source=EDGE, group=GROUP_RESOURCE, operation=OP_INSERT,
                                  resource=key, key=key, content={
                                      "metadata": {"name": f"e{i}"},
                                      "involvedObject": {"kind": "Pod", "name": "p"},
                                      "reason": "Started", "message": f"m{i}", "count": 1}))
    assert eh.meta.events_dropped == 2 and len(eh.queue.outbox) == 3
    gate.set()
    events = registry.resources.get("", "v1", "events")

    async def posted():
        return {e["metadata"]["name"]: e for e in
                (await registry.list(events, "default"))["items"]}
    for _ in range(500):
        got = await posted()
        if len(got) == 4:
            break
        await asyncio.sleep(0.02)
    dropped = [e for e in got.values() if e["reason"] == "EventsDropped"]
    assert sorted(n for n in got if n.startswith("e")) == ["e2", "e3", "e4"]
    assert len(dropped) == 1 and dropped[0]["involvedObject"]["name"] == "n1"
    assert dropped[0]["message"].startswith("2 Events dropped since the agent started")
    await _wait(lambda: eh.meta.queued() == [])


async def test_node_registration_and_lease(cluster):
    registry, hub, agent, _ = cluster
    eh = await agent()
    node = {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    await eh.send(new_message(source=EDGE, group=GROUP_RESOURCE, operation="insert",
                              resource="nodes//n1", content=node, key="node"))
    await eh.send(new_message(source=EDGE, group=GROUP_RESOURCE, operation=OP_UPDATE,
                              resource="leases/kube-node-lease/n1", key="lease",
                              content={"leaseDurationSeconds": 40,
                                       "renewTime": "2024-01-01T00:00:00.000000Z"}))
    nodes = registry.resources.get("", "v1", "nodes")
    leases = registry.resources.find("coordination.k8s.io", "leases")
    await _wait(lambda: len(eh.queue.outbox) == 0)
    got = await registry.get(nodes, None, "n1")
    assert got["metadata"]["labels"]["kubernetes.io/hostname"] == "n1"
    assert got["status"]["conditions"][0]["status"] == "True"
    lease = await registry.get(leases, "kube-node-lease", "n1")
    assert lease["spec"]["holderIdentity"] == "n1"
    # a node may not write another node
    await eh.send(new_message(source=EDGE, group=GROUP_RESOURCE, operation="insert",
                              resource="nodes//n2", content={"metadata": {"name": "n2"}}))
    await _wait(lambda: len(eh.queue.outbox) == 0)
    assert await registry.try_get(nodes, None, "n2") is None
