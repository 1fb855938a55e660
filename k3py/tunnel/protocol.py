"""What both ends of the node tunnel must spell alike: the join and tunnel paths, headers and
fields, the kinds sent down, and the stream operations, frames and request records.

Imported by k3py.server.edge (cloudhub, nodeauth, streams) and by the agent (edgehub, join,
streams, metamanager); the envelope's groups and operations are message.py's. No I/O."""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from k3py.api.amounts import count

__all__ = [
    "CACERTS_PATH", "NODE_CERT_PATH", "NodeCertRequest", "NodeCertResponse",
    "TUNNEL_PATH", "RESUME_HEADER", "NODE_PASSWORD_HEADER", "HEARTBEAT",
    "HEARTBEAT_TIMEOUT",
    "FEATURES_HEADER", "FEATURE_FLOW_CONTROL", "FEATURE_UDP_CONNECT", "FEATURE_NODE_STATUS",
    "FEATURES",
    "features_header", "parse_features", "hello_features",
    "POD_TOKENS_KIND", "DOWN_KINDS", "CLUSTER_WIDE_KINDS", "POD_PEERS_KIND",
    "NETWORK_POLICY_KINDS", "POLICY_PEER_KINDS", "full_sync", "INGRESS_KINDS", "VOLUME_KINDS",
    "VOLUME_CLEANED", "volume_cleaned_resource",
    "DEVICES_KIND", "DEVICE_STATUS", "device_status_resource", "ReportedValue", "DeviceReport",
    "METRICS_KIND", "metrics_resource", "Usage", "PodUsage", "UsageReport",
    "STREAM_LOG", "STREAM_EXEC", "STREAM_ATTACH", "STREAM_PORTFORWARD", "STREAM_CONNECT",
    "ConnectRequest",
    "FRAME_DATA", "FRAME_EXIT", "FRAME_ERROR", "FRAME_CLOSE",
    "FRAME_STDIN", "FRAME_STDIN_CLOSE", "FRAME_RESIZE", "FRAME_DATA_CLOSE", "FRAME_CREDIT",
    "FRAME_FLOW", "flow_off_content", "content_flow_off",
    "data_content", "content_data", "data_length", "credit_content", "content_credit", "LogRequest", "ExecRequest", "PortForwardRequest",
]

# ---------------------------------------------------------------- joining (plain HTTPS)

CACERTS_PATH = "/cacerts"              # GET, unauthenticated (as K3s): the server CA's PEM
NODE_CERT_PATH = "/v1-k3py/node-cert"  # POST with "Authorization: Bearer <join token>"


@dataclass(frozen=True, slots=True)
class NodeCertRequest:
    """The body of POST NODE_CERT_PATH: the node name and this machine's node password."""

    node_name: str
    node_password: str = ""

    def to_dict(self) -> dict:
        return {"nodeName": self.node_name, "nodePassword": self.node_password}

    @classmethod
    def from_dict(cls, body: Any) -> NodeCertRequest:
        """KeyError, TypeError or AttributeError when `body` is not such an object."""
        return cls(str(body["nodeName"]), str(body.get("nodePassword") or ""))


@dataclass(frozen=True, slots=True)
class NodeCertResponse:
    """The answer of POST NODE_CERT_PATH: the node's client certificate, its key, the CA."""

    cert: str
    key: str
    ca: str

    def to_dict(self) -> dict:
        return {"cert": self.cert, "key": self.key, "ca": self.ca}

    @classmethod
    def from_dict(cls, body: dict) -> NodeCertResponse:
        return cls(body["cert"], body["key"], body.get("ca") or "")


# ---------------------------------------------------------------- the tunnel (a websocket)

TUNNEL_PATH = "/v1-k3py/tunnel"
RESUME_HEADER = "X-K3py-Resume"  # "1": the agent holds a snapshot, resend what is unACKed only
NODE_PASSWORD_HEADER = "X-K3py-Node-Password"  # on every dial: the name is still this machine's
HEARTBEAT = 10.0  # seconds between websocket pings, both ends
# how long a silent link stays open at most, from its last frame: each end pings HEARTBEAT
# after the last frame it received and closes the link when no pong came HEARTBEAT / 2 later
# (aiohttp's heartbeat); a cut link is noticed that long after the last frame crossed it
HEARTBEAT_TIMEOUT = HEARTBEAT * 1.5

