"""CloudHub, the server end of the node tunnel as the rest of the server sees it: the tunnel
route, whether a node is connected, streams to a node, connections between nodes relayed
through it (noderelay.py); start and stop.

Built by bootstrap.install_routes; wires sessions.py (the websocket), downstream.py (what goes
down), upstream.py (what comes up) and nodestreams.py (streams) around one dict of sessions;
a node that renews its Lease while the server's Node cache shows its part of the Node status
changed by someone else since this server stored it last is asked for its status;
`report_listeners` hear the nodes' live reports and their tunnels' figures (peerreports.py
shares them with the other servers on a shared datastore, which fill `peer_tunnels`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from k3py.server.apiserver.auth import Authenticator, AuthorizerChain
from k3py.server.controllers.base import InformerFactory
from k3py.server.controllers.workloads_common import get_condition
from k3py.server.edge import nodestreams
from k3py.server.edge.downstream import DownstreamSync, referenced_objects
from k3py.server.edge.mqttstats import MqttFigures
from k3py.server.edge.nodepassword import NodePasswords
from k3py.server.edge.noderelay import ConnectRelay
from k3py.server.edge.nodestatus import resource_version
from k3py.server.edge.peertunnels import TUNNEL_KIND, PeerTunnels
from k3py.server.edge.sessions import NodeSession, TunnelHandler, keepalive_loop, resend_loop
from k3py.server.edge.upstream import UpstreamWriter
from k3py.server.registry import Registry
from k3py.server.serviceaccounts import TokenIssuer
from k3py.tunnel.message import CLOUD, Message, node_status_request, split_resource_key
from k3py.tunnel.mqtt import MQTT_KIND
from k3py.tunnel.protocol import FEATURE_NODE_STATUS

if TYPE_CHECKING:
    from k3py.server.metrics.store import UsageStore

__all__ = ["CloudHub", "NodeSession", "referenced_objects"]

log = logging.getLogger("k3py.cloudhub")


class CloudHub:
    """Per-node sessions, fed by the server's informers; serves the tunnel route.

    `informers` is the server's InformerFactory: the hub asks it for the informers it needs
    when it starts (which starts them); whoever made the factory stops it. `authorizer`: the
    API's chain, which judges what a node writes up; `server_node`: the server's own node;
    `passwords`: the node passwords the joins claim (nodeauth.py)."""

    def __init__(self, registry: Registry, authenticator: Authenticator,
                 issuer: TokenIssuer | None = None, *, informers: InformerFactory,
                 authorizer: AuthorizerChain, server_node: str = "",
                 usage: UsageStore | None = None, network_policy: bool = True,
                 passwords: NodePasswords | None = None) -> None:
        self.registry = registry
        self.sessions: dict[str, NodeSession] = {}
        # told a node's name when its tunnel's figures change (the dashboard's Nodes view)
        self.tunnel_listeners: set[Callable[[str], None]] = set()
        # the joins' (nodeauth.py): one cache of verified passwords, one verifier key
        self.passwords = passwords or NodePasswords(registry)
        self.mqtt = MqttFigures()  # each connected node's MQTT summary (the dashboard's)
        # the tunnels the other servers hold, as they shared them (the dashboard's)
        self.peer_tunnels = PeerTunnels()
        # told each live report a node sends (kind, node, report; None: the node's MQTT
        # summary went with its link) and its tunnel's figures on each change (TUNNEL_KIND):
        # the other servers' share (peerreports.py)
        self.report_listeners: set[Callable[[str, str, Any], None]] = set()
        self.downstream = DownstreamSync(informers, self.sessions, issuer, self.node_connected,
                                         network_policy=network_policy)
        self.upstream = UpstreamWriter(registry, self.passwords, authorizer, server_node,
                                       usage, self.mqtt, self.report_listeners)
        self.relay = ConnectRelay(self.sessions, self._nodes)
        self.tunnel = TunnelHandler(self.sessions, authenticator, self.passwords,
                                    ready=self._ready, snapshot=self.downstream.snapshot,
                                    write_up=self._write_up,
                                    stream_request=self.relay.request,
                                    changed=self._tunnel_changed)
        self._resend: asyncio.Task | None = None
        self._keepalive: asyncio.Task | None = None
        self._started = False

    def _tunnel_changed(self, node: str) -> None:
        # sent again by the node after it reconnects
        if not self.node_connected(node):
            self.upstream.agent_status.pop(node, None)
            if self.mqtt.forget(node):
                for tell in list(self.report_listeners):
                    tell(MQTT_KIND, node, None)
        for listener in list(self.tunnel_listeners):
            listener(node)
        session = self.sessions.get(node)
        if session is not None:
            for tell in list(self.report_listeners):
                tell(TUNNEL_KIND, node, session.figures())

    def node_connected(self, node: str) -> bool:
        session = self.sessions.get(node) if node else None
        return session is not None and session.connected

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Idempotent: on the server's startup, or by the first node that dials first."""
        if self._started:
            return
        self._started = True
        self.downstream.start()
        self.downstream.cluster_wide["nodes"].add_handler(self._node_event)
        self._resend = asyncio.create_task(resend_loop(self.sessions))
        self._keepalive = asyncio.create_task(keepalive_loop(self.sessions))

    def _nodes(self) -> list[dict]:
        nodes = self.downstream.cluster_wide.get("nodes") if self._started else None
        return nodes.list() if nodes is not None else []

    async def stop(self) -> None:
        await self.relay.stop()
        if self._started:
            self.downstream.cluster_wide["nodes"].remove_handler(self._node_event)
            await self.downstream.stop()
        for task in (self._resend, self._keepalive):
            if task is not None:
                task.cancel()
        for s in self.sessions.values():
            if s.ws is not None:
                with contextlib.suppress(Exception):
                    await s.ws.close()

    async def _ready(self) -> None:
        """The hub is started and the informers the Node authorizer reads for a node's
        writes (pods; devices once served) and those its snapshot is made from are synced: a
        queued status write that arrives first is not refused for a cache that is still
        filling, and a first snapshot is whole."""
        self.start()
        await self.downstream.synced()
        feed = self.downstream.device_feed
        if feed is not None and feed.devices is not None:
            await feed.devices.synced.wait()

    # ---------------------------------------------------------------- the tunnel

    async def handle_tunnel(self, request: web.Request) -> web.StreamResponse:
        """GET TUNNEL_PATH (k3py.tunnel.protocol)."""
        return await self.tunnel.handle(request)

    async def _write_up(self, node: str, msg: Message) -> None:
        """One up message into the store. A Lease renewal is the agent's 10 s tick: when the
        server's Node cache shows the agent's part of its status changed since this server
        stored it (an edit, the lifecycle controller's Ready=Unknown), the node is asked for
        its status, as upstream's kubelet, which compares its status with the API's Node
        every 10 s, would patch it back; the agent itself posts an unchanged status every 5
        minutes only. Only the server holding the node's tunnel writes its status and so
        remembers it (the lifecycle controller may run on another server: its writes come
        through the shared store to this server's cache)."""
        await self.upstream.write(node, msg)
        if not self.node_connected(node):
            self.upstream.agent_status.pop(node, None)  # memory for connected nodes only
        elif split_resource_key(msg.route.resource)[0] == "leases" and self._status_off(node):
            session = self.sessions.get(node)
            if session is not None and session.speaks(FEATURE_NODE_STATUS):
                log.info("node %s: its status was changed by another writer; asked for it",
                         node)
                session.send_live(node_status_request(source=CLOUD))

    def _status_off(self, node: str) -> bool:
        """Whether the cached Node shows the agent's status part changed by another writer;
        with nothing stored by this server for the node (its Node was deleted since, or its
        last post failed), whether it is marked Ready=Unknown. Cheap at every Lease: a
        cached Node version already judged is not compared again (AgentStatus.judged)."""
        nodes = self.downstream.cluster_wide.get("nodes")
        obj = nodes.get(None, node) if nodes is not None else None
        if obj is None:
            return False
        stored = self.upstream.agent_status.get(node)
        if stored is not None:
            return stored.overridden_in(obj)
        return (get_condition(obj, "Ready") or {}).get("status") == "Unknown"

    def _node_event(self, etype: str, old: dict | None, new: dict | None) -> None:
        """A deleted Node takes what was stored of its status along (not what a Node of
        the same name, made since, got: a later version)."""
        gone = old or new
        if etype != "DELETED" or gone is None:
            return
        name = gone["metadata"].get("name") or ""
        stored = self.upstream.agent_status.get(name)
        if stored is not None and stored.version <= max(resource_version(old),
                                                        resource_version(new)):
            del self.upstream.agent_status[name]

    def snapshot(self, node: str) -> Message:
        return self.downstream.snapshot(node)

    # ---------------------------------------------------------------- streams

    async def open_stream(self, node: str, operation: str, params: dict
                          ) -> tuple[NodeSession, str, asyncio.Queue]:
        """Ask `node` to serve a stream; 503 when it is not connected."""
        session = self.sessions.get(node)
        stream_id, queue = nodestreams.open_stream(session, node, operation, params)
        assert session is not None
        return session, stream_id, queue

    async def close_stream(self, session: NodeSession, stream_id: str) -> None:
        nodestreams.close_stream(session, stream_id)
