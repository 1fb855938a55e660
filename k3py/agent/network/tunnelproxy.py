"""Service and pod traffic to nodes this node cannot route to, through the tunnel (KubeEdge's
EdgeMesh role): this node → server → the node that holds the pod → the pod. TCP to pods and
Services; UDP to Services (the kernel keeps no pre-DNAT destination a UDP socket can read, so
each such Service port gets a socket of its own, `UdpPort`, and each client a flow).

This node's side (`TunnelProxy`): one TCP listener on a node-local address; the service rules
(proxy.py) DNAT to it what goes to a pod CIDR of such a node, and what a Service sends to its
tunnelled endpoints. The listener reads the connection's destination before the DNAT
(SO_ORIGINAL_DST), picks the pod (that address, or one of the Service's tunnelled endpoints
at random, or the one the client's last connection went to under sessionAffinity ClientIP)
and relays the connection over a connect stream (protocol.ConnectRequest) that
the server passes on (server/edge/noderelay.py).

The other side (`serve_connect`, an EdgeHub stream handler): connect to the pod IP, which
must be in this node's pod CIDR, and relay.

Flow control and UDP flows depend on the server (EdgeHub.speaks): a connection asks for flow
control only from a server that speaks it (the server makes it lenient when the other node's
agent is older; streamrelay.py), and UDP goes only through a server that relays it (a UDP
connect from a server that does not is refused)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
import time
from collections.abc import Callable, Sequence

from k3py.agent.edgehub import EdgeHub
from k3py.agent.network.proxy import Endpoint, ServicePort
from k3py.agent.streamrelay import DatagramQueue, relay_datagrams, relay_stream
from k3py.tunnel.message import EDGE, Message, stream_frame
from k3py.tunnel.protocol import (
    FEATURE_FLOW_CONTROL,
    FEATURE_UDP_CONNECT,
    FRAME_CLOSE,
    FRAME_ERROR,
    STREAM_CONNECT,
    ConnectRequest,
)

__all__ = ["TunnelProxy", "UdpPort", "ClientAffinity", "serve_connect", "connect_through",
           "tunnel_target", "original_destination"]

log = logging.getLogger("k3py.network")

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h: the destination before DNAT
CONNECT_TIMEOUT = 10.0
UDP_IDLE = 30.0   # a UDP flow without a datagram either way for this long ends (conntrack's)
UDP_QUEUE = 256   # datagrams a flow holds before dropping
UDP_FLOWS = 1024  # flows of one Service port at most: a new one ends the oldest (DNS-like
                  # clients take a new source port per query)


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """(IP, port) the client connected to before the service rules' DNAT."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)  # a struct sockaddr_in
    return socket.inet_ntoa(raw[4:8]), int.from_bytes(raw[2:4], "big")


Pick = Callable[[ServicePort, list[Endpoint]], Endpoint]


def _any(sp: ServicePort, eps: list[Endpoint]) -> Endpoint:
    return random.choice(eps)


def tunnel_target(ip: str, port: int, ports: Sequence[ServicePort],
                  cidrs: Sequence[ipaddress.IPv4Network],
                  pick: Pick = _any) -> tuple[str, int] | None:
    """Where a connection to `ip`:`port` goes through the tunnel: the address itself in a
    tunnelled pod CIDR, else the tunnelled endpoint `pick` chooses of the TCP Service port it
    names (by ClusterIP or LoadBalancer address first, then by node port); None when none."""
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
            ep = pick(sp, eps)
            return ep.ip, ep.port
    return None