# What each end speaks beyond the first tunnel protocol, so that a server and its agents of
# different versions (an upgrade, server or agents first) use only what both know. The agent
# names its features in FEATURES_HEADER on every dial; the server names its own in the hello
# (message.hello), its first message on each link. A peer older than features names none: an
# older server ignores the header, an older agent the hello, and each feature is off towards
# them.
FEATURES_HEADER = "X-K3py-Features"
FEATURE_FLOW_CONTROL = "flow-control"  # credit frames on connect and port-forward streams
FEATURE_UDP_CONNECT = "udp-connect"    # ConnectRequest protocol "udp"
# the server asks a node whose status it sees changed by others (Ready=Unknown, an edit) for
# its status (message.OP_NODE_STATUS), so the agent may post an unchanged status every 5
# minutes only; towards an older server, every 10 s
FEATURE_NODE_STATUS = "node-status"
FEATURES = frozenset({FEATURE_FLOW_CONTROL, FEATURE_UDP_CONNECT,
                      FEATURE_NODE_STATUS})  # this build's


def features_header(features: frozenset[str] = FEATURES) -> str:
    return ",".join(sorted(features))


def parse_features(value: Any) -> frozenset[str]:
    """The features a FEATURES_HEADER value names (none for a missing or malformed one)."""
    if not isinstance(value, str):
        return frozenset()
    return frozenset(f.strip() for f in value.split(",") if f.strip())


def hello_features(content: Any) -> frozenset[str]:
    """The features a hello's content names (none for a malformed one)."""
    names = (content if isinstance(content, dict) else {}).get("features")
    if not isinstance(names, list):
        return frozenset()
    return frozenset(f for f in names if isinstance(f, str))

# the kinds sent down (resource keys' plural, the keys of a sync snapshot's content)
# the claims a node's pods use and their volumes (bound, or deleted local-path volumes of the
# node whose directories it must remove: k3py.api.localpath)
VOLUME_KINDS = ("persistentvolumeclaims", "persistentvolumes")
POD_TOKENS_KIND = "podtokens"  # the pods' service-account tokens (server/edge/podtokens.py)
# services and endpointslices go to every node (its DNS and service rules, offline too), and
# the nodes' routing view (name, pod CIDRs, addresses: server/edge/downstream.node_route_view)
# for the pod network's routes
CLUSTER_WIDE_KINDS = ("services", "endpointslices", "nodes")
# and, unless the server runs with --disable-network-policy, what its NetworkPolicy rules
# need: the policies, the namespaces' labels and every pod's peer view (name, labels, IP,
# node, named ports) under POD_PEERS_KIND
POD_PEERS_KIND = "podpeers"
NETWORK_POLICY_KINDS = ("networkpolicies", "namespaces", POD_PEERS_KIND)
# the namespaces' and pods' views are of use to no node while the cluster has no policy, so
# none is sent then (each pod's would be a message to every node): the first policy is
# preceded by a partial sync holding all of them, the last one's deletion followed by an
# empty one, which drops them from the nodes
POLICY_PEER_KINDS = ("namespaces", POD_PEERS_KIND)


def full_sync(content: Any) -> bool:
    """Whether a sync message's content is a node's full snapshot (on a connect without
    resume: every kind, "pods" always), not a partial sync (POLICY_PEER_KINDS only). Either
    replaces the node's cached objects of the kinds it holds, and those alone."""
    return isinstance(content, dict) and "pods" in content

# so do ingresses and ingress classes (its ingress proxy), with the TLS secrets they name
INGRESS_KINDS = ("ingresses", "ingressclasses")
DOWN_KINDS = ("pods", "configmaps", "secrets", "devices", "devicemodels", POD_TOKENS_KIND,
              *CLUSTER_WIDE_KINDS, *NETWORK_POLICY_KINDS, *INGRESS_KINDS, *VOLUME_KINDS)

# ---------------------------------------------------------------- volume cleanup (node to server)
# The node removed the directory of a deleted local-path volume: a reliable GROUP_RESOURCE
# message, operation OP_UPDATE, resource volume_cleaned_resource(name), content {"uid": the
# volume's uid}; the server then drops the volume's cleanup finalizer.

VOLUME_CLEANED = "cleaned"


def volume_cleaned_resource(name: str) -> str:
    """The resource key of a volume cleanup report: "persistentvolumes//<name>/cleaned"."""
    return f"persistentvolumes//{name}/{VOLUME_CLEANED}"


# ---------------------------------------------------------------- device status (node to server)
# A reliable GROUP_RESOURCE message, operation OP_UPDATE, resource
# device_status_resource(namespace, name), content DeviceReport.to_content(): what the node's
# device twin heard from the mapper since its last report (coalesced per report cycle).

