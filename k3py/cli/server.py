"""`k3py server`: parse flags into a ServerConfig and run the server; unless --disable-agent,
start the embedded agent in the same process once the API is ready (as K3s does)."""

from __future__ import annotations

import logging

from k3py.cli.flags import server_config

__all__ = ["server_command"]

log = logging.getLogger("k3py.cli")


def server_command(argv: list[str]) -> int:
    config = server_config(argv)
    from k3py.server import main as server_main
    after_ready = None if config.disable_agent else _start_embedded_agent
    return server_main.run(config, after_ready=after_ready)


async def _start_embedded_agent(config, server):
    """Runs the same agent code as `k3py agent`, in-process, against the local API."""
    try:
        from k3py.agent.main import start_agent
    except ImportError as e:  # pragma: no cover - agent package incomplete
        log.warning("embedded agent not available: %s", e)
        return None
    with open(config.token_path) as f:
        token = f.read().strip()
    agent_cfg = config.agent_config(f"https://127.0.0.1:{config.https_listen_port}", token)
    try:
        return await start_agent(agent_cfg, embedded=True)
    except Exception as e:  # noqa: BLE001 - the API stays up even if this node cannot run pods
        log.error("embedded agent did not start (%s); the API server keeps running. "
                  "Run 'k3py check-config' to see what this host is missing.", e)
        return None
