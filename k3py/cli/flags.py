"""The one table of flags: each flag is also an env var (K3PY_<FLAG_NAME>) and a config.yaml key
(its long name). Precedence: flag > env var > config file > default (k3py.config).

Any problem raises UsageError, which the CLI prints as one `k3py: error: ...` line, exit 1.
A flag (or --disable value) that k3py accepts from K3s but does not implement yet is refused
by name, from whichever source set it, rather than silently ignored."""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any
from urllib.parse import urlsplit

import yaml

from k3py import PROGRAM
from k3py.config import (
    DEFAULT_CONFIG_FILE,
    AgentConfig,
    NodeConfig,
    ServerConfig,
    SnapshotConfig,
    redact_endpoint,
)

__all__ = ["Flag", "FLAGS", "UsageError", "HelpRequested", "parse", "flags_for", "env_name",
           "help_text", "server_config", "agent_config", "snapshot_config", "ENV_PREFIX"]

ENV_PREFIX = PROGRAM.upper()
CONFIG_ENV = f"{ENV_PREFIX}_CONFIG_FILE"


class UsageError(Exception):
    """A mistake the user must fix; the message is one line that says what to do."""


class HelpRequested(Exception):
    """--help was given; the message is the help text for stdout, exit 0."""


def env_name(flag: str) -> str:
    return f"{ENV_PREFIX}_{flag.upper().replace('-', '_')}"


# ---- value checks: each returns the (normalised) value or raises ValueError("expected ...")

def _port(v: int) -> int:
    if not 1 <= v <= 65535:
        raise ValueError("expected a port number 1-65535")
    return v


def _ip(v: str) -> str:
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        raise ValueError("expected an IP address such as 192.168.1.10") from None


def _node_ips(v: str) -> str:
    """One IP, or an IPv4 and an IPv6 address separated by a comma (dual-stack)."""
    ips = [_ip(p.strip()) for p in v.split(",")]
    if len(ips) > 2 or len({":" in ip for ip in ips}) != len(ips):
        raise ValueError("expected one IP, or an IPv4 and an IPv6 address separated by a "
                         "comma")
    return ",".join(ips)


def _bind_ip(v: str) -> str:
    return v if v == "localhost" else _ip(v)


def _loopback_bind(v: str) -> str:
    """--mqtt-bind: loopback only, the embedded broker having neither TLS nor authentication."""
    if v != "localhost" and not ipaddress.ip_address(_ip(v)).is_loopback:
        raise ValueError("the embedded MQTT broker has neither TLS nor authentication, so it "
                         "listens on loopback only (127.0.0.1, ::1); for devices on other "
                         "hosts use a TLS broker: --mqtt-mode external --mqtt-server ssl://...")
    return v


def _cidrs(v: str) -> str:
    """One CIDR, or one IPv4 and one IPv6 CIDR separated by a comma (dual-stack)."""
    from k3py.api.dualstack import parse_cidrs
    parse_cidrs(v)
    return v


def _node_mask(v: int) -> int:
    if not 8 <= v <= 30:
        raise ValueError("expected a prefix length 8-30 (24 gives each node 254 pod IPs)")
    return v


def _domain(v: str) -> str:
    v = v.strip().strip(".").lower()
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}"
                        r"[a-z0-9])?)*", v):
        raise ValueError("expected a DNS domain such as cluster.local")
    return v


def _port_range(v: str) -> str:
    m = re.fullmatch(r"(\d+)-(\d+)", v.strip())
    if not m or not 1 <= int(m[1]) <= int(m[2]) <= 65535:
        raise ValueError("expected a port range LOW-HIGH such as 30000-32767")
    return f"{int(m[1])}-{int(m[2])}"