class ClientAffinity:
    """sessionAffinity ClientIP on the tunnel path, as the service rules do it on the kernel
    path: a client's connection through a Service port with a timeout goes to the endpoint
    its last one went to, if that one is still there and the last was less than the timeout
    ago (each connection starts the timeout again, as kube-proxy's `recent` match and our
    nft sets do); else to one at random, remembered. Expired entries are pruned as the
    table grows."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 choose: Callable[[list[Endpoint]], Endpoint] = random.choice) -> None:
        self.clock, self.choose = clock, choose
        # (service port id, client IP) -> ((endpoint IP, port), when last chosen, timeout)
        self._last: dict[tuple[str, str], tuple[tuple[str, int], float, int]] = {}
        self._prune_at = 1024

    def __len__(self) -> int:
        return len(self._last)

    def pick(self, sp: ServicePort, client: str, eps: list[Endpoint]) -> Endpoint:
        if not sp.affinity_seconds or not client:
            return self.choose(eps)
        now, key = self.clock(), (sp.id, client)
        held = self._last.get(key)
        ep = next((e for e in eps if held and (e.ip, e.port) == held[0]
                   and now - held[1] < sp.affinity_seconds), None) or self.choose(eps)
        self._last[key] = ((ep.ip, ep.port), now, sp.affinity_seconds)
        if len(self._last) >= self._prune_at:
            self._last = {k: v for k, v in self._last.items() if now - v[1] < v[2]}
            self._prune_at = max(1024, 2 * len(self._last))
        return ep


class TunnelProxy:
    """The listener the service rules send tunnelled traffic to; `update` gives it the
    routed Service ports and the pod CIDRs reached through the tunnel."""

    def __init__(self, hub: EdgeHub) -> None:
        self.hub = hub
        self.ports: list[ServicePort] = []
        self.cidrs: list[ipaddress.IPv4Network] = []
        self.affinity = ClientAffinity()
        self.address = ""  # "IP:port" once listening
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task] = set()
        self._udp: dict[str, UdpPort] = {}  # by service port id

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

    async def serve_udp(self) -> dict[str, str]:
        """A socket (on the listener's IP) for each UDP Service port with tunnelled
        endpoints, none without a listener; {service port id: "IP:port"}."""
        ip = self.address.rpartition(":")[0]
        wanted = {sp.id for sp in self.ports if ip and sp.protocol == "udp" and
                  any(e.via_tunnel for e in sp.endpoints)}
        for port_id in set(self._udp) - wanted:
            self._udp.pop(port_id).close()
        for port_id in wanted - set(self._udp):
            udp = UdpPort(self, port_id)
            await udp.open(ip)
            self._udp[port_id] = udp
        return {port_id: udp.address for port_id, udp in self._udp.items()}

    def track(self, task: asyncio.Task) -> None:
        """A connection's or flow's task, cancelled by stop()."""
        self._conns.add(task)
        task.add_done_callback(self._conns.discard)

    async def stop(self) -> None:
        for udp in self._udp.values():
            udp.close()
        self._udp.clear()
        if self._server is not None:
            self._server.close()
            self._server = None
            self.address = ""
        for t in list(self._conns):
            t.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.track(task)
        try:
            await self._relay(reader, writer)
        finally:
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            dst = original_destination(writer.get_extra_info("socket"))
        except OSError:
            return  # not DNATed here (no conntrack entry): nothing to relay to
        client = (writer.get_extra_info("peername") or ("",))[0]
        target = tunnel_target(*dst, self.ports, self.cidrs,
                               lambda sp, eps: self.affinity.pick(sp, client, eps))
        if target is None:
            log.debug("tunnel proxy: no tunnelled pod for %s:%s", *dst)
            return
        await connect_through(self.hub, *target, reader, writer)


async def connect_through(hub: EdgeHub, ip: str, port: int, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
    """Relay a connection to the pod at `ip`:`port` over a connect stream this node opens,
    flow controlled if the server speaks it (and, it answers, the pod's node too)."""
    flow = hub.speaks(FEATURE_FLOW_CONTROL)
    opened = hub.open_stream(STREAM_CONNECT, ConnectRequest(ip, port, flow=flow).to_content())
    if opened is None:
        log.debug("tunnel proxy: no tunnel to the server for %s:%s", ip, port)
        return
    sid, queue = opened
    try:
        await relay_stream(hub, sid, queue, reader, writer, opened=True, flow_control=flow)
    finally:
        hub.close_stream(sid)


class UdpPort:
    """The socket the rules DNAT one UDP Service port's datagrams to: each client address
    is a flow, relayed over a connect stream of its own to the tunnelled endpoint chosen for
    it (ClientAffinity), until no datagram passed for UDP_IDLE seconds."""

    def __init__(self, proxy: TunnelProxy, port_id: str) -> None:
        self.proxy, self.port_id = proxy, port_id
        self.address = ""
        self.flows: dict[tuple, tuple[asyncio.Queue, asyncio.Task]] = {}  # oldest first
        self.refused = 0  # the link (hub.connects) whose server could not relay UDP, logged
        self._transport: asyncio.DatagramTransport | None = None

    async def open(self, ip: str) -> None:
        self._transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: DatagramQueue(on_datagram=self._received), local_addr=(ip, 0))
        self.address = f"{ip}:{self._transport.get_extra_info('sockname')[1]}"

    def close(self) -> None:
        """The socket and its flows (their streams closed)."""
        if self._transport is not None:
            self._transport.close()
        for _, task in list(self.flows.values()):
            task.cancel()

    def _received(self, data: bytes, client: tuple) -> None:
        flow = self.flows[client][0] if client in self.flows else self._open_flow(client)
        if flow is not None and not flow.full():
            flow.put_nowait(data)

    def _open_flow(self, client: tuple) -> asyncio.Queue | None:
        sp = next((p for p in self.proxy.ports if p.id == self.port_id), None)
        eps = [e for e in sp.endpoints if e.via_tunnel] if sp is not None else []
        if sp is None or not eps:
            return None
        hub = self.proxy.hub
        if not hub.speaks(FEATURE_UDP_CONNECT):
            if self.refused != hub.connects:  # once per link
                self.refused = hub.connects
                log.warning("UDP to Service port %s through the tunnel dropped: the server "
                            "is older than UDP relaying (upgrade it)", self.port_id)
            return None
        ep = self.proxy.affinity.pick(sp, client[0], eps)
        flow = hub.speaks(FEATURE_FLOW_CONTROL)
        opened = hub.open_stream(STREAM_CONNECT, ConnectRequest(
            ep.ip, ep.port, "udp", flow=flow).to_content())
        if opened is None:
            return None
        if len(self.flows) >= UDP_FLOWS:
            self.flows.pop(next(iter(self.flows)))[1].cancel()
        queue: asyncio.Queue = asyncio.Queue(maxsize=UDP_QUEUE)
        task = asyncio.create_task(self._relay(client, *opened, queue, flow))
        self.flows[client] = queue, task
        self.proxy.track(task)
        return queue

    async def _relay(self, client: tuple, sid: str, inputs: asyncio.Queue,
                     queue: asyncio.Queue, flow: bool) -> None:
        def reply(data: bytes) -> None:
            if self._transport is not None and not self._transport.is_closing():
                self._transport.sendto(data, client)
        try:
            await relay_datagrams(self.proxy.hub, sid, inputs, reply, queue, idle=UDP_IDLE,
                                  flow_control=flow)
        finally:
            self.proxy.hub.close_stream(sid)
            if self.flows.get(client, (None,))[0] is queue:
                del self.flows[client]


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
    if req.protocol == "udp" and not hub.speaks(FEATURE_UDP_CONNECT):
        fail(501, "UDP through the tunnel needs the server and both agents at this version "
                  "(the server is older)")
        return
    if req.protocol == "udp":
        await _serve_datagrams(hub, msg.id, req, fail)
        return
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            reader, writer = await asyncio.open_connection(req.ip, req.port)
    except (OSError, TimeoutError) as e:
        fail(503, f"connecting to {req.ip}:{req.port}: {e.strerror or e}"
             if isinstance(e, OSError) else f"connecting to {req.ip}:{req.port} timed out")
        return
    with contextlib.suppress(ConnectionError):
        await relay_stream(hub, msg.id, hub.stream_input(msg.id), reader, writer,
                           flow_control=req.flow)


async def _serve_datagrams(hub: EdgeHub, sid: str, req: ConnectRequest,
                           fail: Callable[[int, str], None]) -> None:
    """A UDP flow to the pod: a socket connected to it, datagrams both ways until the
    stream ends or the flow is idle (then "close")."""
    received: asyncio.Queue = asyncio.Queue(maxsize=UDP_QUEUE)
    try:
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: DatagramQueue(received), remote_addr=(req.ip, req.port))
    except OSError as e:
        fail(503, f"UDP to {req.ip}:{req.port}: {e.strerror or e}")
        return
    try:
        await relay_datagrams(hub, sid, hub.stream_input(sid), transport.sendto, received,
                              idle=UDP_IDLE, flow_control=req.flow)
    finally:
        transport.close()
    hub.send_live(stream_frame(sid, FRAME_CLOSE, source=EDGE))
