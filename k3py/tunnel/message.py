"""The tunnel message envelope (after KubeEdge's beehive model): header + route + content.

Built by cloudhub and edgehub; every message has an id, ACKs and responses name it as parent."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from k3py.api.objects import new_id

__all__ = [
    "Header", "Route", "Message", "new_message", "ack_for", "needs_ack",
    "GROUP_RESOURCE", "GROUP_STREAM", "GROUP_TUNNEL",
    "OP_INSERT", "OP_UPDATE", "OP_DELETE", "OP_SYNC", "OP_RESPONSE", "OP_ACK",
    "OP_KEEPALIVE", "OP_HELLO", "OP_NODE_STATUS", "CLOUD", "EDGE", "keepalive", "hello",
    "node_status_request", "resource_key", "split_resource_key", "stream_frame",
]

# route.group: what kind of payload this is
GROUP_RESOURCE = "resource"  # Kubernetes objects (pods, configmaps, nodes, leases, events)
GROUP_STREAM = "stream"      # logs / exec frames: live only, never resent
GROUP_TUNNEL = "tunnel"      # the link itself: ACKs, keepalives, the server's hello, requests

OP_INSERT = "insert"
OP_UPDATE = "update"
OP_DELETE = "delete"
OP_SYNC = "sync"  # the desired set of each kind it holds for this node (protocol.full_sync)
OP_RESPONSE = "response"
OP_ACK = "ack"
OP_KEEPALIVE = "keepalive"
OP_HELLO = "hello"  # the server's first message on a link: {"features": [...]}
OP_NODE_STATUS = "nodestatus"  # the server asks the node to post its Node status now

CLOUD = "cloudhub"
EDGE = "edgehub"


@dataclass(frozen=True, slots=True)
class Header:
    id: str
    parent_id: str = ""
    timestamp: int = 0          # milliseconds since the epoch, as in beehive
    resource_version: str = ""
    sync: bool = False          # the sender waits for an OP_RESPONSE naming this id


@dataclass(frozen=True, slots=True)
class Route:
    source: str = ""
    destination: str = ""
    group: str = GROUP_RESOURCE
    operation: str = ""
    resource: str = ""          # "<plural>/<namespace>/<name>[/<subresource>]", "" ns if cluster


@dataclass(frozen=True, slots=True)
class Message:
    header: Header
    route: Route
    content: Any = None
    # for coalescing in an outbox: a newer message with the same key replaces an older one
    key: str = field(default="", compare=False)
    # its wire form, made once for a message that many nodes are sent (framing.shared)
    frame: str | None = field(default=None, compare=False, repr=False)

    @property
    def id(self) -> str:
        return self.header.id

    def to_dict(self) -> dict:
        h, r = self.header, self.route
        return {
            "header": {"msg_id": h.id, "parent_msg_id": h.parent_id, "timestamp": h.timestamp,
                       "resourceversion": h.resource_version, "sync": h.sync},
            "route": {"source": r.source, "destination": r.destination, "group": r.group,
                      "operation": r.operation, "resource": r.resource},
            "content": self.content,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Message:
        h, r = d.get("header"), d.get("route")
        if not isinstance(h, dict) or not isinstance(r, dict):
            raise ValueError("message needs a header and a route object")
        msg_id = h.get("msg_id")
        if not isinstance(msg_id, str) or not msg_id:
            raise ValueError("message header has no msg_id")
        header = Header(id=msg_id, parent_id=str(h.get("parent_msg_id") or ""),
                        timestamp=int(h.get("timestamp") or 0),
                        resource_version=str(h.get("resourceversion") or ""),
                        sync=bool(h.get("sync", False)))
        route = Route(source=str(r.get("source") or ""),
                      destination=str(r.get("destination") or ""),
                      group=str(r.get("group") or ""), operation=str(r.get("operation") or ""),
                      resource=str(r.get("resource") or ""))
        return cls(header, route, d.get("content"))

    def with_content(self, content: Any) -> Message:
        return replace(self, content=content, frame=None)


def new_message(*, source: str, group: str, operation: str, resource: str = "",
                content: Any = None, parent_id: str = "", resource_version: str = "",
                sync: bool = False, destination: str = "", key: str = "",
                msg_id: str = "") -> Message:
    header = Header(id=msg_id or new_id(), parent_id=parent_id,
                    timestamp=int(time.time() * 1000), resource_version=resource_version,
                    sync=sync)
    route = Route(source=source, destination=destination, group=group, operation=operation,
                  resource=resource)
    return Message(header, route, content, key)


def ack_for(ids: list[str], *, source: str) -> Message:
    """One ACK message can acknowledge many ids (batched after a burst)."""
    return new_message(source=source, group=GROUP_TUNNEL, operation=OP_ACK,
                       content={"ids": list(ids)})


def hello(features: Iterable[str], *, source: str) -> Message:
    """The server's first message on each link: the tunnel features it speaks
    (protocol.FEATURES). A server that sends none is older than features: it speaks none."""
    return new_message(source=source, group=GROUP_TUNNEL, operation=OP_HELLO,
                       content={"features": sorted(features)})


def keepalive(content: Any, *, source: str) -> Message:
    """A link probe: the server sends one with {"sent": its monotonic clock} and the agent
    sends the same content back, which times the round trip (the websocket's own pings are
    answered inside aiohttp, out of sight)."""
    return new_message(source=source, group=GROUP_TUNNEL, operation=OP_KEEPALIVE,
                       content=content)


def node_status_request(*, source: str) -> Message:
    """The server's ask for the node's status now: its part of its Node's status was changed
    by another writer (the node lifecycle controller marked it Ready=Unknown, having seen its
    heartbeats late while its link stayed up; an edit), and the agent, which posts an
    unchanged status every 5 minutes only, would not correct that before. Best effort; an
    agent that does not know it ignores it (and posts its status every 10 s)."""
    return new_message(source=source, group=GROUP_TUNNEL, operation=OP_NODE_STATUS)


def stream_frame(stream_id: str, operation: str, content: Any = None, *,
                 source: str) -> Message:
    """A frame of an open stream: "data" ({"data": base64}), "error" ({code, message}), "close"."""
    return new_message(source=source, group=GROUP_STREAM, operation=operation,
                       parent_id=stream_id, content=content)


def needs_ack(msg: Message) -> bool:
    """Resource messages are reliable; stream frames and link messages are not."""
    return msg.route.group == GROUP_RESOURCE


def resource_key(plural: str, namespace: str | None, name: str, subresource: str = "") -> str:
    key = f"{plural}/{namespace or ''}/{name}"
    return f"{key}/{subresource}" if subresource else key


def split_resource_key(key: str) -> tuple[str, str | None, str, str]:
    """(plural, namespace or None, name, subresource); ValueError if malformed."""
    parts = key.split("/")
    if len(parts) not in (3, 4) or not parts[0]:
        raise ValueError(f"malformed resource {key!r}")
    sub = parts[3] if len(parts) == 4 else ""
    return parts[0], parts[1] or None, parts[2], sub