def _mode(v: str) -> str:
    try:
        mode = int(v, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise ValueError("expected an octal file mode such as 0600 or 644")
    return f"{mode:04o}"


def _non_negative(v: float) -> float:
    if v < 0:
        raise ValueError("expected a number >= 0")
    return v


def _positive(v: float) -> float:
    if v <= 0:
        raise ValueError("expected a number > 0")
    return v


def _unix_endpoint(v: str) -> str:
    if not v.startswith("unix:///"):
        raise ValueError("expected a podman API socket such as unix:///run/podman/podman.sock")
    return v


def _https_url(v: str) -> str:
    parts = urlsplit(v)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError("expected the server's URL such as https://192.168.1.10:6443")
    return v.rstrip("/")


def _datastore_endpoint(v: str) -> str:
    if not v:  # the embedded SQLite store
        return v
    parts = urlsplit(v)
    if parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
        raise ValueError("expected a PostgreSQL endpoint such as "
                         "postgres://user:pass@db.example:5432/k3py?sslmode=require "
                         "(k3py supports only PostgreSQL as an external datastore)")
    return v


def _existing_file(v: str) -> str:
    if not os.path.isfile(v):
        raise ValueError("expected an existing file")
    return v


def _duration(v: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", v)
    if not m or float(m[1]) <= 0:
        raise ValueError("expected a duration such as 2s, 500ms, 1m or 24h")
    return float(m[1]) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}[m[2]]


def _ttl(v: str) -> float:
    return 0.0 if v.strip() == "0" else _duration(v)


# the kube-controller-manager flags k3py's built-in controllers read (K3s passes any)
_CONTROLLER_MANAGER_ARGS = ("horizontal-pod-autoscaler-sync-period",
                            "horizontal-pod-autoscaler-downscale-stabilization",
                            "horizontal-pod-autoscaler-tolerance",
                            "node-monitor-grace-period", "node-monitor-period")
_GO_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h))+")
_GO_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _controller_manager_args(items: tuple[str, ...]) -> tuple[str, ...]:
    """name=value items; durations (Go form: 15s, 5m0s) and the tolerance become seconds
    and a number, so the config reads plain floats."""
    out = []
    for item in items:
        key, eq, value = item.partition("=")
        if key not in _CONTROLLER_MANAGER_ARGS or not eq:
            raise ValueError(f"expected name=value with name one of "
                             f"{', '.join(_CONTROLLER_MANAGER_ARGS)}, got {item!r}")
        if key.endswith("tolerance"):
            try:
                number = float(value)
            except ValueError:
                number = -1.0
            if number < 0:
                raise ValueError(f"{key}: expected a number >= 0, got {value!r}")
        elif _GO_DURATION.fullmatch(value):
            number = sum(float(n) * _GO_UNITS[u]
                         for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", value))
        else:
            raise ValueError(f"{key}: expected a duration such as 15s or 5m0s, got {value!r}")
        if key.startswith("node-monitor") and number <= 0:  # a period of 0 would spin
            raise ValueError(f"{key}: expected a duration above 0, got {value!r}")
        out.append(f"{key}={number:g}")
    return tuple(out)


def _broker_url(v: str) -> str:
    parts = urlsplit(v)
    if parts.scheme not in ("tcp", "mqtt", "ssl", "mqtts") or not parts.hostname:
        raise ValueError("expected an MQTT broker URL such as tcp://127.0.0.1:1883")
    return v


_MQTT_MODES = ("internal", "external", "both")


def _mqtt_mode(v: str) -> str:
    if v.lower() not in _MQTT_MODES:
        raise ValueError(f"expected one of {', '.join(_MQTT_MODES)}")
    return v.lower()


def _labels(items: tuple[str, ...]) -> tuple[str, ...]:
    # imported here: `k3py mapper` reads this module and loads no k3py.api code
    from k3py.api.nodelabels import label_allowed_for_node
    for item in items:
        key, eq, _ = item.partition("=")
        if not eq or not key:
            raise ValueError(f"expected key=value labels, got {item!r}")
        if not label_allowed_for_node(key):
            raise ValueError(f"a node may not give itself the label {key!r} (NodeRestriction); "
                             f"label the Node with kubectl instead")
    return items


_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def _taints(items: tuple[str, ...]) -> tuple[str, ...]:
    for item in items:
        key_value, _, effect = item.rpartition(":")
        if not key_value or key_value.startswith("=") or effect not in _EFFECTS:
            raise ValueError(f"expected key=value:Effect taints with Effect one of "
                             f"{', '.join(_EFFECTS)}, got {item!r}")
    return items


# The packaged components of K3s that `--disable` names (traefik, servicelb, local-storage,
# coredns) -> why k3py cannot disable them: it does not deploy any of them yet. A component
# k3py does deploy moves out of here into a `disable` field that its deployer reads.
_NOT_YET_COMPONENTS = {
    "dns": "k3py deploys no cluster DNS",
}
# The components k3py deploys, each read from ServerConfig.disable by its deployer.
_COMPONENTS = ("dashboard", "ingress", "local-storage", "metrics-server", "servicelb")
# K3s's names of the same components, read as k3py's
_COMPONENT_ALIASES = {"traefik": "ingress"}


def _components(items: tuple[str, ...]) -> tuple[str, ...]:
    known = (*_COMPONENTS, *_COMPONENT_ALIASES, *_NOT_YET_COMPONENTS)
    for item in items:
        if item not in known:
            raise ValueError(f"expected components from {', '.join(known)}, got {item!r}")
    return tuple(dict.fromkeys(_COMPONENT_ALIASES.get(item, item) for item in items))


SERVER, AGENT, TOKEN, AIRGAP = "server", "agent", "token", "airgap"
SECRETS = "secrets-encrypt"
DASHBOARD_URL = "dashboard-url"
SNAPSHOT = "snapshot"
CHECK_CONFIG = "check-config"
PODS = "agent pods"  # the node's pods from its local state
_BOTH = (SERVER, AGENT)


@dataclass(frozen=True)
class Flag:
    name: str  # the long name without dashes; also the config.yaml key
    kind: type  # str, int, float, bool, or list (repeatable; values may be comma-separated)
    help: str  # "(section) what it does", K3s style; the default is added from k3py.config
    commands: tuple[str, ...] = _BOTH
    short: str = ""  # one letter, as K3s: -c, -d, -t, -s
    env_aliases: tuple[str, ...] = ()  # K3s-style names read before the derived one
    check: Callable[[Any], Any] | None = None
    default_help: str = ""  # shown instead of the dataclass default (e.g. "hostname")
    # accepted (K3s has it) but not implemented: why, for the one-line refusal at start;
    # such a flag has no config field
    not_implemented: str = ""
    # values of a list flag that are refused by name, each with why (--disable)
    not_implemented_values: tuple[tuple[str, str], ...] = ()
    # (command, other long name) pairs: K3s's second names, e.g. `etcd-snapshot --dir`
    aliases: tuple[tuple[str, str], ...] = ()

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env_vars(self) -> tuple[str, ...]:
        return (*self.env_aliases, env_name(self.name))


FLAGS: tuple[Flag, ...] = (
    Flag("config", str, "(config) Load configuration from FILE",
         (*_BOTH, TOKEN, AIRGAP, PODS, SNAPSHOT, CHECK_CONFIG),
         short="c",
         env_aliases=(CONFIG_ENV,), default_help=DEFAULT_CONFIG_FILE),
    Flag("debug", bool, "(logging) Turn on debug logs"),
    # listener
    Flag("bind-address", str, "(listener) k3py bind address", (SERVER,), check=_bind_ip),
    Flag("https-listen-port", int, "(listener) HTTPS listen port (API and node tunnel)",
         (SERVER,), check=_port),
    Flag("advertise-address", str, "(listener) IP address that the apiserver advertises to "
         "members of the cluster", (SERVER,), check=_ip, default_help="node-ip"),
    Flag("tls-san", list, "(listener) Add additional hostnames or IPv4/IPv6 addresses as "
         "Subject Alternative Names on the server TLS cert", (SERVER,)),
    # data
    Flag("data-dir", str, "(data) Folder to hold state",
         (*_BOTH, TOKEN, SECRETS, DASHBOARD_URL, PODS, SNAPSHOT, CHECK_CONFIG),
         short="d"),
    Flag("default-local-storage-path", str, "(storage) Default local storage path for local "
         "provisioner storage class (on an agent: where it may remove deleted volumes' "
         "directories; the server's path)", _BOTH, default_help="<data-dir>/storage"),
    # networking
    Flag("cluster-cidr", str, "(networking) IPv4/IPv6 network CIDRs to use for pod IPs (one, "
         "or an IPv4 and an IPv6 CIDR separated by a comma for dual-stack)",
         (SERVER,), check=_cidrs),
    Flag("node-cidr-mask-size", int, "(networking) Size of each node's IPv4 pod CIDR out of "
         "the cluster CIDR (IPv6: /64)", (SERVER,), check=_node_mask),
    Flag("service-cidr", str, "(networking) IPv4/IPv6 network CIDRs to use for service IPs "
         "(one, or an IPv4 and an IPv6 CIDR separated by a comma for dual-stack)",
         (SERVER,), check=_cidrs),
    Flag("service-node-port-range", str, "(networking) Port range to reserve for services "
         "with NodePort visibility", (SERVER,), check=_port_range),
    Flag("cluster-dns", str, "(networking) IPv4 Cluster IP for the DNS service; should be in "
         "your service-cidr range", (SERVER,), check=_ip,
         default_help="10th address of the service CIDR (10.43.0.10)"),
    Flag("cluster-domain", str, "(networking) Cluster Domain", (SERVER,), check=_domain),
    # client
    Flag("write-kubeconfig", str, "(client) Write kubeconfig for admin client to this file",
         (SERVER,), short="o", env_aliases=(f"{ENV_PREFIX}_KUBECONFIG_OUTPUT",)),
    Flag("write-kubeconfig-mode", str, "(client) Write kubeconfig with this mode", (SERVER,),
         env_aliases=(f"{ENV_PREFIX}_KUBECONFIG_MODE",), check=_mode),
    # cluster
    Flag("token", str, "(cluster) Shared secret used to join agents to the cluster",
         short="t"),
    Flag("token-file", str, "(cluster) File containing the token"),
    Flag("server", str, "(cluster) Server to connect to (a server: another server of the "
         "cluster, whose CAs and token it takes from the shared datastore)",
         (*_BOTH, SECRETS, TOKEN, DASHBOARD_URL), short="s",
         env_aliases=(f"{ENV_PREFIX}_URL",), check=_https_url),
    Flag("ttl", str, "(token) How long a created bootstrap token lasts (24h, 30m; 0: "
         "forever)", (TOKEN,), check=_ttl, default_help="24h"),
    Flag("description", str, "(token) A created bootstrap token's description", (TOKEN,)),
    # db
    Flag("datastore-endpoint", str, "(db) PostgreSQL data source name for a datastore shared "
         "by several servers (postgres://user:pass@host:port/db?sslmode=...); default: the "
         "embedded SQLite store in <data-dir>/server/db", (SERVER, SNAPSHOT),
         check=_datastore_endpoint),
    Flag("datastore-cafile", str, "(db) TLS Certificate Authority file used to secure "
         "datastore backend communication", (SERVER,), check=_existing_file),
    Flag("datastore-certfile", str, "(db) TLS certification file used to secure datastore "
         "backend communication", (SERVER,), check=_existing_file),
    Flag("datastore-keyfile", str, "(db) TLS key file used to secure datastore backend "
         "communication", (SERVER,), check=_existing_file),
    Flag("compact-interval", float, "(db) Seconds between compactions of old revisions",
         (SERVER,), check=_non_negative),
    Flag("compact-min-retain", int, "(db) Number of newest revisions compaction always keeps",
         (SERVER,), check=_non_negative),
    Flag("leader-elect-lease-duration", float, "(db) Seconds a server's leadership of the "
         "controllers or the scheduler lasts without renewal before another server takes over",
         (SERVER,), check=_positive),
    Flag("leader-elect-renew-deadline", float, "(db) Seconds the leader keeps trying to renew "
         "before it stops its controllers", (SERVER,), check=_positive),
    Flag("leader-elect-retry-period", float, "(db) Seconds between attempts to acquire or "
         "renew leadership", (SERVER,), check=_positive),
    # components
    Flag("disable", list, "(components) Do not deploy packaged components "
         f"({', '.join((*_COMPONENTS, *_NOT_YET_COMPONENTS))})", (SERVER,), check=_components,
         not_implemented_values=tuple(_NOT_YET_COMPONENTS.items())),
    Flag("kube-controller-manager-arg", list, "(flags) Customized flag for the built-in "
         "controllers, as for kube-controller-manager (k3py reads "
         f"{', '.join(_CONTROLLER_MANAGER_ARGS)})", (SERVER,), check=_controller_manager_args),
    Flag("disable-agent", bool, "(components) Do not run a local agent and register a local "
         "node", (SERVER,)),
    Flag("disable-network-policy", bool, "(components) Disable the network policy "
         "enforcement on every node (NetworkPolicy objects are kept but not applied)",
         (SERVER,)),
    Flag("dashboard-read-only", bool, "(components) The web dashboard refuses every write "
         "(its users may only look)", (SERVER,)),
    Flag("max-requests-inflight", int, "(security) Read-only API requests served at once; "
         "more get 429 (0: no limit)", (SERVER,)),
    Flag("max-mutating-requests-inflight", int, "(security) Mutating API requests served at "
         "once; more get 429 (0: no limit)", (SERVER,)),
    Flag("request-timeout", float, "(security) Seconds before an API request (not a watch or "
         "stream) is answered 504", (SERVER,)),
    Flag("audit-log-path", str, "(security) Write an audit log (audit.k8s.io/v1 Events, one "
         "JSON line each) to this file", (SERVER,)),
    Flag("audit-policy-file", str, "(security) Audit Policy (audit.k8s.io/v1) choosing what is "
         "logged at which level (health checks never are)", (SERVER,),
         default_help="Metadata for every request but the servers' node-report POSTs to each "
                      "other; no RequestReceived stage"),
    Flag("audit-log-maxsize", int, "(security) Size in MB at which the audit log rotates "
         "(0: never)", (SERVER,)),
    Flag("audit-log-maxbackup", int, "(security) Rotated audit logs kept", (SERVER,)),
    Flag("pod-security-admission-config-file", str, "(security) AdmissionConfiguration with "
         "the PodSecurity plug-in's cluster-wide defaults and exemptions", (SERVER,),
         default_help="unlabelled namespaces are privileged"),
    Flag("secrets-encryption", bool, "(security) Encrypt Secrets at rest (AES-GCM; keys in "
         "<data-dir>/server/cred/encryption-config.json); =false writes new ones in plain",
         (SERVER,)),
    # node
    Flag("node-name", str, "(agent/node) Node name", (*_BOTH, PODS, SNAPSHOT),
         default_help="hostname"),
    Flag("with-node-id", bool, "(agent/node) Append a persistent random id to the node name",
         (*_BOTH, PODS, SNAPSHOT)),
    Flag("node-label", list, "(agent/node) Registering the node with a set of labels "
         "(key=value)", check=_labels),
    Flag("node-taint", list, "(agent/node) Registering the node with a set of taints "
         "(key=value:Effect)", check=_taints),
    Flag("node-eviction-timeout", float, "(agent/node) Seconds an unreachable node keeps its "
         "pods before they are evicted; 0 = never (edge autonomy)", (SERVER,),
         check=_non_negative),
    Flag("node-ip", str, "(agent/networking) IP address to advertise for node (dual-stack: "
         "an IPv4 and an IPv6 address separated by a comma)", check=_node_ips,
         default_help="address of the default route"),
    Flag("ingress-http-port", int, "(agent/networking) Port of the node's ingress proxy for "
         "HTTP", check=_port),
    Flag("ingress-https-port", int, "(agent/networking) Port of the node's ingress proxy for "
         "HTTPS", check=_port),
    Flag("podman-root", str, "(agent/runtime) Run podman with its own storage under DIR "
         "(DIR/storage, DIR/run, DIR/tmp), e.g. for several agents on one machine",
         (*_BOTH, AIRGAP, PODS),
         default_help="podman's own storage"),
    Flag("container-runtime-endpoint", str, "(agent/runtime) The podman API socket to use "
         "(unix:///PATH)", check=_unix_endpoint,
         default_help="a running system service, else one the agent starts on "
                      "<data-dir>/agent/podman.sock"),
    # devices (agent/devices: the node's MQTT event bus and device twin)
    Flag("mqtt-mode", str, "(agent/devices) MQTT broker of the node: internal (embedded), "
         "external (--mqtt-server) or both", check=_mqtt_mode),
    Flag("mqtt-server", str, "(agent/devices) External MQTT broker, tcp://HOST:PORT or "
         "ssl://HOST:PORT (modes external and both)", check=_broker_url),
    Flag("mqtt-username", str, "(agent/devices) User name on the external MQTT broker"),
    Flag("mqtt-password", str, "(agent/devices) Password on the external MQTT broker"),
    Flag("mqtt-ca-file", str, "(agent/devices) CA bundle of an ssl:// external broker",
         default_help="the system's CAs"),
    Flag("mqtt-cert-file", str, "(agent/devices) Client certificate for an ssl:// external "
         "broker"),
    Flag("mqtt-key-file", str, "(agent/devices) Client key for an ssl:// external broker"),
    Flag("mqtt-bind", str, "(agent/devices) Loopback address of the embedded MQTT broker "
         "(it has no TLS or authentication, so it is never exposed)", check=_loopback_bind),
    Flag("mqtt-port", int, "(agent/devices) Port of the embedded MQTT broker", check=_port),
    Flag("dashboard-port", int, "(agent/dashboard) Serve the node's own read-only dashboard "
         "(its pods and their logs, devices, MQTT traffic, from its local cache: works while "
         "the server is unreachable) on this port; log in with <data-dir>/agent/"
         "dashboard-token", (AGENT,), check=_port, default_help="off"),
    Flag("dashboard-bind", str, "(agent/dashboard) Address of the node's dashboard; an address "
         "that is not loopback is served over TLS (a certificate of its own)", (AGENT,),
         check=_bind_ip),
    Flag("device-offline-after", str, "(agent/devices) Mapper silence after which a device "
         "goes offline (2s, 500ms, 1m)", check=_duration,
         default_help="3 x the device's report cycle"),
    Flag("metrics-resolution", str, "(agent/node) How often the node reports its and its "
         "pods' CPU and memory usage, for kubectl top and autoscaling (15s, 2s)",
         check=_duration, default_help="15s"),
)

_CONFIG_FLAG = next(f for f in FLAGS if f.name == "config")
_CONFIG_CLASSES: dict[str, type] = {SERVER: ServerConfig, AGENT: AgentConfig,
                                    TOKEN: ServerConfig, AIRGAP: AgentConfig,
                                    PODS: AgentConfig, SNAPSHOT: SnapshotConfig,
                                    CHECK_CONFIG: ServerConfig}


def flags_for(command: str) -> tuple[Flag, ...]:
    return tuple(f for f in FLAGS if command in f.commands)


def default_of(flag: Flag, command: str) -> Any:
    for f in fields(_CONFIG_CLASSES.get(command, ServerConfig)):
        if f.name == flag.attr and f.default is not MISSING:
            return f.default
    return None


_KIND_WORDS = {bool: "true or false", int: "a whole number", float: "a number",
               list: "a list of strings", str: "a string"}


def _convert(flag: Flag, raw: Any) -> Any:
    """Raw text (flag, env) or YAML value (config file) -> the typed, checked value."""
    if flag.kind is bool:
        if isinstance(raw, bool):
            return raw
        s = str(raw).strip().lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected {_KIND_WORDS[bool]}")
    if flag.kind is list:
        items = raw if isinstance(raw, list) else [raw]
        if any(isinstance(x, (dict, list)) or x is None for x in items):
            raise ValueError("expected a list of strings")
        value: Any = tuple(p.strip() for x in items for p in str(x).split(",") if p.strip())
    elif isinstance(raw, (dict, list, bool)) or raw is None:
        raise ValueError(f"expected {_KIND_WORDS[flag.kind]}")
    elif flag.kind is int:
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise ValueError(f"expected {_KIND_WORDS[int]}") from None
    elif flag.kind is float:
        try:
            value = float(str(raw).strip())
        except ValueError:
            raise ValueError(f"expected {_KIND_WORDS[float]}") from None
    else:
        value = str(raw)
    return flag.check(value) if flag.check else value


def _checked(flag: Flag, raw: Any, where: str) -> Any:
    try:
        return _convert(flag, raw)
    except ValueError as e:
        shown = raw if isinstance(raw, str) else yaml.safe_dump(raw, default_flow_style=True
                                                                ).strip().removesuffix("...")
        if flag.name == "datastore-endpoint":
            shown = redact_endpoint(str(shown))
        raise UsageError(f"invalid value {str(shown).strip()!r} for {where}: {e}") from None


def _suggest(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=1)
    return f" (did you mean --{close[0]}?)" if close else ""


def _load_config_file(path: str, explicit: bool) -> dict[str, Any]:
    how = f"--config or {CONFIG_ENV}"
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        if explicit:
            raise UsageError(f"config file {path} does not exist; create it or fix "
                             f"{how}") from None
        return {}
    except IsADirectoryError:
        raise UsageError(f"config file {path} is a directory; point {how} at a "
                         f"YAML file") from None
    except PermissionError:
        raise UsageError(f"cannot read config file {path}: permission denied; run as root "
                         f"or make it readable") from None
    except OSError as e:
        raise UsageError(f"cannot read config file {path}: {e.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise UsageError(f"config file {path} is not valid YAML{at} ({problem}); "
                         f"fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must be a mapping of flag names to values, "
                         f"e.g. 'https-listen-port: 6443'")
    return data


def _scan_argv(argv: list[str], command: str, flags: tuple[Flag, ...],
               positional: list[str] | None) -> dict[str, Any]:
    by_long = {f.name: f for f in flags}
    by_long.update({alias: f for f in flags for cmd, alias in f.aliases if cmd == command})
    by_short = {f.short: f for f in flags if f.short}
    see = f"run '{PROGRAM} {command} --help' for the flags"
    given: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg in ("-h", "--help"):
            raise HelpRequested(help_text(command))
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg[2:].partition("=")
            flag = by_long.get(name)
            shown = f"--{name}"
        elif arg.startswith("-") and len(arg) > 1 and arg != "--":
            name, eq, value = arg[1:].partition("=")
            flag = by_short.get(name)
            shown = f"-{name}"
        elif positional is not None:
            positional.append(arg)
            continue
        else:
            raise UsageError(f"unexpected argument {arg!r} for '{PROGRAM} {command}'; {see}")
        if flag is None:
            hint = _suggest(name, list(by_long))
            raise UsageError(f"unknown flag {shown} for '{PROGRAM} {command}'{hint}; {see}")
        if eq:
            raw: Any = value
        elif flag.kind is bool:
            raw = True
        elif i < len(argv):
            raw = argv[i]
            i += 1
        else:
            raise UsageError(f"flag --{flag.name} needs a value, e.g. --{flag.name} VALUE")
        converted = _checked(flag, raw, f"--{flag.name}")
        if flag.kind is list:
            converted = given.get(flag.attr, ()) + converted
        given[flag.attr] = converted
    return given


def parse(argv: list[str], command: str, environ: Mapping[str, str] | None = None, *,
          positional: list[str] | None = None) -> dict[str, Any]:
    """Flags of `command` (server, agent, token or airgap) from argv, the environment and the
    config file -> {config field: value} for what was set anywhere; unset fields keep their
    dataclass default. `config` is the config file that was read ("" when none). A flag
    that is not implemented raises UsageError naming the source that set it. Arguments that
    are not flags go to `positional` when given (else they are an error)."""
    env = os.environ if environ is None else environ
    flags = flags_for(command)
    given = _scan_argv(argv, command, flags, positional)

    config_path, explicit = given.get("config", ""), True
    if not config_path:
        config_path = next((env[n] for n in _CONFIG_FLAG.env_vars if env.get(n)), "")
    if not config_path:
        config_path, explicit = DEFAULT_CONFIG_FILE, False
    file_values = _load_config_file(config_path, explicit)

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}  # field -> where it was set: a config file, env var, or ""
    all_by_name = {f.name: f for f in FLAGS}
    for key, raw in file_values.items():
        flag = all_by_name.get(str(key))
        if flag is None or flag.name == "config":
            hint = _suggest(str(key), [f.name for f in FLAGS if f.name != "config"])
            hint = hint.replace("--", "") if hint else ""
            raise UsageError(f"unknown key {str(key)!r} in config file {config_path}{hint}; "
                             f"keys are long flag names, see '{PROGRAM} {command} --help'")
        if command not in flag.commands:
            continue  # one config.yaml serves server and agent, as in K3s
        values[flag.attr] = _checked(flag, raw, f"{key!r} in config file {config_path}")
        sources[flag.attr] = config_path

    for flag in flags:
        for var in flag.env_vars:
            if env.get(var, "") != "":
                values[flag.attr] = _checked(flag, env[var], f"{var} (--{flag.name})")
                sources[flag.attr] = var
                break

    values.update(given)
    sources.update({attr: "" for attr in given})
    for flag in flags:
        if (flag.not_implemented or flag.not_implemented_values) and values.get(flag.attr):
            _refuse_not_implemented(flag, values[flag.attr], command, sources[flag.attr])
    values["config"] = config_path if (file_values or explicit) else ""
    return values


