"""Frozen configuration records for the two roles, `ServerConfig` and `AgentConfig`: the one
home of defaults. Built by k3py.cli.flags (flags > env > config file > defaults); read by
k3py.server.main and k3py.agent.main."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

__all__ = ["ServerConfig", "AgentConfig", "DEFAULT_DATA_DIR", "DEFAULT_CONFIG_FILE",
           "DEFAULT_KUBECONFIG"]

DEFAULT_DATA_DIR = "/var/lib/k3py"
DEFAULT_CONFIG_FILE = "/etc/k3py/config.yaml"
DEFAULT_KUBECONFIG = "/etc/k3py/k3py.yaml"


def _hostname() -> str:
    return socket.gethostname().lower()


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    server: str = ""
    token: str = ""
    token_file: str = ""
    data_dir: str = DEFAULT_DATA_DIR
    node_name: str = ""
    node_label: tuple[str, ...] = ()
    node_taint: tuple[str, ...] = ()
    node_ip: str = ""
    with_node_id: bool = False
    debug: bool = False
    embedded: bool = False

    @property
    def effective_node_name(self) -> str:
        name = self.node_name or _hostname()
        if self.with_node_id:
            name = f"{name}-{_node_id(self.data_dir)}"
        return name

    # the agent reads these through getattr; keep both spellings
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
        return os.path.join(self.agent_dir, "images")

    @property
    def meta_db_path(self) -> str:
        return os.path.join(self.agent_dir, "meta.db")


def _node_id(data_dir: str) -> str:
    path = os.path.join(data_dir, "agent", "node-id")
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        node_id = os.urandom(4).hex()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(node_id)
        return node_id


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    data_dir: str = DEFAULT_DATA_DIR
    bind_address: str = "0.0.0.0"
    https_listen_port: int = 6443
    advertise_address: str = ""
    tls_san: tuple[str, ...] = ()
    token: str = ""
    token_file: str = ""
    write_kubeconfig: str = DEFAULT_KUBECONFIG
    write_kubeconfig_mode: str = "0600"
    cluster_cidr: str = "10.42.0.0/16"
    service_cidr: str = "10.43.0.0/16"
    service_node_port_range: str = "30000-32767"
    cluster_dns: str = "10.43.0.10"
    cluster_domain: str = "cluster.local"
    disable_agent: bool = False
    disable: tuple[str, ...] = ()
    node_name: str = ""
    node_label: tuple[str, ...] = ()
    node_taint: tuple[str, ...] = ()
    node_ip: str = ""
    datastore_endpoint: str = ""
    compact_interval: float = 300.0
    compact_min_retain: int = 1000
    node_eviction_timeout: float = 0.0
    debug: bool = False
    config: str = ""

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
        return os.path.join(self.server_dir, "manifests")

    @property
    def storage_dir(self) -> str:
        return os.path.join(self.data_dir, "storage")

    def agent_config(self, server_url: str, token: str) -> AgentConfig:
        """The embedded agent's configuration (same data dir, the server's node name)."""
        return AgentConfig(server=server_url, token=token, data_dir=self.data_dir,
                           node_name=self.node_name, node_label=self.node_label,
                           node_taint=self.node_taint, node_ip=self.node_ip,
                           debug=self.debug, embedded=True)
