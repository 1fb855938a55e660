"""The node's ingress manager on a real metamanager and real sockets: the proxy listens only
while an IngressClass of k3py.io/ingress is held, serves from the cache after a reopen (as
after an agent restart, offline), follows a change of the cached objects, and a taken port is
a warning, not a crash (the next change tries again)."""

from __future__ import annotations

import logging
import socket

import aiohttp
import pytest

from k3py.agent.ingress.manager import IngressManager
from k3py.agent.metamanager import MetaManager
from k3py.api.ingress import ingress_class
from k3py.tunnel.message import GROUP_RESOURCE, OP_DELETE, OP_INSERT, new_message
from tests.harness import free_port
from tests.unit.conftest import eventually

pytestmark = pytest.mark.unit


def _put(kind: str, obj: dict, op: str = OP_INSERT):
    md = obj["metadata"]
    return new_message(source="cloudhub", group=GROUP_RESOURCE, operation=op,
                       resource=f"{kind}/{md.get('namespace', '')}/{md['name']}", content=obj)


INGRESS = {"metadata": {"name": "web", "namespace": "default"},
           "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}}
SERVICE = {"metadata": {"name": "web", "namespace": "default"},
           "spec": {"ports": [{"name": "http", "port": 80}]}}


async def _status(port: int) -> int | None:
    try:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/") as r:
            return r.status
    except aiohttp.ClientConnectionError:
        return None


async def test_proxy_follows_the_class_and_the_cache(tmp_path):
    path = str(tmp_path / "meta.db")
    meta = MetaManager(path)
    await meta.open()
    http, https = free_port(), free_port()
    manager = IngressManager(meta, node_name="n1", http_port=http, https_port=https,
                             host="127.0.0.1")
    manager.start()
    try:
        await meta.apply(_put("ingresses", INGRESS))
        await manager.sync()  # what the rebuild after that change does: no class, no proxy
        assert manager.proxy is None and await _status(http) is None
        await meta.apply(_put("ingressclasses", ingress_class()))
        # the Service is missing: 503 with the reason
        await eventually(lambda: _is(http, 503), what="503 for a missing service")
        await meta.apply(_put("services", SERVICE))
        await eventually(lambda: manager.proxy is not None
                         and manager.proxy.table.default.service == "default/web"
                         and not manager.proxy.table.default.error, what="the service routed")
        await meta.apply(_put("ingressclasses", ingress_class(), OP_DELETE))
        await eventually(lambda: manager.proxy is None, what="the proxy stopped")
        assert await _status(http) is None
        await meta.apply(_put("ingressclasses", ingress_class()))
    finally:
        await manager.stop()
        await meta.close()

    # an agent restart while the server is away: served from meta.db alone
    again = MetaManager(path)
    await again.open()
    manager = IngressManager(again, node_name="n1", http_port=http, https_port=https,
                             host="127.0.0.1")
    manager.start()
    try:
        await eventually(lambda: _is(http, 503), what="served from the cache")
    finally:
        await manager.stop()
        await again.close()


async def _is(port: int, status: int) -> bool:
    return await _status(port) == status


async def test_a_taken_port_is_a_warning_then_retried(tmp_path, caplog):
    meta = MetaManager(str(tmp_path / "meta.db"))
    await meta.open()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    manager = IngressManager(meta, node_name="n1", http_port=port, https_port=free_port(),
                             host="127.0.0.1")
    manager.start()
    try:
        with caplog.at_level(logging.WARNING, "k3py.ingress"):
            await meta.apply(_put("ingressclasses", ingress_class()))
            await eventually(lambda: "cannot listen on ports" in caplog.text,
                             what="the warning")
        assert manager.proxy is None
        taken.close()
        await meta.apply(_put("ingresses", INGRESS))  # the next change binds
        await eventually(lambda: manager.proxy is not None, what="the proxy after the port freed")
    finally:
        taken.close()
        await manager.stop()
        await meta.close()