DEVICES_KIND = "devices"
DEVICE_STATUS = "status"


def device_status_resource(namespace: str, name: str) -> str:
    """The resource key of a device status report: "devices/<namespace>/<name>/status"."""
    return f"{DEVICES_KIND}/{namespace}/{name}/{DEVICE_STATUS}"


@dataclass(frozen=True, slots=True)
class ReportedValue:
    """One reading of a twin: value, when the mapper reported it (ms), the model's type."""

    value: str
    timestamp: int
    type: str = "string"

    def to_content(self) -> dict:
        return {"value": self.value, "timestamp": self.timestamp, "type": self.type}

    @classmethod
    def from_content(cls, c: Any) -> ReportedValue:
        """ValueError when `c` is not such an object."""
        if not isinstance(c, dict) or not isinstance(c.get("value"), str):
            raise ValueError("a reported value needs a string value")
        return cls(c["value"], int(c.get("timestamp") or 0), str(c.get("type") or "string"))


@dataclass(frozen=True, slots=True)
class DeviceReport:
    """twins: the newest reading per twin; history: earlier readings of the same period,
    oldest first and bounded (the server writes only the newest); desired: the desired value
    the edge holds per twin (v1beta1 observedDesired); state/last_online from state/update."""

    twins: dict[str, ReportedValue] = field(default_factory=dict)
    history: dict[str, list[ReportedValue]] = field(default_factory=dict)
    desired: dict[str, ReportedValue] = field(default_factory=dict)
    state: str | None = None
    last_online: str | None = None

    def to_content(self) -> dict:
        out: dict[str, Any] = {"twins": {k: v.to_content() for k, v in self.twins.items()}}
        if self.history:
            out["history"] = {k: [v.to_content() for v in vs] for k, vs in self.history.items()}
        if self.desired:
            out["desired"] = {k: v.to_content() for k, v in self.desired.items()}
        if self.state is not None:
            out["state"] = self.state
        if self.last_online is not None:
            out["lastOnlineTime"] = self.last_online
        return out

    @classmethod
    def from_content(cls, c: Any) -> DeviceReport:
        """ValueError when `c` is not a device report."""
        if not isinstance(c, dict):
            raise ValueError("a device report is an object")
        twins, history, desired = (c.get(k, {}) for k in ("twins", "history", "desired"))
        if not all(isinstance(x, dict) for x in (twins, history, desired)) or \
                not all(isinstance(vs, list) for vs in history.values()):
            raise ValueError("a device report's twins, history and desired are objects")
        state, last = c.get("state"), c.get("lastOnlineTime")
        return cls({k: ReportedValue.from_content(v) for k, v in twins.items()},
                   {k: [ReportedValue.from_content(x) for x in vs] for k, vs in history.items()},
                   {k: ReportedValue.from_content(v) for k, v in desired.items()},
                   state if isinstance(state, str) else None,
                   last if isinstance(last, str) else None)


# ---------------------------------------------------------------- resource usage (node to server)
# A live (never queued, never resent) GROUP_RESOURCE message, operation OP_UPDATE, resource
# metrics_resource(node), content UsageReport.to_content(): the node's and its pods' CPU and
# memory usage over the last window, every --metrics-resolution. The server keeps only the
# newest report per node, in memory, as metrics-server keeps its last scrape.

METRICS_KIND = "metrics"


def metrics_resource(node: str) -> str:
    """The resource key of a usage report: "metrics//<node>"."""
    return f"{METRICS_KIND}//{node}"


@dataclass(frozen=True, slots=True)
class Usage:
    """CPU in nanocores (the average rate over the window) and memory in bytes (working set)."""

    cpu: int
    memory: int

    def to_content(self) -> dict:
        return {"cpu": self.cpu, "memory": self.memory}

    @classmethod
    def from_content(cls, c: Any) -> Usage:
        """ValueError when `c` is not such an object."""
        if not isinstance(c, dict):
            raise ValueError("a usage is an object")
        return cls(count(c.get("cpu"), "cpu"), count(c.get("memory"), "memory"))


