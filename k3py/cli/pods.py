"""`k3py agent pods [--data-dir DIR] [-o json]`: the node's pods as `kubectl get pods -A -o
wide` shows them, and the messages queued for the server, read from the agent's own state
(k3py.agent.localstate) and podman: works while the server is unreachable or the agent stopped."""

from __future__ import annotations

import asyncio
import json
import os
import shutil

from k3py import PROGRAM
from k3py.cli.flags import PODS, HelpRequested, UsageError, help_text, parse
from k3py.config import AgentConfig, podman_storage_args

__all__ = ["pods_command"]


def _help() -> str:
    return help_text(PODS) + (
        "\n\nReads <data-dir>/agent/meta.db (read-only) and podman; needs no server. The "
        "status of each pod is computed from podman now, as the agent would report it.")


def pods_command(argv: list[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        raise HelpRequested(_help())
    values = parse(argv, PODS)
    config = AgentConfig(**{k: v for k, v in values.items()
                            if k in ("data_dir", "node_name", "with_node_id", "podman_root")})
    from k3py.agent import localstate  # the agent's modules: only when really running
    try:
        state = localstate.read_cache(config.data_dir)
    except localstate.NoAgentState as e:
        raise UsageError(str(e)) from None
    node = next((p["spec"]["nodeName"] for p in state.pods
                 if (p.get("spec") or {}).get("nodeName")), "") or config.effective_node_name
    live, podman_error = None, ""
    if shutil.which("podman") is None:
        podman_error = "podman is not installed (not found on PATH)"
    else:
        from k3py.agent.runtime.podman import Podman, RuntimeError_
        runtime = Podman(node_name=node, extra_args=podman_storage_args(config.podman_root))
        try:
            live = asyncio.run(localstate.read_podman(runtime, node))
        except (RuntimeError_, OSError, ValueError) as e:
            podman_error = f"cannot read podman: {e}"
    rows = localstate.node_pods(state, live, os.path.join(config.agent_dir, "pods"))
    if values.get("output") == "json":
        print(json.dumps({"node": node, "synced": state.synced, "outbox": state.outbox,
                          "podmanError": podman_error, "pods": rows}, indent=2))
        return 0
    print(localstate.table(rows) if rows else f"No pods cached for node {node}.")
    print(f"\nnode {node}: {state.outbox} message(s) queued for the server"
          + ("" if state.synced else "; no full snapshot received yet"))
    if podman_error:
        print(f"{PROGRAM}: warning: {podman_error}; the status shown is the one the agent "
              f"recorded last")
    return 0
