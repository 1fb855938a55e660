"""Frozen configuration records for the two roles, `ServerConfig` and `AgentConfig`: the one
home of defaults. Built by k3py.cli.flags (flag > env var > config file > these defaults).

Every field has a reader; a flag k3py accepts but does not implement has no field here (the
flag table refuses it at start). Components read options as attributes, never with getattr."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import tempfile
from dataclasses import dataclass, fields
from urllib.parse import urlsplit, urlunsplit

from k3py.hostinfo import machine_secret

__all__ = ["NodeConfig", "ServerConfig", "AgentConfig", "SnapshotConfig", "DEFAULT_DATA_DIR",
           "DEFAULT_CONFIG_FILE", "DEFAULT_KUBECONFIG", "hostname", "podman_storage_args", "redact_endpoint"]

DEFAULT_DATA_DIR = "/var/lib/k3py"
DEFAULT_CONFIG_FILE = "/etc/k3py/config.yaml"
DEFAULT_KUBECONFIG = "/etc/k3py/k3py.yaml"


def hostname() -> str:
    """This host's name as a node name: the first DNS label, lower case (what the agent uses
    when no --node-name is given)."""
    return socket.gethostname().split(".")[0].lower() or "localhost"


def _node_id(data_dir: str) -> str:
    """A random id kept in <data-dir>/agent/node-id, so --with-node-id names survive restarts."""
    return machine_secret(os.path.join(data_dir, "agent", "node-id"), 4)


def podman_storage_args(root: str) -> tuple[str, ...]:
    """Global podman options for --podman-root DIR: a storage of this agent's own, so several
    agents on one machine neither see nor adopt each other's pods; () = podman's default.
    Podman refuses a runroot longer than 50 characters (it holds sockets), so a long DIR gets
    its runroot under /run (or the temp dir) named by a hash of DIR."""
    if not root:
        return ()
    root = os.path.abspath(root)
    runroot = os.path.join(root, "run")
    if len(runroot) > 50:
        base = "/run" if os.access("/run", os.W_OK) else tempfile.gettempdir()
        runroot = os.path.join(base, "k3py-podman-" + hashlib.sha256(root.encode())
                               .hexdigest()[:12])
    return ("--root", os.path.join(root, "storage"), "--runroot", runroot,
            "--tmpdir", os.path.join(root, "tmp"))


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """Fields and paths shared by the server (for its embedded agent) and the agent."""

    data_dir: str = DEFAULT_DATA_DIR
    token: str = ""  # --token, or the content of --token-file (read when the config is built)
    node_name: str = ""  # "" = this host's name (hostname())
    node_label: tuple[str, ...] = ()  # "key=value"
    node_taint: tuple[str, ...] = ()  # "key=value:Effect"
    node_ip: str = ""  # "" = the address of the default route's interface; dual-stack: "v4,v6"
    ingress_http_port: int = 80  # the node's ingress proxy (agent/ingress)
    ingress_https_port: int = 443
    with_node_id: bool = False
    podman_root: str = ""  # "" = podman's default storage (the host's `podman ps` shows pods)
    container_runtime_endpoint: str = ""  # "" = find a podman API socket or start a service
    debug: bool = False
    # the node's MQTT event bus (agent/devices): KubeEdge's eventBus modes
    mqtt_mode: str = "internal"  # internal (embedded broker) | external | both
    mqtt_server: str = ""  # external broker: tcp://HOST:PORT or ssl://HOST:PORT
    mqtt_username: str = ""
    mqtt_password: str = ""
    mqtt_ca_file: str = ""  # TLS to the external broker: CA bundle ("" = system CAs)
    mqtt_cert_file: str = ""  # TLS client certificate and key for the external broker
    mqtt_key_file: str = ""
    mqtt_bind: str = "127.0.0.1"  # the embedded broker's address
    mqtt_port: int = 1883
    device_offline_after: float = 0.0  # seconds of mapper silence; 0 = 3 x its report cycle
    # where local-path volumes live (the server's provisioner puts them there, the node's
    # agent removes them only from there); "" = <data-dir>/storage, as K3s
    default_local_storage_path: str = ""
    metrics_resolution: float = 15.0  # seconds between usage reports (agent/metrics.py)
    # the node's own read-only dashboard (agent/dashboard); 0 = off
    dashboard_port: int = 0
    dashboard_bind: str = "127.0.0.1"  # not loopback: served over TLS (it always takes a token)

    @property
    def effective_node_name(self) -> str:
        """The one derivation of this node's name: --node-name (K3PY_NODE_NAME) or the
        hostname, with the persistent id appended for --with-node-id. Reading it with
        --with-node-id creates <data-dir>/agent/node-id on first use."""
        name = self.node_name or hostname()
        if self.with_node_id:
            name = f"{name}-{_node_id(self.data_dir)}"
        return name

    @property
    def labels(self) -> dict[str, str]:
        """--node-label key=value items as the Node's labels (the flag table checked them)."""
        return dict(item.partition("=")[::2] for item in self.node_label)

    @property
    def agent_dir(self) -> str:
        return os.path.join(self.data_dir, "agent")

    @property
    def images_dir(self) -> str:
        """Airgap image tarballs imported at agent start."""
        return os.path.join(self.agent_dir, "images")

    @property
    def podman_args(self) -> tuple[str, ...]:
        return podman_storage_args(self.podman_root)

    @property
    def meta_db_path(self) -> str:
        return os.path.join(self.agent_dir, "meta.db")

    @property
    def local_storage_path(self) -> str:
        return self.default_local_storage_path or os.path.join(self.data_dir, "storage")