@dataclass(frozen=True, slots=True)
class PodUsage:
    """One pod's containers' usage, by container name."""

    namespace: str
    name: str
    uid: str
    containers: dict[str, Usage] = field(default_factory=dict)

    def to_content(self) -> dict:
        return {"namespace": self.namespace, "name": self.name, "uid": self.uid,
                "containers": {k: v.to_content() for k, v in self.containers.items()}}

    @classmethod
    def from_content(cls, c: Any) -> PodUsage:
        if not isinstance(c, dict) or not isinstance(c.get("containers"), dict):
            raise ValueError("a pod usage is an object with containers")
        names = [c.get(k) for k in ("namespace", "name", "uid")]
        if not all(isinstance(n, str) and n for n in names):
            raise ValueError("a pod usage needs a namespace, a name and a uid")
        return cls(*names, {str(k): Usage.from_content(v)
                            for k, v in c["containers"].items()})


@dataclass(frozen=True, slots=True)
class UsageReport:
    """timestamp: when the newer of the two samples was taken (seconds since the epoch);
    window: seconds between the two samples the CPU rates come from."""

    timestamp: float
    window: float
    node: Usage
    pods: tuple[PodUsage, ...] = ()

    def to_content(self) -> dict:
        return {"timestamp": self.timestamp, "window": self.window,
                "node": self.node.to_content(), "pods": [p.to_content() for p in self.pods]}

    @classmethod
    def from_content(cls, c: Any) -> UsageReport:
        """ValueError when `c` is not a usage report."""
        if not isinstance(c, dict) or not isinstance(c.get("pods", []), list):
            raise ValueError("a usage report is an object with a list of pods")
        ts, window = c.get("timestamp"), c.get("window")
        if not isinstance(ts, int | float) or not isinstance(window, int | float) or \
                window <= 0:
            raise ValueError("a usage report needs a timestamp and a window > 0")
        return cls(float(ts), float(window), Usage.from_content(c.get("node")),
                   tuple(PodUsage.from_content(p) for p in c.get("pods") or []))


# ---------------------------------------------------------------- streams
# A stream request is a GROUP_STREAM message with no parent: route.operation is one of
# STREAM_*, content the request's to_content(), and its id becomes the stream id. Frames of an
# open stream name the stream as their parent; their route.operation is one of FRAME_*.

STREAM_LOG = "log"
STREAM_EXEC = "exec"
STREAM_ATTACH = "attach"
STREAM_PORTFORWARD = "portforward"
# node to server, then server to the node that holds the address: a TCP connection to a pod
# IP that the first node cannot route to (ConnectRequest); frames as port-forward's
STREAM_CONNECT = "connect"

# node to server
FRAME_DATA = "data"              # {"data": base64, "fd": 1 or 2 (exec, attach)}; also server
                                 # to node for port-forward
FRAME_EXIT = "exit"              # {"code": exit code}: exec/attach ended
FRAME_ERROR = "error"            # {"code", "reason", "message"}: the stream failed, it is over
FRAME_CLOSE = "close"            # the stream ended; server to node: stop serving it
# server to node
FRAME_STDIN = "stdin"            # {"data": base64}
FRAME_STDIN_CLOSE = "stdin-close"
FRAME_RESIZE = "resize"          # {"Width": cols, "Height": rows}, as kubectl sends it
FRAME_DATA_CLOSE = "data-close"  # port-forward: the client half-closed its connection
# both ways, on a flow-controlled connect or port-forward stream (the request's "flow"):
# {"bytes": n}, the receiver handed n more bytes on and the sender may send that many more
# (flowcontrol.py)
FRAME_CREDIT = "credit"
# server to the node that opened a connect stream asking for flow control, first on the
# stream: {"flow": false}, the node at the other end does not do it (an older agent), so
# neither end counts a window
FRAME_FLOW = "flow"


def flow_off_content() -> dict:
    return {"flow": False}


def content_flow_off(content: Any) -> bool:
    """True when a FRAME_FLOW frame turns the stream's flow control off."""
    return isinstance(content, dict) and content.get("flow") is False


def data_content(data: bytes, fd: int | None = None) -> dict:
    """The content of a FRAME_DATA or FRAME_STDIN frame (`fd`: exec/attach output only)."""
    encoded = base64.b64encode(data).decode()
    return {"data": encoded} if fd is None else {"fd": fd, "data": encoded}


def content_data(content: Any) -> bytes:
    """The bytes a FRAME_DATA or FRAME_STDIN frame carries."""
    return base64.b64decode((content or {}).get("data") or "")


def data_length(content: Any) -> int:
    """How many bytes a FRAME_DATA frame carries, without decoding them."""
    encoded = (content if isinstance(content, dict) else {}).get("data")
    if not isinstance(encoded, str):
        return 0
    return len(encoded) * 3 // 4 - encoded[-2:].count("=")


def credit_content(n: int) -> dict:
    return {"bytes": n}


