"""Hollow nodes for bench/scale.py: many simulated nodes in one process, as kwok's. Each is the
real agent's join, tunnel (EdgeHub), local store (MetaManager, without an fsync per commit: a
thousand nodes on one disk would measure its fsyncs) and Node/Lease heartbeats
(NodeReporter), so the server sees what real agents send; only the pods are hollow: a pod that
arrives down the tunnel is reported Running at once, with no container.

Bench and test helper only, never part of the product. `HollowFleet` starts and stops N of
them on one HTTP session."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import ipaddress
import logging
from collections import Counter
from pathlib import Path

import aiohttp

from k3py.agent.edgehub import EdgeHub
from k3py.agent.join import join, node_password, ssl_context
from k3py.agent.metamanager import MetaManager
from k3py.agent.node import NodeReporter, node_object
from k3py.tunnel.message import EDGE, GROUP_RESOURCE, OP_UPDATE, new_message, resource_key
from k3py.tunnel.protocol import FEATURE_NODE_STATUS, NODE_PASSWORD_HEADER

__all__ = ["HollowNode", "HollowFleet"]

log = logging.getLogger("bench.hollow")

_NODE_NET = ipaddress.ip_network("10.200.0.0/16")
_POD_NET = ipaddress.ip_network("10.42.0.0/16")


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def running_status(pod: dict, host_ip: str, pod_ip: str) -> dict:
    """What a kubelet reports for a pod whose containers all started: Running and Ready."""
    now = _now()
    containers = (pod.get("spec") or {}).get("containers") or []
    conditions = [{"type": t, "status": "True", "lastTransitionTime": now}
                  for t in ("PodReadyToStartContainers", "Initialized", "Ready",
                            "ContainersReady", "PodScheduled")]
    return {"phase": "Running", "conditions": conditions, "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}], "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
            "startTime": now, "qosClass": "BestEffort",
            "containerStatuses": [
                {"name": c["name"], "image": c.get("image", ""), "imageID": "",
                 "containerID": f"hollow://{pod['metadata'].get('uid', '')}/{c['name']}",
                 "ready": True, "started": True, "restartCount": 0,
                 "state": {"running": {"startedAt": now}}} for c in containers]}


class HollowNode:
    """One simulated node: joins `server` with `token`, keeps its tunnel, reports its pods."""

    def __init__(self, index: int, name: str, server: str, token: str, data_dir: Path,
                 session: aiohttp.ClientSession) -> None:
        self.index = index
        self.name = name
        self.server = server
        self.token = token
        self.agent_dir = str(data_dir / name)
        self.session = session
        self.host_ip = str(_NODE_NET.network_address + index + 1)
        self._reported: set[str] = set()
        self._pod_ips = 0
        self._pending: asyncio.Task | None = None
        self._registering: asyncio.Future | None = None
        self.meta: MetaManager | None = None
        self.hub: EdgeHub | None = None
        self.reporter: NodeReporter | None = None

    async def start(self) -> None:
        creds = await join(self.session, self.server, self.token, self.name, self.agent_dir)
        self.meta = MetaManager(str(Path(self.agent_dir) / "meta.db"), durable=False)
        await self.meta.open()
        node = node_object(name=self.name, node_ip=self.host_ip, labels={"k3py.io/hollow": "true"},
                           taints=[], runtime_version="hollow", data_dir=self.agent_dir)
        self.hub = EdgeHub(server=self.server, ssl_context=ssl_context(creds), meta=self.meta,
                           session=self.session,
                           headers={NODE_PASSWORD_HEADER: node_password(self.agent_dir)},
                           node_name=self.name)
        hub = self.hub
        self.reporter = NodeReporter(node, hub.send,
                                     server_asks=lambda: hub.speaks(FEATURE_NODE_STATUS))
        self.hub.on_connect.append(self._register)
        self.hub.on_status_request = self.reporter.post_status
        self.meta.listeners.append(self._changed)
        self.hub.start()
        self.reporter.start()

    def _register(self) -> None:
        """At each connect, as the agent does; the task is kept so that stop() ends it."""
        assert self.reporter is not None
        self._registering = asyncio.ensure_future(self.reporter.register())

    def _changed(self, what: str) -> None:
        if what in ("pods", "sync") and (self._pending is None or self._pending.done()):
            self._pending = asyncio.ensure_future(self._report())

    async def _report(self) -> None:
        assert self.meta is not None and self.hub is not None
        for pod in self.meta.pods():
            md = pod.get("metadata") or {}
            uid = md.get("uid", "")
            if uid in self._reported or md.get("deletionTimestamp"):
                continue
            self._reported.add(uid)
            self._pod_ips += 1
            pod_ip = str(_POD_NET.network_address + (self.index % 256) * 256 +
                         self._pod_ips % 254 + 1)
            key = resource_key("pods", md["namespace"], md["name"], "status")
            await self.hub.send(new_message(
                source=EDGE, group=GROUP_RESOURCE, operation=OP_UPDATE, resource=key, key=key,
                content={"uid": uid, "status": running_status(pod, self.host_ip, pod_ip)}))

    @property
    def connected(self) -> bool:
        return self.hub is not None and self.hub.connected.is_set()

    async def stop(self) -> None:
        for task in (self._pending, self._registering):
            if task is not None:
                task.cancel()
        for part in (self.reporter, self.hub):
            if part is not None:
                with contextlib.suppress(Exception):
                    await part.stop()
        if self.meta is not None:
            await self.meta.close()


class HollowFleet:
    """N hollow nodes named `<prefix>-<i>`, started `concurrency` at a time."""

    def __init__(self, count: int, server: str, token: str, data_dir: Path,
                 prefix: str = "hollow") -> None:
        self.count = count
        self.server = server
        self.token = token
        self.data_dir = data_dir
        self.prefix = prefix
        self.nodes: list[HollowNode] = []
        self.session: aiohttp.ClientSession | None = None

    async def start(self, concurrency: int = 20) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, connect=30))
        self.nodes = [HollowNode(i, f"{self.prefix}-{i:04d}", self.server, self.token,
                                 self.data_dir, self.session) for i in range(self.count)]
        gate = asyncio.Semaphore(concurrency)

        async def one(node: HollowNode) -> None:
            async with gate:
                await node.start()
        await asyncio.gather(*(one(n) for n in self.nodes))

    def connected(self) -> int:
        return sum(n.connected for n in self.nodes)

    def dial_errors(self) -> Counter[str]:
        """The tunnel dials that failed so far, by error, over all the nodes."""
        return sum((n.hub.dial_errors for n in self.nodes if n.hub is not None), Counter())

    async def stop(self) -> None:
        await asyncio.gather(*(n.stop() for n in self.nodes), return_exceptions=True)
        if self.session is not None:
            await self.session.close()