@dataclass(frozen=True, kw_only=True)
class AgentConfig(NodeConfig):
    server: str = ""  # https://HOST:6443 (K3PY_URL)

    @classmethod
    def for_node(cls, node: NodeConfig, *, server: str, token: str) -> AgentConfig:
        """The one way an agent's configuration is made, for `k3py agent` and for the server's
        embedded agent alike: every node option of `node`, plus where to join and with what."""
        shared = {f.name: getattr(node, f.name) for f in fields(NodeConfig)}
        return cls(**{**shared, "token": token}, server=server)


@dataclass(frozen=True, kw_only=True)
class ServerConfig(NodeConfig):
    bind_address: str = "0.0.0.0"
    https_listen_port: int = 6443
    advertise_address: str = ""  # "" = node-ip or the default route's address
    tls_san: tuple[str, ...] = ()
    server: str = ""  # https://FIRST:6443: join that server's cluster (needs the datastore)
    write_kubeconfig: str = DEFAULT_KUBECONFIG
    write_kubeconfig_mode: str = "0600"
    cluster_cidr: str = "10.42.0.0/16"  # pod CIDRs of the nodes (controllers/nodeipam.py)
    node_cidr_mask_size: int = 24  # each node's IPv4 pod CIDR size (IPv6: /64)
    service_cidr: str = "10.43.0.0/16"
    cluster_dns: str = ""  # the kube-dns Service IP every agent answers DNS on; "" = the
    # 10th address of the service CIDR, as K3s (10.43.0.10)
    cluster_domain: str = "cluster.local"
    service_node_port_range: str = "30000-32767"
    disable_agent: bool = False
    disable_network_policy: bool = False  # nodes are sent no NetworkPolicies: none enforced
    disable: tuple[str, ...] = ()  # packaged components not deployed (--disable)
    dashboard_read_only: bool = False  # the dashboard's cookie sessions may not write
    datastore_endpoint: str = ""  # "" = embedded SQLite; postgres://user:pass@host:port/db
    datastore_cafile: str = ""
    datastore_certfile: str = ""
    datastore_keyfile: str = ""
    compact_interval: float = 300.0  # seconds between store compactions
    compact_min_retain: int = 1000  # revisions compaction always keeps
    # controllers and scheduler on one server at a time (on a shared datastore), as upstream's
    # --leader-elect-* flags of kube-controller-manager and kube-scheduler
    leader_elect_lease_duration: float = 15.0
    leader_elect_renew_deadline: float = 10.0
    leader_elect_retry_period: float = 2.0
    node_eviction_timeout: float = 0.0  # 0 = never evict pods of unreachable nodes
    secrets_encryption: bool = True  # Secrets AES-GCM encrypted at rest (store/encryption.py)
    max_requests_inflight: int = 400  # read-only requests at once (apiserver/limits.py)
    max_mutating_requests_inflight: int = 200  # mutating requests at once
    request_timeout: float = 60.0  # seconds before a non-long-running request gets 504
    audit_log_path: str = ""  # "" = no audit log (apiserver/audit.py)
    audit_policy_file: str = ""  # "" = AuditPolicy.default (Metadata, the peers' reports quiet)
    audit_log_maxsize: int = 100  # MB before the log rotates (0 = never)
    audit_log_maxbackup: int = 10  # rotated files kept
    # "" = namespaces without pod-security labels are privileged (server/podsecurity.py)
    pod_security_admission_config_file: str = ""
    # "name=number" (seconds for durations), checked by the flag table
    kube_controller_manager_arg: tuple[str, ...] = ()

    @property
    def controller_manager_options(self) -> dict[str, float]:
        """--kube-controller-manager-arg as {name: number}."""
        return {k: float(v) for k, _, v in
                (item.partition("=") for item in self.kube_controller_manager_arg)}
    snapshot_schedule_cron: str = "0 */12 * * *"  # scheduled store snapshots, as K3s
    snapshot_retention: int = 5  # scheduled snapshots kept
    snapshot_dir: str = ""  # "" = <data-dir>/server/db/snapshots
    disable_snapshots: bool = False
    cluster_reset: bool = False  # with cluster_reset_restore_path: restore, then exit
    cluster_reset_restore_path: str = ""

    @property
    def server_dir(self) -> str:
        return os.path.join(self.data_dir, "server")

    @property
    def db_path(self) -> str:
        return os.path.join(self.server_dir, "db", "state.db")

    @property
    def tls_dir(self) -> str:
        return os.path.join(self.server_dir, "tls")

    @property
    def snapshots_dir(self) -> str:
        """--snapshot-dir, else server/db/snapshots (K3s's place for etcd snapshots)."""
        return self.snapshot_dir or os.path.join(self.server_dir, "db", "snapshots")

    @property
    def encryption_config_path(self) -> str:
        """The secrets-encryption keys, as K3s keeps them (server/cred/)."""
        return os.path.join(self.server_dir, "cred", "encryption-config.json")

    @property
    def token_path(self) -> str:
        return os.path.join(self.server_dir, "token")

    @property
    def manifests_dir(self) -> str:
        """Manifests applied automatically at start (K3s: server/manifests)."""
        return os.path.join(self.server_dir, "manifests")

    @property
    def kubeconfig_mode(self) -> int:
        """write_kubeconfig_mode as an int (the flag table has checked it is octal)."""
        return int(self.write_kubeconfig_mode, 8)

    @property
    def cluster_dns_ip(self) -> str:
        """--cluster-dns, or the service CIDR's 10th address (K3s's default)."""
        if self.cluster_dns:
            return self.cluster_dns
        return str(self.service_networks[0].network_address + 10)

    @property
    def kubernetes_service_ip(self) -> str:
        """The first address of the (primary) service CIDR: the `kubernetes` Service's
        ClusterIP."""
        return str(self.service_networks[0].network_address + 1)

    @property
    def service_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """--service-cidr: one network, or two of different families (the primary first)."""
        return [ipaddress.ip_network(p.strip(), strict=False)
                for p in self.service_cidr.split(",")]


@dataclass(frozen=True, kw_only=True)
class SnapshotConfig(ServerConfig):
    """`k3py snapshot`: the server's data dir and datastore, and the snapshot's name."""
    name: str = "on-demand"  # K3s's name for snapshots taken by hand


def redact_endpoint(endpoint: str) -> str:
    """A URL with its password replaced by ***, for logs and error lines."""
    parts = urlsplit(endpoint)
    if parts.password is None:
        return endpoint
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
