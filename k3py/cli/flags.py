"""The one table of flags: each flag is also an env var K3PY_<FLAG> and a config.yaml key
(the long flag name). Precedence: flag > env var > config file > default (k3py.config).

Parsing errors raise UsageError, which the CLI prints as one line and exits 1."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

import yaml

from k3py import PROGRAM
from k3py.config import DEFAULT_CONFIG_FILE, AgentConfig, ServerConfig

__all__ = ["Flag", "SERVER_FLAGS", "AGENT_FLAGS", "UsageError", "parse", "env_name",
           "help_text"]


class UsageError(Exception):
    pass


@dataclass(frozen=True)
class Flag:
    name: str  # long name without dashes
    kind: type  # str, int, float, bool, list (repeatable)
    help: str
    env: str = ""  # overrides the derived env var name
    field: str = ""  # config dataclass field; default: name with _ for -

    @property
    def attr(self) -> str:
        return self.field or self.name.replace("-", "_")

    @property
    def env_var(self) -> str:
        return self.env or env_name(self.name)


def env_name(flag: str) -> str:
    return f"{PROGRAM.upper()}_{flag.upper().replace('-', '_')}"


_COMMON = (
    Flag("config", str, "(config) Load configuration from FILE (default /etc/k3py/config.yaml)",
         env="K3PY_CONFIG_FILE"),
    Flag("debug", bool, "(logging) Turn on debug logs"),
    Flag("data-dir", str, "(data) Folder to hold state (default /var/lib/k3py)"),
    Flag("node-name", str, "(agent/node) Node name"),
    Flag("node-label", list, "(agent/node) Registering and starting kubelet with set of labels"),
    Flag("node-taint", list, "(agent/node) Registering kubelet with set of taints"),
    Flag("node-ip", str, "(agent/networking) IP address to advertise for node"),
    Flag("token", str, "(cluster) Shared secret used to join a server or agent to a cluster"),
    Flag("token-file", str, "(cluster) File containing the token"),
)

SERVER_FLAGS: tuple[Flag, ...] = _COMMON + (
    Flag("bind-address", str, "(listener) k3py bind address (default: 0.0.0.0)"),
    Flag("https-listen-port", int, "(listener) HTTPS listen port (default: 6443)"),
    Flag("advertise-address", str, "(listener) IP address that apiserver uses to advertise "
         "to members of the cluster (default: node-external-ip/node-ip)"),
    Flag("tls-san", list, "(listener) Add additional hostnames or IPv4/IPv6 addresses as "
         "Subject Alternative Names on the server TLS cert"),
    Flag("write-kubeconfig", str, "(client) Write kubeconfig for admin client to this file "
         "(default /etc/k3py/k3py.yaml)", env="K3PY_KUBECONFIG_OUTPUT"),
    Flag("write-kubeconfig-mode", str, "(client) Write kubeconfig with this mode "
         "(default 0600)", env="K3PY_KUBECONFIG_MODE"),
    Flag("cluster-cidr", str, "(networking) IPv4 network CIDR to use for pod IPs "
         "(default: 10.42.0.0/16)"),
    Flag("service-cidr", str, "(networking) IPv4 network CIDR to use for service IPs "
         "(default: 10.43.0.0/16)"),
    Flag("service-node-port-range", str, "(networking) Port range to reserve for services "
         "with NodePort visibility (default: 30000-32767)"),
    Flag("cluster-dns", str, "(networking) IPv4 Cluster IP for coredns service"),
    Flag("cluster-domain", str, "(networking) Cluster Domain (default: cluster.local)"),
    Flag("disable-agent", bool, "(components) Do not run a local agent and register a local "
         "node"),
    Flag("disable", list, "(components) Do not deploy packaged components (ingress, "
         "local-storage, servicelb)"),
    Flag("datastore-endpoint", str, "(db) Specify postgres data source name (default: "
         "embedded SQLite)"),
    Flag("compact-interval", float, "(db) Seconds between store compactions (default 300)"),
    Flag("compact-min-retain", int, "(db) Revisions kept by compaction (default 1000)"),
    Flag("node-eviction-timeout", float, "(agent/node) Seconds an unreachable node keeps its "
         "pods before they are evicted (default 0 = never, edge autonomy)"),
)

AGENT_FLAGS: tuple[Flag, ...] = _COMMON + (
    Flag("server", str, "(cluster) Server to connect to", env="K3PY_URL"),
    Flag("with-node-id", bool, "(agent/node) Append id to node name"),
)


def _convert(flag: Flag, raw: Any, source: str) -> Any:
    where = f"--{flag.name}" if source == "flag" else (
        flag.env_var if source == "env" else f"'{flag.name}' in the config file")
    try:
        if flag.kind is bool:
            if isinstance(raw, bool):
                return raw
            s = str(raw).strip().lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off", ""):
                return False
            raise ValueError
        if flag.kind is int:
            if isinstance(raw, bool):
                raise ValueError
            value = int(str(raw).strip())
            if flag.name.endswith("port") and not 1 <= value <= 65535:
                raise ValueError
            return value
        if flag.kind is float:
            return float(str(raw).strip())
        if flag.kind is list:
            if isinstance(raw, list):
                return tuple(str(x) for x in raw)
            return tuple(x.strip() for x in str(raw).split(",") if x.strip())
        if isinstance(raw, (dict, list)):
            raise ValueError
        return str(raw)
    except ValueError:
        kind = {bool: "true or false", int: "a number", float: "a number",
                list: "a list"}.get(flag.kind, "a string")
        if flag.name.endswith("port"):
            kind = "a port number (1-65535)"
        raise UsageError(f"invalid value {raw!r} for {where}: expected {kind}") from None


def _load_config_file(path: str, explicit: bool) -> dict:
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        if explicit:
            raise UsageError(f"config file {path} does not exist; fix --config or create it") from None
        return {}
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"cannot read config file {path}: {e}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must be a mapping of flag names to values")
    return data


def parse(argv: list[str], flags: tuple[Flag, ...], command: str,
          environ: dict[str, str] | None = None) -> dict[str, Any]:
    """argv (after the subcommand) -> {attr: value} with precedence applied."""
    env = os.environ if environ is None else environ
    by_name = {f.name: f for f in flags}
    given: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            raise SystemExit(print(help_text(command, flags)) or 0)
        if not arg.startswith("--"):
            raise UsageError(f"unexpected argument {arg!r} for '{PROGRAM} {command}'; "
                             f"see '{PROGRAM} {command} --help'")
        name, eq, value = arg[2:].partition("=")
        flag = by_name.get(name)
        if flag is None:
            raise UsageError(f"unknown flag --{name} for '{PROGRAM} {command}'; "
                             f"see '{PROGRAM} {command} --help'")
        if flag.kind is bool and not eq:
            raw: Any = True
        elif eq:
            raw = value
        else:
            i += 1
            if i >= len(argv):
                raise UsageError(f"flag --{name} needs a value")
            raw = argv[i]
        converted = _convert(flag, raw, "flag")
        if flag.kind is list:
            given[flag.attr] = given.get(flag.attr, ()) + converted
        else:
            given[flag.attr] = converted
        i += 1

    out: dict[str, Any] = {}
    config_path = given.get("config") or env.get("K3PY_CONFIG_FILE") or ""
    file_values = _load_config_file(config_path or DEFAULT_CONFIG_FILE, bool(config_path))
    for key, raw in file_values.items():
        flag = by_name.get(str(key))
        if flag is None or flag.name == "config":
            raise UsageError(f"unknown key '{key}' in config file "
                             f"{config_path or DEFAULT_CONFIG_FILE}; keys are long flag names")
        out[flag.attr] = _convert(flag, raw, "file")
    for flag in flags:
        if flag.env_var in env and env[flag.env_var] != "":
            out[flag.attr] = _convert(flag, env[flag.env_var], "env")
    out.update(given)
    return out


def build_config(cls: type, values: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def server_config(argv: list[str], environ: dict[str, str] | None = None) -> ServerConfig:
    values = parse(argv, SERVER_FLAGS, "server", environ)
    return build_config(ServerConfig, values)


def agent_config(argv: list[str], environ: dict[str, str] | None = None) -> AgentConfig:
    values = parse(argv, AGENT_FLAGS, "agent", environ)
    return build_config(AgentConfig, values)


def help_text(command: str, flags: tuple[Flag, ...]) -> str:
    lines = [f"Usage: {PROGRAM} {command} [flags]", "", "Flags:"]
    for f in sorted(flags, key=lambda f: f.help):
        value = "" if f.kind is bool else " value"
        lines.append(f"  --{f.name}{value:<7} {f.help} [${f.env_var}]")
    return "\n".join(lines)
