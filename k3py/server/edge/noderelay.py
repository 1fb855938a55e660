"""Connections between nodes through the server (STREAM_CONNECT), as KubeEdge's EdgeMesh
carries service traffic to nodes behind NAT: a node asks for a TCP connection to a pod IP it
cannot route to; the server finds the Node whose pod CIDR holds that address, opens a connect
stream on that node's tunnel, and relays the frames of the two streams both ways.

Called by sessions.TunnelHandler for a stream request a node sends; the Nodes come from the
server's Node informer (the one downstream.py feeds every node's route view from). Any node
may reach any pod IP this way, as on a flat pod network.

When both agents speak flow control (sessions.NodeSession.speaks), they flow-control the
stream end to end (tunnel/flowcontrol.py) and the relay passes their credit frames on, so it
holds at most a window per direction; a node that sends more than its window ends the stream,
rather than growing the server's queues. With an older agent at either end the relay counts
no window and the stream is lenient (flowcontrol.py): the relay still passes credit frames
on both ways (the release before features waits for them), and a new agent at the other end
hears so by a "flow" frame. A UDP flow goes only between agents that both speak it."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import replace

from k3py.api import errors
from k3py.server.edge import nodestreams
from k3py.server.edge.sessions import NodeSession
from k3py.tunnel.flowcontrol import StreamWindow, datagram_cost
from k3py.tunnel.message import CLOUD, Message, stream_frame
from k3py.tunnel.protocol import (
    FEATURE_FLOW_CONTROL,
    FEATURE_UDP_CONNECT,
    FRAME_CLOSE,
    FRAME_CREDIT,
    FRAME_DATA,
    FRAME_DATA_CLOSE,
    FRAME_ERROR,
    FRAME_FLOW,
    STREAM_CONNECT,
    ConnectRequest,
    content_credit,
    data_length,
    flow_off_content,
)

__all__ = ["ConnectRelay", "node_for_ip"]

log = logging.getLogger("k3py.cloudhub")

_FORWARDED = (FRAME_DATA, FRAME_DATA_CLOSE, FRAME_CREDIT)


def node_for_ip(nodes: list[dict], ip: str) -> str:
    """The name of the Node whose pod CIDR holds `ip` ("" when none does)."""
    addr = ipaddress.ip_address(ip)
    for node in nodes:
        spec = node.get("spec") or {}
        for cidr in spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []):
            with contextlib.suppress(ValueError, TypeError):
                if addr in ipaddress.ip_network(cidr, strict=False):
                    return (node.get("metadata") or {}).get("name") or ""
    return ""


class ConnectRelay:
    """Serves the connect streams nodes open; `nodes()` lists the Node objects."""

    def __init__(self, sessions: dict[str, NodeSession], nodes: Callable[[], list[dict]]) -> None:
        self.sessions = sessions
        self.nodes = nodes
        self._tasks: set[asyncio.Task] = set()

    def request(self, source: NodeSession, msg: Message) -> None:
        """A stream request from `source`'s node; its frames reach the relay from now on."""
        if msg.route.operation != STREAM_CONNECT:
            source.send_live(_error(msg.id, errors.bad_request(
                f"unsupported stream {msg.route.operation!r}")))
            return
        inbound: asyncio.Queue = asyncio.Queue()
        source.streams[msg.id] = inbound  # nodestreams.deliver puts the node's frames here
        task = asyncio.create_task(self._relay(source, msg.id, msg.content, inbound))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _open(self, source: NodeSession, content: object
              ) -> tuple[ConnectRequest, NodeSession, str, asyncio.Queue]:
        """The stream opened on the target node, with the request it was sent (its `flow`:
        whether the stream is flow controlled)."""
        try:
            req = ConnectRequest.from_content(content)
        except ValueError as e:
            raise errors.bad_request(f"connect: {e}") from None
        target = node_for_ip(self.nodes(), req.ip)
        if not target:
            raise errors.StatusError(404, "NotFound", f"no node's pod CIDR holds {req.ip}")
        if target == source.node:
            raise errors.bad_request(f"{req.ip} is on the asking node {target}")
        session = self.sessions.get(target)
        if req.protocol == "udp" and not source.speaks(FEATURE_UDP_CONNECT):
            raise errors.StatusError(501, "NotImplemented", f"node {source.node}'s agent is "
                                     "older than this server: UDP through the tunnel needs "
                                     "both agents at this version")
        if req.protocol == "udp" and session is not None and session.connected and \
                not session.speaks(FEATURE_UDP_CONNECT):
            raise errors.StatusError(501, "NotImplemented", f"node {target}'s agent does not "
                                     "relay UDP (it is older than this server)")
        flow = req.flow and source.speaks(FEATURE_FLOW_CONTROL) and session is not None \
            and session.speaks(FEATURE_FLOW_CONTROL)
        req = replace(req, flow=bool(flow))
        stream_id, queue = nodestreams.open_stream(session, target, STREAM_CONNECT,
                                                   req.to_content())
        assert session is not None
        return req, session, stream_id, queue

    async def _relay(self, source: NodeSession, sid: str, content: object,
                     inbound: asyncio.Queue) -> None:
        try:
            req, target, tid, outbound = self._open(source, content)
        except errors.StatusError as e:
            log.info("node %s: connect refused: %s", source.node, e.message)
            source.send_live(_error(sid, e))
            source.streams.pop(sid, None)
            return
        if req.flow:
            up, down = StreamWindow(), StreamWindow()  # source -> target, target -> source
        else:
            up = down = None
            if (content if isinstance(content, dict) else {}).get("flow") is True:
                # the source keeps to a window until it hears that the stream is lenient
                source.send_live(stream_frame(sid, FRAME_FLOW, flow_off_content(),
                                              source=CLOUD))
        cost = (lambda c: datagram_cost(data_length(c))) if req.protocol == "udp" \
            else data_length
        pumps = [asyncio.create_task(_pump(inbound, target, tid, up, down, cost)),
                 asyncio.create_task(_pump(outbound, source, sid, down, up, cost))]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for p in pumps:
                p.cancel()
            nodestreams.close_stream(target, tid)
            nodestreams.close_stream(source, sid)

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()


