"""What both ends of the tunnel spell alike for a node's MQTT traffic: the summary the agent
reports every few seconds (clients, messages per second by topic, totals) and the live tail
stream the server opens while a dashboard tab watches the node's MQTT view.

The agent counts (k3py.agent.devices.traffic) and serves the tail; the server keeps the newest
summary per node (k3py.server.edge.mqttstats) and relays the tail (k3py.server.dashboard.mqtt).
No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from k3py.api.amounts import amount, count

__all__ = ["MQTT_KIND", "mqtt_resource", "STREAM_MQTT_TAIL", "MAX_CLIENTS", "MAX_TOPICS",
           "MAX_TAIL_RATE", "MAX_BATCH", "PAYLOAD_CHARS", "DEFAULT_FILTER", "ClientInfo",
           "TopicRate", "MqttSummary", "TailRequest", "TailEntry", "valid_topic_filter"]

# ---------------------------------------------------------------- the summary (node to server)
# A live (never queued, never resent) GROUP_RESOURCE message, operation OP_UPDATE, resource
# mqtt_resource(node), content MqttSummary.to_content(): sent when it changed, at most every
# few seconds, and at least every half minute. The server keeps only the newest per node.

MQTT_KIND = "mqtt"
MAX_CLIENTS = 50   # clients listed in a summary (the count is exact)
MAX_TOPICS = 50    # topics listed in a summary, busiest first


def mqtt_resource(node: str) -> str:
    """The resource key of an MQTT summary: "mqtt//<node>"."""
    return f"{MQTT_KIND}//{node}"


def _text(v: Any, what: str, limit: int = 512) -> str:
    if not isinstance(v, str) or len(v) > limit:
        raise ValueError(f"{what} must be a string of at most {limit} characters")
    return v


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """A client connected to the node's embedded broker (a mapper, or the bus's own link)."""

    client_id: str
    address: str = ""
    since: float = 0.0  # epoch seconds

    def to_content(self) -> dict:
        return {"id": self.client_id, "address": self.address, "since": self.since}

    @classmethod
    def from_content(cls, c: Any) -> ClientInfo:
        if not isinstance(c, dict):
            raise ValueError("a client is an object")
        return cls(_text(c.get("id"), "a client id"), _text(c.get("address", ""), "an address"),
                   amount(c.get("since", 0), "since"))


@dataclass(frozen=True, slots=True)
class TopicRate:
    """Messages per second on one topic over the summary's window, and since the agent
    started (received: what the bus took in; published: its answers, documents, deltas;
    errors: its error answers)."""

    topic: str
    rate: float
    total: int

    def to_content(self) -> dict:
        return {"topic": self.topic, "rate": self.rate, "total": self.total}

    @classmethod
    def from_content(cls, c: Any) -> TopicRate:
        if not isinstance(c, dict):
            raise ValueError("a topic rate is an object")
        return cls(_text(c.get("topic"), "a topic"), amount(c.get("rate"), "rate"),
                   count(c.get("total"), "total"))


@dataclass(frozen=True, slots=True)
class MqttSummary:
    """timestamp: when it was taken (epoch seconds); window: seconds the rates are over;
    rate: all messages per second; clients: None when the broker is external (not known);
    tails: live tail streams the node serves now (None from an agent that does not say)."""

    timestamp: float
    window: float
    rate: float
    received: int
    published: int
    errors: int
    topics: tuple[TopicRate, ...] = ()
    clients: tuple[ClientInfo, ...] | None = None
    client_count: int = 0
    tails: int | None = None

    def to_content(self) -> dict:
        out: dict[str, Any] = {
            "timestamp": self.timestamp, "window": self.window, "rate": self.rate,
            "received": self.received, "published": self.published, "errors": self.errors,
            "topics": [t.to_content() for t in self.topics]}
        if self.clients is not None:
            out["clients"] = [c.to_content() for c in self.clients]
            out["clientCount"] = self.client_count
        if self.tails is not None:
            out["tails"] = self.tails
        return out

    @classmethod
    def from_content(cls, c: Any) -> MqttSummary:
        """ValueError when `c` is not a summary or lists more than the bounds allow."""
        if not isinstance(c, dict) or not isinstance(c.get("topics"), list):
            raise ValueError("an MQTT summary is an object with a list of topics")
        clients = c.get("clients")
        if clients is not None and not isinstance(clients, list):
            raise ValueError("an MQTT summary's clients are a list")
        if len(c["topics"]) > MAX_TOPICS or len(clients or ()) > MAX_CLIENTS:
            raise ValueError(f"an MQTT summary lists at most {MAX_TOPICS} topics and "
                             f"{MAX_CLIENTS} clients")
        window = amount(c.get("window"), "window")
        if window <= 0:
            raise ValueError("an MQTT summary needs a window > 0")
        return cls(amount(c.get("timestamp"), "timestamp"), window,
                   amount(c.get("rate"), "rate"),
                   *(count(c.get(k), k) for k in ("received", "published", "errors")),
                   tuple(TopicRate.from_content(t) for t in c["topics"]),
                   None if clients is None else tuple(ClientInfo.from_content(x)
                                                      for x in clients),
                   count(c.get("clientCount", len(clients or ())), "clientCount"),
                   None if c.get("tails") is None else count(c["tails"], "tails"))


# ---------------------------------------------------------------- the live tail (a stream)
# A stream request (GROUP_STREAM, operation STREAM_MQTT_TAIL, content TailRequest.to_content()):
# the agent answers with FRAME_DATA frames {"messages": [TailEntry...], "dropped": n}, a batch at
# most every quarter second, holding at most `rate` messages a second (the rest are dropped and
# counted), until the server closes the stream.

STREAM_MQTT_TAIL = "mqtttail"
MAX_TAIL_RATE = 50  # messages a second
MAX_BATCH = 64      # messages in one frame
PAYLOAD_CHARS = 400  # of each payload
DEFAULT_FILTER = "$hw/events/device/#"
_MAX_FILTER = 256


def valid_topic_filter(f: str) -> bool:
    """An MQTT topic filter: `#` only as the last level, `+` only as a whole level."""
    if not f or len(f) > _MAX_FILTER or "\0" in f:
        return False
    levels = f.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


@dataclass(frozen=True, slots=True)
class TailRequest:
    topic_filter: str = DEFAULT_FILTER
    rate: int = MAX_TAIL_RATE

    def to_content(self) -> dict:
        return {"filter": self.topic_filter, "rate": self.rate}

    @classmethod
    def from_content(cls, c: Any) -> TailRequest:
        """ValueError unless the filter is valid; the rate is held to 1..MAX_TAIL_RATE."""
        c = c if isinstance(c, dict) else {}
        f = c.get("filter") or DEFAULT_FILTER
        if not isinstance(f, str) or not valid_topic_filter(f):
            raise ValueError(f"not an MQTT topic filter: {f!r}")
        rate = c.get("rate")
        rate = rate if isinstance(rate, int) and not isinstance(rate, bool) else MAX_TAIL_RATE
        return cls(f, max(1, min(MAX_TAIL_RATE, rate)))


@dataclass(frozen=True, slots=True)
class TailEntry:
    """One message the bus received ("in"), published ("out") or answered with an error
    ("error"); `device`: the (namespace, name) the agent's twin resolved its topic to, if any;
    `payload`: its first PAYLOAD_CHARS characters."""

    at: float
    direction: str
    topic: str
    size: int
    payload: str
    device: tuple[str, str] | None = None

    def to_content(self) -> dict:
        out: dict[str, Any] = {"at": self.at, "direction": self.direction,
                               "topic": self.topic, "size": self.size,
                               "payload": self.payload}
        if self.device is not None:
            out["device"] = list(self.device)
        return out

    @classmethod
    def from_content(cls, c: Any) -> TailEntry:
        if not isinstance(c, dict):
            raise ValueError("a tail entry is an object")
        device = c.get("device")
        if device is not None and not (isinstance(device, list) and len(device) == 2 and
                                       all(isinstance(x, str) for x in device)):
            raise ValueError("a tail entry's device is [namespace, name]")
        direction = c.get("direction")
        if direction not in ("in", "out", "error"):
            raise ValueError("a tail entry's direction is in, out or error")
        return cls(amount(c.get("at"), "at"), direction, _text(c.get("topic"), "a topic"),
                   count(c.get("size"), "size"),
                   _text(c.get("payload", ""), "a payload", 4 * PAYLOAD_CHARS),
                   None if device is None else (device[0], device[1]))