def _refuse_not_implemented(flag: Flag, value: Any, command: str, source: str) -> None:
    """One line naming the flag, why it does nothing yet, and the source to remove it from:
    the command line (source ""), an env var (K3PY_...) or a config file (its path)."""
    head = f"'{PROGRAM} {command}' does not implement --{flag.name}"
    if flag.not_implemented:
        if not source:
            fix = "remove it from the command line"
        elif source.startswith(f"{ENV_PREFIX}_"):
            fix = f"unset the environment variable {source}"
        else:
            fix = f"remove the key {flag.name!r} from config file {source}"
        raise UsageError(f"{head} yet ({flag.not_implemented}); {fix}")
    refused = dict(flag.not_implemented_values)
    for item in value if flag.kind is list else (value,):
        if item in refused:
            where = ("on the command line" if not source else
                     f"in the environment variable {source}"
                     if source.startswith(f"{ENV_PREFIX}_") else
                     f"in the key {flag.name!r} of config file {source}")
            raise UsageError(f"{head} {item} yet ({refused[item]}); remove {item!r} from "
                             f"--{flag.name} {where}")


def _build(cls: type, values: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def _token(values: dict[str, Any]) -> str:
    """--token, else the content of --token-file ("" when neither is given)."""
    if values.get("token") or not values.get("token_file"):
        return values.get("token", "")
    path = values["token_file"]
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        raise UsageError(f"cannot read --token-file {path}: {e.strerror or e}") from None


def server_config(argv: list[str], environ: Mapping[str, str] | None = None) -> ServerConfig:
    values = parse(argv, SERVER, environ)
    values["token"] = _token(values)
    if values.get("server") and not values.get("datastore_endpoint"):
        raise UsageError("--server on a server joins another server's cluster through their "
                         "shared datastore: add that cluster's --datastore-endpoint (servers "
                         "on the embedded SQLite store cannot share a cluster)")
    if values.get("cluster_reset_restore_path") and not values.get("cluster_reset"):
        raise UsageError("--cluster-reset-restore-path needs --cluster-reset: "
                         "k3py server --cluster-reset --cluster-reset-restore-path FILE")
    if values.get("cluster_reset") and not values.get("cluster_reset_restore_path"):
        raise UsageError("--cluster-reset needs --cluster-reset-restore-path FILE: the "
                         "embedded store has no cluster membership to reset, only a "
                         "snapshot to restore")
    config = _build(ServerConfig, values)
    _check_pod_network(config)
    return config


def _check_pod_network(config: ServerConfig) -> None:
    """--cluster-cidr must hold node subnets of --node-cidr-mask-size and stay clear of the
    service CIDR (a pod IP that is also a ClusterIP would be routed to the Service)."""
    from k3py.server.controllers.nodeipam import parse_cluster_cidrs
    try:
        nets = parse_cluster_cidrs(config.cluster_cidr, config.node_cidr_mask_size)
    except ValueError as e:
        raise UsageError(f"--cluster-cidr / --node-cidr-mask-size: {e}") from None
    services = config.service_networks
    if len(nets) != len(services):
        raise UsageError(f"--cluster-cidr {config.cluster_cidr} and --service-cidr "
                         f"{config.service_cidr} must both be single-stack or both dual-stack")
    for net, service in zip(nets, services, strict=True):
        if net.version != service.version:
            raise UsageError(f"--cluster-cidr {config.cluster_cidr} and --service-cidr "
                             f"{config.service_cidr} must list their IP families in the same "
                             f"order")
        if net.overlaps(service):  # type: ignore[arg-type]
            raise UsageError(f"--cluster-cidr {net} overlaps --service-cidr {service}; "
                             f"choose networks that do not overlap")


def snapshot_config(argv: list[str], positional: list[str],
                    environ: Mapping[str, str] | None = None) -> SnapshotConfig:
    """`k3py snapshot`'s flags; the subcommand and snapshot names go to `positional`."""
    return _build(SnapshotConfig, parse(argv, SNAPSHOT, environ, positional=positional))


def agent_config(argv: list[str], environ: Mapping[str, str] | None = None) -> AgentConfig:
    """`k3py agent`'s configuration, made by AgentConfig.for_node as the embedded agent's is."""
    values = parse(argv, AGENT, environ)
    token = _token(values)
    if not token and values.get("token_file"):
        raise UsageError(f"--token-file {values['token_file']} is empty; copy the output of "
                         f"'{PROGRAM} token' on the server into it")
    return AgentConfig.for_node(_build(NodeConfig, values), server=values.get("server", ""),
                                token=token)


def _shown_default(flag: Flag, command: str) -> str:
    if flag.default_help:
        return flag.default_help
    default = default_of(flag, command)
    if default in (None, "", (), False):
        return ""
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


_ABOUT = {SERVER: "Run the Kubernetes API server (and, unless --disable-agent, a node)",
          CHECK_CONFIG: "Check this host for what k3py needs",
          SNAPSHOT: "Save, list, delete, prune or restore snapshots of the embedded store",
          AGENT: "Run a node that joins a server",
          TOKEN: "Print the join token of the local server; create|list|delete bootstrap "
                 "tokens",
          DASHBOARD_URL: "Print a one-time link that logs the admin in to the web dashboard",
          AIRGAP: "Import image tarballs into this node's podman",
          PODS: "Print this node's pods from its own state (works without the server)"}


def help_text(command: str) -> str:
    rows = []
    for flag in flags_for(command):
        value = "" if flag.kind is bool else " value"
        left = f"--{flag.name}{value}" + (f", -{flag.short}{value}" if flag.short else "")
        left += "".join(f", --{alias}{value}" for cmd, alias in flag.aliases if cmd == command)
        default = _shown_default(flag, command)
        text = flag.help + (f" (default: {default})" if default else "")
        if flag.not_implemented:
            text += f" (not implemented yet: {flag.not_implemented}; refused)"
        elif flag.not_implemented_values:
            text += " (not implemented yet, so refused: " + \
                ", ".join(v for v, _ in flag.not_implemented_values) + ")"
        rows.append((left, f"{text} [${' / $'.join(flag.env_vars)}]"))
    width = max(len(left) for left, _ in rows) + 3
    lines = [f"NAME:\n   {PROGRAM} {command} - {_ABOUT.get(command, '')}", "",
             f"USAGE:\n   {PROGRAM} {command} [OPTIONS]", "", "OPTIONS:"]
    lines += [f"   {left:<{width}}{right}" for left, right in rows]
    lines += ["   --help, -h".ljust(width + 3) + "show help", "",
              f"Each flag is also an environment variable and a key of the config file "
              f"({DEFAULT_CONFIG_FILE}).", "Precedence: flag > environment > config file > "
              "default."]
    return "\n".join(lines)


# ---- store snapshots (K3s's etcd-snapshot flags without "etcd-"): the server's schedule and
# `k3py snapshot save|ls|delete|prune|restore`

def _cron(v: str) -> str:
    from k3py.server.controllers.cron import CronError, parse_cron
    try:
        parse_cron(v)
    except CronError as e:
        raise ValueError(f"expected a cron schedule such as '0 */12 * * *' ({e})") from None
    return v


def _retention(v: int) -> int:
    if v < 1:
        raise ValueError("expected a number >= 1")
    return v


def _snapshot_name(v: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
        raise ValueError("expected a name of letters, digits, '.', '_' and '-'")
    return v


FLAGS = FLAGS + (
    Flag("snapshot-schedule-cron", str, "(db) Snapshot interval time in cron spec, e.g. every "
         "5 hours '0 */5 * * *'", (SERVER,), check=_cron),
    Flag("snapshot-retention", int, "(db) Number of snapshots to retain (scheduled ones; "
         "`snapshot prune`: those of --name)", (SERVER, SNAPSHOT), check=_retention),
    Flag("snapshot-dir", str, "(db) Directory to save snapshots", (SERVER, SNAPSHOT),
         default_help="<data-dir>/server/db/snapshots", aliases=((SNAPSHOT, "dir"),)),
    Flag("disable-snapshots", bool, "(db) Disable scheduled snapshots", (SERVER,)),
    Flag("cluster-reset", bool, "(db) With --cluster-reset-restore-path: replace the store "
         "with a snapshot, then exit", (SERVER,)),
    Flag("cluster-reset-restore-path", str, "(db) Path to the snapshot file to be restored",
         (SERVER,)),
    Flag("name", str, "(snapshot) Set the base name of the snapshots", (SNAPSHOT,),
         check=_snapshot_name),
)


# ---- `k3py agent pods`: its one flag of its own (it shares data-dir, node-name, podman-root)

_OUTPUTS = ("wide", "json")


def _output(v: str) -> str:
    if v not in _OUTPUTS:
        raise ValueError(f"expected one of {', '.join(_OUTPUTS)}")
    return v


FLAGS = FLAGS + (
    Flag("output", str, "(pods) Output format: json, or wide (the table)", (PODS,), short="o",
         check=_output, default_help="wide"),
)


# ---- `k3py mapper KIND` (devices): its flags, kept in this one block; defaults from
# k3py.mapper.options. A mapper usually runs in a pod, so K3PY_DEVICE etc. configure it too.

from k3py.mapper.options import MapperOptions  # noqa: E402

MAPPER = "mapper"


def _pin_mode(v: str) -> str:
    if v.lower() not in ("bcm", "board"):
        raise ValueError("expected bcm or board")
    return v.lower()


FLAGS = FLAGS + (
    Flag("device", str, "(mapper) Name of the Device this mapper serves", (MAPPER,)),
    Flag("namespace", str, "(mapper) Namespace of the Device: topics in KubeEdge v1.17+ form "
         "($hw/events/device/NAMESPACE/NAME/...)", (MAPPER,),
         default_help="none: $hw/events/device/NAME/..., as KubeEdge up to v1.16"),
    Flag("broker", str, "(mapper) The node's MQTT broker", (MAPPER,), check=_broker_url),
    Flag("broker-username", str, "(mapper) MQTT user name", (MAPPER,)),
    Flag("broker-password", str, "(mapper) MQTT password", (MAPPER,)),
    Flag("broker-ca", str, "(mapper) CA bundle for an ssl:// broker", (MAPPER,),
         default_help="the system's CAs"),
    Flag("interval", str, "(mapper) Time between readings", (MAPPER,), check=_duration,
         default_help="counter 1s, dht11 and simulated 2s"),
    Flag("pin", int, "(mapper/dht11) GPIO pin of the sensor's DATA line", (MAPPER,)),
    Flag("pin-mode", str, "(mapper/dht11) Pin numbering: bcm or board", (MAPPER,),
         check=_pin_mode),
    Flag("seed", int, "(mapper/simulated) Seed of the simulated series", (MAPPER,)),
)
_CONFIG_CLASSES[MAPPER] = MapperOptions
_ABOUT[MAPPER] = "Run a device mapper (dht11, simulated, counter) against the node's MQTT broker"


def mapper_options(argv: list[str], environ: Mapping[str, str] | None = None) -> MapperOptions:
    return _build(MapperOptions, parse(argv, MAPPER, environ))
