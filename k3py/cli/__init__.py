"""The `k3py` command: dispatches to the subcommands (server, agent, kubectl, token,
check-config, airgap, mapper, snapshot, secrets-encrypt). Usage errors are one `k3py: error: ...` line on stderr, exit code 1."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable

from k3py import PROGRAM, __version__

__all__ = ["main", "version_line"]

USAGE = f"""NAME:
   {PROGRAM} - a lightweight single-binary Kubernetes for the edge

USAGE:
   {PROGRAM} COMMAND [OPTIONS]

COMMANDS:
   server         Run the Kubernetes API server (and, unless --disable-agent, a node)
   agent          Run a node that joins a server (--server URL --token TOKEN)
   agent pods     Print this node's pods from its own state (works without the server)
   kubectl        Run kubectl against the local server (KUBECONFIG=/etc/k3py/k3py.yaml)
   token          Print the join token of the local server
   dashboard-url  Print a one-time link that logs the admin in to the web dashboard
   check-config   Check this host for what k3py needs
   airgap         Import image tarballs on air-gapped nodes (airgap import FILE...)
   mapper         Run a device mapper: mapper dht11|simulated|counter --device NAME
   snapshot       Save, list, delete, prune or restore store snapshots (save|ls|delete|prune|restore)
   secrets-encrypt  Show or rotate the keys of Secrets at rest (status|prepare|rotate|reencrypt|rotate-keys)

Run '{PROGRAM} COMMAND --help' for a command's options; '{PROGRAM} --version' for the version."""


def version_line() -> str:
    major, minor = platform.python_version_tuple()[:2]
    return f"{PROGRAM} version v{__version__} (python {major}.{minor})"


def _commands() -> dict[str, Callable[[list[str]], int]]:
    # imported lazily: `k3py kubectl` and `--version` must not pay for the server's imports
    def server(argv: list[str]) -> int:
        from k3py.cli.server import server_command
        return server_command(argv)

    def agent(argv: list[str]) -> int:
        from k3py.cli.agent import agent_command
        return agent_command(argv)

    def kubectl(argv: list[str]) -> int:
        from k3py.cli.kubectl import kubectl_command
        return kubectl_command(argv)

    def token(argv: list[str]) -> int:
        from k3py.cli.token import token_command
        return token_command(argv)

    def dashboard_url(argv: list[str]) -> int:
        from k3py.cli.dashboard_url import dashboard_url_command
        return dashboard_url_command(argv)

    def check_config(argv: list[str]) -> int:
        from k3py.cli.check_config import check_config_command
        return check_config_command(argv)

    def airgap(argv: list[str]) -> int:
        from k3py.cli.airgap import airgap_command
        return airgap_command(argv)

    def mapper(argv: list[str]) -> int:
        from k3py.cli.mapper import mapper_command
        return mapper_command(argv)

    def snapshot(argv: list[str]) -> int:
        from k3py.cli.snapshot import snapshot_command
        return snapshot_command(argv)

    def secrets_encrypt(argv: list[str]) -> int:
        from k3py.cli.secrets_encrypt import secrets_encrypt_command
        return secrets_encrypt_command(argv)

    return {"server": server, "agent": agent, "kubectl": kubectl, "token": token,
            "dashboard-url": dashboard_url,
            "check-config": check_config, "airgap": airgap, "mapper": mapper,
            "snapshot": snapshot, "secrets-encrypt": secrets_encrypt}


def fail(message: str) -> int:
    """Print the one error line (newlines folded) and return the exit code 1."""
    line = " ".join(str(message).split())
    print(f"{PROGRAM}: error: {line}", file=sys.stderr, flush=True)
    return 1


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script passes it to sys.exit)."""
    from k3py.cli.flags import HelpRequested, UsageError

    if argv is None:
        argv = sys.argv[1:]
        # multi-call binary, as K3s: a `kubectl` symlink to k3py behaves as `k3py kubectl`
        if os.path.basename(sys.argv[0]) == "kubectl":
            argv = ["kubectl", *argv]
    args = list(argv)
    if not args:
        return fail(f"no command given; run '{PROGRAM} server', '{PROGRAM} agent' or "
                    f"'{PROGRAM} --help'")
    if args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if args[0] in ("--version", "-v", "version"):
        print(version_line())
        return 0
    command = _commands().get(args[0])
    if command is None:
        return fail(f"unknown command {args[0]!r}; run '{PROGRAM} --help' for the commands")
    try:
        return command(args[1:])
    except HelpRequested as e:
        print(str(e))
        return 0
    except UsageError as e:
        return fail(str(e))
    except KeyboardInterrupt:
        return 130