def content_credit(content: Any) -> int:
    """The bytes a FRAME_CREDIT frame grants (0 for a malformed one)."""
    n = (content if isinstance(content, dict) else {}).get("bytes")
    return n if isinstance(n, int) and n > 0 else 0


@dataclass(frozen=True, slots=True)
class LogRequest:
    """pods/log: the query's values as kubectl gave them (strings, None when absent)."""

    namespace: str
    pod: str
    uid: str
    container: str
    follow: bool = False
    tail_lines: str | None = None
    since_seconds: str | None = None
    since_time: str | None = None
    timestamps: bool = False
    previous: bool = False
    limit_bytes: str | None = None

    def to_content(self) -> dict:
        return {"namespace": self.namespace, "pod": self.pod, "uid": self.uid,
                "container": self.container, "follow": self.follow,
                "tailLines": self.tail_lines, "sinceSeconds": self.since_seconds,
                "sinceTime": self.since_time, "timestamps": self.timestamps,
                "previous": self.previous, "limitBytes": self.limit_bytes}

    @classmethod
    def from_content(cls, c: Any) -> LogRequest:
        c = c if isinstance(c, dict) else {}
        return cls(c.get("namespace") or "", c.get("pod") or "", c.get("uid") or "",
                   c.get("container") or "", bool(c.get("follow")), c.get("tailLines"),
                   c.get("sinceSeconds"), c.get("sinceTime"), bool(c.get("timestamps")),
                   bool(c.get("previous")), c.get("limitBytes"))


@dataclass(frozen=True, slots=True)
class ExecRequest:
    """pods/exec and pods/attach (attach: no command)."""

    namespace: str
    pod: str
    uid: str
    container: str
    command: list[str] = field(default_factory=list)
    stdin: bool = False
    tty: bool = False

    def to_content(self) -> dict:
        return {"namespace": self.namespace, "pod": self.pod, "uid": self.uid,
                "container": self.container, "command": list(self.command),
                "stdin": self.stdin, "tty": self.tty}

    @classmethod
    def from_content(cls, c: Any) -> ExecRequest:
        c = c if isinstance(c, dict) else {}
        return cls(c.get("namespace") or "", c.get("pod") or "", c.get("uid") or "",
                   c.get("container") or "", [str(x) for x in c.get("command") or []],
                   bool(c.get("stdin")), bool(c.get("tty")))


@dataclass(frozen=True, slots=True)
class PortForwardRequest:
    """pods/portforward: one forwarded connection to `port` on the pod's localhost. `flow`:
    the stream is flow controlled (the server sets it when the node named FEATURE_FLOW_CONTROL;
    a request without it comes from an older server, which sends no credit)."""

    namespace: str
    pod: str
    uid: str
    port: int = 0
    flow: bool = False

    def to_content(self) -> dict:
        return {"namespace": self.namespace, "pod": self.pod, "uid": self.uid,
                "port": self.port, "flow": self.flow}

    @classmethod
    def from_content(cls, c: Any) -> PortForwardRequest:
        c = c if isinstance(c, dict) else {}
        return cls(c.get("namespace") or "", c.get("pod") or "", c.get("uid") or "",
                   int(c.get("port") or 0), c.get("flow") is True)


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """A TCP connection (or, `protocol` "udp", a UDP flow: one datagram per data frame) to
    `ip`:`port`, a pod IP in the pod CIDR of the node that serves it (the tunnel path to
    nodes that cannot be routed to: docs/networking.md). `flow`: from a node, it asks for
    flow control; from the server, the stream is flow controlled (absent: an older peer,
    not)."""

    ip: str
    port: int
    protocol: str = "tcp"
    flow: bool = False

    def to_content(self) -> dict:
        out: dict = {"ip": self.ip, "port": self.port, "flow": self.flow}
        if self.protocol != "tcp":
            out["protocol"] = self.protocol
        return out

    @classmethod
    def from_content(cls, c: Any) -> ConnectRequest:
        """ValueError unless `c` names an IPv4 address, a port in 1..65535 and tcp or udp."""
        c = c if isinstance(c, dict) else {}
        ip, port = str(c.get("ip") or ""), c.get("port")
        protocol = c.get("protocol") or "tcp"
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"invalid port {port!r}")
        if protocol not in ("tcp", "udp"):
            raise ValueError(f"unsupported protocol {protocol!r}")
        if not isinstance(ipaddress.ip_address(ip), ipaddress.IPv4Address):
            raise ValueError(f"not an IPv4 address: {ip!r}")
        return cls(ip, port, protocol, c.get("flow") is True)
