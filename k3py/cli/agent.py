"""`k3py agent`: parse flags into an AgentConfig and run the agent until stopped."""

from __future__ import annotations

from k3py.cli.flags import UsageError, agent_config

__all__ = ["agent_command"]


def agent_command(argv: list[str]) -> int:
    config = agent_config(argv)
    if not config.server:
        raise UsageError("--server (or K3PY_URL) is required, e.g. --server https://HOST:6443")
    if not config.token and not config.token_file:
        raise UsageError("--token (or K3PY_TOKEN) is required; get it with 'k3py token' on "
                         "the server")
    from k3py.agent import main as agent_main
    return agent_main.run(config)
