"""Shared pieces of the agent tests: `k3py server` with its embedded agent on real podman, the
offline busybox test image (airgap/build-test-image.sh), and cleanup of the podman pods a
test's node started (only those: podman is shared by everything on the machine)."""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests.harness import ServerProcess, wait_for

__all__ = ["ROOT", "IMAGE", "EmbeddedServer", "build_test_image", "embedded_node",
           "node_ready", "podman_pods", "remove_podman_pods"]

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "k3py.local/busybox:latest"


class EmbeddedServer(ServerProcess):
    """A server that runs its own node's agent (the harness passes --disable-agent)."""

    node = ""
    bind_address = ""  # e.g. 0.0.0.0 when pods must reach the API at the node's address

    def command(self) -> list[str]:
        cmd = [a for a in super().command() if a != "--disable-agent"]
        if self.bind_address:
            cmd[cmd.index("--bind-address") + 1] = self.bind_address
        return cmd


def build_test_image(dest: Path) -> Path:
    """Build the busybox test image into podman and save its tarball at `dest`."""
    subprocess.run(["sh", str(ROOT / "airgap" / "build-test-image.sh"), str(dest)],
                   check=True, capture_output=True)
    return dest


def remove_podman_pods(node: str) -> None:
    out = subprocess.run(["podman", "pod", "ps", "-q", "--filter",
                          f"label=io.k3py.node={node}"], capture_output=True, text=True)
    for pod_id in out.stdout.split():
        subprocess.run(["podman", "pod", "rm", "-f", "-t", "0", pod_id], capture_output=True)


def podman_pods(node: str) -> list[str]:
    out = subprocess.run(["podman", "pod", "ps", "--format", "{{.Name}}", "--filter",
                          f"label=io.k3py.node={node}"], capture_output=True, text=True)
    return out.stdout.split()


def node_ready(srv: ServerProcess, node: str) -> dict | None:
    """The Node if its Ready condition is True, else None."""
    n = srv.kubectl_json("get", "node", node)
    conds = {c["type"]: c["status"] for c in n["status"].get("conditions", [])}
    return n if conds.get("Ready") == "True" else None


@contextlib.contextmanager
def embedded_node(tmp: Path, prefix: str, timeout: float = 60.0, bind_address: str = "",
                  **server_kw) -> Iterator[EmbeddedServer]:
    """A started server whose embedded agent's node (`srv.node`) is Ready, with the test
    image in podman; stopped and its pods removed on exit."""
    build_test_image(tmp / "busybox.tar")
    node = f"{prefix}-{uuid.uuid4().hex[:6]}"
    srv = EmbeddedServer(tmp / "k3py", extra_args=["--node-name", node],
                         **server_kw)
    srv.node, srv.bind_address = node, bind_address
    try:
        srv.start()
        wait_for(lambda: node_ready(srv, node), timeout, 0.3, f"node {node} Ready")
        yield srv
    finally:
        srv.stop()
        remove_podman_pods(node)
