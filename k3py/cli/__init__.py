"""The `k3py` command: dispatches to subcommands (server, agent, kubectl, token, check-config,
airgap). Usage errors are one line on stderr and exit code 1."""

from __future__ import annotations

import platform
import sys

from k3py import PROGRAM, __version__

__all__ = ["main"]

USAGE = f"""Usage: {PROGRAM} COMMAND [flags]

Commands:
  server         Run a server (Kubernetes API, controllers and, unless --disable-agent, a node)
  agent          Run an agent node that joins a server (--server URL --token TOKEN)
  kubectl        Run kubectl against the local server (KUBECONFIG=/etc/k3py/k3py.yaml)
  token          Print the node join token of the local server
  check-config   Check this host for what k3py needs
  airgap         Import image tarballs for air-gapped nodes

Run '{PROGRAM} COMMAND --help' for a command's flags. '{PROGRAM} --version' prints the version."""


def _fail(message: str) -> int:
    print(f"{PROGRAM}: error: {message}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 1
    if args[0] in ("--version", "-v", "version"):
        print(f"{PROGRAM} version v{__version__} (python {platform.python_version()})")
        return 0
    command, rest = args[0], args[1:]
    from k3py.cli.flags import UsageError
    try:
        if command == "server":
            from k3py.cli.server import server_command
            return server_command(rest)
        if command == "agent":
            from k3py.cli.agent import agent_command
            return agent_command(rest)
        if command == "kubectl":
            from k3py.cli.kubectl import kubectl_command
            return kubectl_command(rest)
        if command == "token":
            from k3py.cli.token import token_command
            return token_command(rest)
        if command == "check-config":
            from k3py.cli.check_config import check_config_command
            return check_config_command(rest)
        if command == "airgap":
            from k3py.cli.airgap import airgap_command
            return airgap_command(rest)
    except UsageError as e:
        return _fail(str(e))
    return _fail(f"unknown command {command!r}; run '{PROGRAM} --help' for the list")
