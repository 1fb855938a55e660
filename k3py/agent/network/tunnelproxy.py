"""Service and pod traffic to nodes this node cannot route to, through the tunnel (KubeEdge's
EdgeMesh role): this node → server → the node that holds the pod → the pod. TCP only.

This node's side (`TunnelProxy`): one TCP listener on a node-local address; the service rules
(proxy.py) DNAT to it what goes to a pod CIDR of such a node, and what a Service sends to its
tunnelled endpoints. The listener reads the connection's destination before the DNAT
(SO_ORIGINAL_DST), picks the pod (that address, or one of the Service's tunnelled endpoints
at random) and relays the connection over a connect stream (protocol.ConnectRequest) that
the server passes on (server/edge/noderelay.py).

The other side (`serve_connect`, an EdgeHub stream handler): connect to the pod IP, which
must be in this node's pod CIDR, and relay."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
from collections.abc import Callable, Sequence

from k3py.agent.edgehub import EdgeHub
from k3py.agent.network.proxy import ServicePort
from k3py.agent.streamrelay import relay_stream
from k3py.tunnel.message import EDGE, Message, stream_frame
from k3py.tunnel.protocol import FRAME_ERROR, STREAM_CONNECT, ConnectRequest

__all__ = ["TunnelProxy", "serve_connect", "tunnel_target", "original_destination"]

log = logging.getLogger("k3py.network")

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h: the destination before DNAT
CONNECT_TIMEOUT = 10.0


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """(IP, port) the client connected to before the service rules' DNAT."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)  # a struct sockaddr_in
    return socket.inet_ntoa(raw[4:8]), int.from_bytes(raw[2:4], "big")


def tunnel_target(ip: str, port: int, ports: Sequence[ServicePort],
                  cidrs: Sequence[ipaddress.IPv4Network],
                  choose: Callable[[list], object] = random.choice) -> tuple[str, int] | None:
    """Where a connection to `ip`:`port` goes through the tunnel: the address itself in a
    tunnelled pod CIDR, else a tunnelled endpoint of the TCP Service port it names (by
    ClusterIP or LoadBalancer address first, then by node port); None when none."""
    if any(ipaddress.IPv4Address(ip) in c for c in cidrs):
        return ip, port
    tcp = [sp for sp in ports if sp.protocol == "tcp"]
    by_vip = [sp for sp in tcp if sp.port == port and (
        (ip in sp.cluster_ips and not sp.internal_local) or
        (ip in sp.lb_ips and not sp.external_local))]
    by_node_port = [sp for sp in tcp if sp.node_port == port and not sp.external_local]
    for sp in (*by_vip, *by_node_port):
        eps = [e for e in sp.endpoints if e.via_tunnel]
        if eps:
            ep = choose(eps)
            return ep.ip, ep.port  # type: ignore[attr-defined]
    return None


class TunnelProxy:
    """The listener the service rules send tunnelled traffic to; `update` gives it the
    routed Service ports and the pod CIDRs reached through the tunnel."""

    def __init__(self, hub: EdgeHub) -> None:
        self.hub = hub
        self.ports: list[ServicePort] = []
        self.cidrs: list[ipaddress.IPv4Network] = []
        self.address = ""  # "IP:port" once listening
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task] = set()

    async def listen(self, ip: str) -> str:
        """Listen on `ip` (a port the kernel picks), again if `ip` changed; "IP:port"."""
        if self._server is not None and self.address.rpartition(":")[0] == ip:
            return self.address
        await self.stop()
        self._server = await asyncio.start_server(self._serve, ip, 0)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"{ip}:{port}"
        log.info("tunnel proxy for unroutable nodes listening on %s", self.address)
        return self.address

    def update(self, ports: list[ServicePort], cidrs: list[str]) -> None:
        self.ports = ports
        self.cidrs = [ipaddress.IPv4Network(c) for c in cidrs]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            self.address = ""
        for t in list(self._conns):
            t.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            await self._relay(reader, writer)
        finally:
            self._conns.discard(task)
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            dst = original_destination(writer.get_extra_info("socket"))
        except OSError:
            return  # not DNATed here (no conntrack entry): nothing to relay to
        target = tunnel_target(*dst, self.ports, self.cidrs)
        if target is None:
            log.debug("tunnel proxy: no tunnelled pod for %s:%s", *dst)
            return
        opened = self.hub.open_stream(STREAM_CONNECT, ConnectRequest(*target).to_content())
        if opened is None:
            log.debug("tunnel proxy: no tunnel to the server for %s:%s", *target)
            return
        sid, queue = opened
        try:
            await relay_stream(self.hub, sid, queue, reader, writer, opened=True,
                               flow_control=True)
        finally:
            self.hub.close_stream(sid)


async def serve_connect(hub: EdgeHub, msg: Message, pod_cidr: Callable[[], str],
                        isolated: Callable[[str], bool] = lambda ip: False) -> None:
    """The connect stream handler: a connection to a pod of this node (`pod_cidr()`: the
    node's pod CIDR now), relayed until either side ends; "error" when it cannot be made.
    `isolated(ip)`: a NetworkPolicy isolates that pod's ingress, refused (403)."""
    def fail(code: int, message: str) -> None:
        hub.send_live(stream_frame(msg.id, FRAME_ERROR, {"code": code, "message": message},
                                   source=EDGE))
    try:
        req = ConnectRequest.from_content(msg.content)
    except ValueError as e:
        fail(400, str(e))
        return
    cidr = pod_cidr()
    if not cidr or ipaddress.IPv4Address(req.ip) not in ipaddress.IPv4Network(cidr):
        fail(403, f"{req.ip} is not in this node's pod CIDR {cidr or '(none)'}")
        return
    if isolated(req.ip):
        fail(403, f"a NetworkPolicy isolates the pod at {req.ip}: its connections are not "
                  "relayed through the tunnel, where its rules cannot be checked")
        return
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(req.ip, req.port), CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as e:
        fail(503, f"connecting to {req.ip}:{req.port}: {e.strerror or e}"
             if isinstance(e, OSError) else f"connecting to {req.ip}:{req.port} timed out")
        return
    with contextlib.suppress(ConnectionError):
        await relay_stream(hub, msg.id, hub.stream_input(msg.id), reader, writer,
                           flow_control=True)
