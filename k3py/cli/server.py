"""`k3py server`: flags -> ServerConfig -> k3py.server.main.run(config, after_ready=...);
unless --disable-agent, the embedded agent starts in the same process once the API is up."""

from __future__ import annotations

import logging
from typing import Any

from k3py.cli.flags import UsageError, server_config
from k3py.config import AgentConfig, ServerConfig, redact_endpoint
from k3py.pki import PkiError

__all__ = ["server_command"]

log = logging.getLogger("k3py.cli")


def server_command(argv: list[str]) -> int:
    config = server_config(argv)
    if config.cluster_reset:
        return cluster_reset(config)
    from k3py.server import main as server_main  # heavy: only when really serving
    after_ready = None if config.disable_agent else start_embedded_agent
    try:
        return server_main.run(config, after_ready=after_ready)
    except PkiError as e:  # a damaged TLS dir: the message says how to repair it
        raise UsageError(str(e)) from None


def cluster_reset(config: ServerConfig) -> int:
    """K3s's `--cluster-reset --cluster-reset-restore-path`: replace the store with the
    snapshot, say so, and exit; the user then starts the server without the two flags."""
    from k3py.cli.snapshot import POSTGRES_REFUSAL
    from k3py.server.snapshots import SnapshotError, restore
    if config.datastore_endpoint:
        raise UsageError(POSTGRES_REFUSAL.format(
            endpoint=redact_endpoint(config.datastore_endpoint)))
    try:
        kept = restore(config.db_path, config.cluster_reset_restore_path)
    except SnapshotError as e:
        raise UsageError(str(e)) from None
    print(f"Store restored from {config.cluster_reset_restore_path}"
          + (f"; the previous store is kept as {kept}" if kept else "")
          + ". Restart without --cluster-reset and --cluster-reset-restore-path now.",
          flush=True)
    return 0


async def start_embedded_agent(config: ServerConfig, server: Any) -> Any:
    """Run the same agent code as `k3py agent`, in-process, against the local API. The
    server package may not import the agent (layers), so the CLI wires them together."""
    try:
        from k3py.agent.main import start_agent
    except ImportError as e:  # pragma: no cover - agent package incomplete
        log.warning("embedded agent not available: %s", e)
        return None
    with open(config.token_path) as f:
        token = f.read().strip()
    url = server.url
    try:
        return await start_agent(AgentConfig.for_node(config, server=url, token=token))
    except Exception as e:  # noqa: BLE001 - the API stays up even if this node cannot run pods
        log.error("embedded agent did not start (%s); the API server keeps running. "
                  "Run 'k3py check-config' to see what this host is missing.", e)
        return None