async def _pump(frames: asyncio.Queue, to: NodeSession, stream_id: str,
                sending: StreamWindow | None, granting: StreamWindow | None,
                cost: Callable[[object], int]) -> None:
    """Frames of one stream into the other until it closes or fails (an error is passed
    on: the tunnel of either node may be the one that went). `sending`: the window of the
    data these frames carry, `cost(content)` what a data frame takes of it; `granting`: the
    one their credit frames open (both None: the stream is lenient, nothing is counted and
    credit frames are passed on as they come)."""
    while True:
        kind, content = await frames.get()
        if kind == FRAME_DATA and sending is not None and not sending.sent(cost(content)):
            log.warning("node %s: connect stream ended: a node sent more than its window",
                        to.node)
            to.send_live(stream_frame(stream_id, FRAME_ERROR, {
                "code": 502, "message": "the other node sent more than its flow-control window"},
                source=CLOUD))
            return
        if kind == FRAME_CREDIT and granting is not None:
            granting.granted(content_credit(content))
        if kind in _FORWARDED:
            if not to.send_live(stream_frame(stream_id, kind, content, source=CLOUD)):
                return
        elif kind == FRAME_ERROR:
            to.send_live(stream_frame(stream_id, FRAME_ERROR, content if isinstance(
                content, dict) else {"code": 503, "message": str(content)}, source=CLOUD))
            return
        elif kind == FRAME_CLOSE:
            return


def _error(stream_id: str, e: errors.StatusError) -> Message:
    return stream_frame(stream_id, FRAME_ERROR, {"code": e.code, "reason": e.reason,
                                                 "message": e.message}, source=CLOUD)
