"""`k3py agent`: flags -> AgentConfig -> k3py.agent.main.run(config), which blocks until
stopped. --server (K3PY_URL) and a token (K3PY_TOKEN or --token-file) are required.
`k3py agent pods` prints the node's pods from its local state instead (cli/pods.py)."""

from __future__ import annotations

from k3py import PROGRAM
from k3py.cli.flags import UsageError, agent_config

__all__ = ["agent_command"]


def agent_command(argv: list[str]) -> int:
    if argv and argv[0] == "pods":
        from k3py.cli.pods import pods_command
        return pods_command(argv[1:])
    config = agent_config(argv)
    if not config.server:
        raise UsageError("--server (or K3PY_URL) is required, e.g. --server "
                         "https://SERVER:6443")
    if not config.token:
        raise UsageError(f"--token (or K3PY_TOKEN) is required; get it with '{PROGRAM} token' "
                         f"on the server")
    from k3py.agent import main as agent_main  # heavy: only when really running
    return agent_main.run(config)
