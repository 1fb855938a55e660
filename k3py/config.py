"""Frozen configuration records for the two roles, `ServerConfig` and `AgentConfig`: the one
home of defaults. Built by k3py.cli.flags (flag > env var > config file > these defaults)."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import tempfile
from dataclasses import dataclass

from k3py.hostinfo import machine_secret

__all__ = ["ServerConfig", "AgentConfig", "DEFAULT_DATA_DIR", "DEFAULT_CONFIG_FILE",
           "DEFAULT_KUBECONFIG", "DISABLEABLE_COMPONENTS", "hostname", "podman_storage_args"]

DEFAULT_DATA_DIR = "/var/lib/k3py"
DEFAULT_CONFIG_FILE = "/etc/k3py/config.yaml"
DEFAULT_KUBECONFIG = "/etc/k3py/k3py.yaml"
# What `--disable` accepts: the packaged components the server deploys (K3s: traefik,
# servicelb, local-storage, coredns). A typo must fail loudly rather than be ignored.
DISABLEABLE_COMPONENTS = ("ingress", "servicelb", "local-storage", "dns")


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
class _NodeConfig:
    """Fields and paths shared by the server (for its embedded agent) and the agent."""

    data_dir: str = DEFAULT_DATA_DIR
    token: str = ""
    token_file: str = ""
    node_name: str = ""  # "" = this host's name (hostname())
    node_label: tuple[str, ...] = ()  # "key=value"
    node_taint: tuple[str, ...] = ()  # "key=value:Effect"
    node_ip: str = ""  # "" = the address of the default route's interface
    with_node_id: bool = False
    podman_root: str = ""  # "" = podman's default storage (the host's `podman ps` shows pods)
    container_runtime_endpoint: str = ""  # "" = find a podman API socket or start a service
    debug: bool = False
    config: str = ""  # the config file these values were read from ("" = none)

    @property
    def effective_node_name(self) -> str:
        """--node-name or the hostname, with the persistent id appended for --with-node-id.
        Reading it with --with-node-id creates <data-dir>/agent/node-id on first use."""
        name = self.node_name or hostname()
        if self.with_node_id:
            name = f"{name}-{_node_id(self.data_dir)}"
        return name

    # the agent reads the plural spellings through getattr
    @property
    def node_labels(self) -> tuple[str, ...]:
        return self.node_label

    @property
    def node_taints(self) -> tuple[str, ...]:
        return self.node_taint

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
    def storage_dir(self) -> str:
        """local-path volumes."""
        return os.path.join(self.data_dir, "storage")


@dataclass(frozen=True, kw_only=True)
class AgentConfig(_NodeConfig):
    server: str = ""  # https://HOST:6443 (K3PY_URL)
    embedded: bool = False  # started in-process by `k3py server`


@dataclass(frozen=True, kw_only=True)
class ServerConfig(_NodeConfig):
    bind_address: str = "0.0.0.0"
    https_listen_port: int = 6443
    advertise_address: str = ""  # "" = node-ip or the default route's address
    tls_san: tuple[str, ...] = ()
    write_kubeconfig: str = DEFAULT_KUBECONFIG
    write_kubeconfig_mode: str = "0600"
    cluster_cidr: str = "10.42.0.0/16"
    service_cidr: str = "10.43.0.0/16"
    service_node_port_range: str = "30000-32767"
    cluster_dns: str = "10.43.0.10"
    cluster_domain: str = "cluster.local"
    disable_agent: bool = False
    disable: tuple[str, ...] = ()  # names from DISABLEABLE_COMPONENTS
    datastore_endpoint: str = ""  # "" = embedded SQLite at db_path
    compact_interval: float = 300.0  # seconds between store compactions
    compact_min_retain: int = 1000  # revisions compaction always keeps
    node_eviction_timeout: float = 0.0  # 0 = never evict pods of unreachable nodes

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
    def kubernetes_service_ip(self) -> str:
        """The first address of the service CIDR: the `kubernetes` Service's ClusterIP."""
        net = ipaddress.ip_network(self.service_cidr, strict=False)
        return str(net.network_address + 1)

    @property
    def node_port_range(self) -> tuple[int, int]:
        low, _, high = self.service_node_port_range.partition("-")
        return int(low), int(high)

    def is_disabled(self, component: str) -> bool:
        return component in self.disable

    def agent_config(self, server_url: str, token: str) -> AgentConfig:
        """The embedded agent's configuration: same data dir and node options as the server."""
        return AgentConfig(server=server_url, token=token, data_dir=self.data_dir,
                           node_name=self.node_name, node_label=self.node_label,
                           node_taint=self.node_taint, node_ip=self.node_ip,
                           with_node_id=self.with_node_id, podman_root=self.podman_root,
                           container_runtime_endpoint=self.container_runtime_endpoint,
                           debug=self.debug,
                           config=self.config, embedded=True)
