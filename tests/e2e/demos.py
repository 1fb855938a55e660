"""Shared pieces of the demos' e2e tests: a `k3py server` with its embedded agent (the one-machine
cluster the demos' run.sh targets) on free ports and a temporary data dir, the mapper image's
tarball dropped in its <data-dir>/agent/images/ before start (imported like any image), and
running an examples/<demo>/run.sh against it with the environment a user would set."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.harness import KUBECTL, clean_env, free_port, wait_for
from tests.integration.agents import EmbeddedServer, node_ready, remove_podman_pods, stop_proc

__all__ = ["ROOT", "MAPPER_IMAGE", "Demo", "JoinedAgent", "demo_cluster", "joined_agent",
           "server_and_agent", "build_mapper_image"]

ROOT = Path(__file__).resolve().parents[2]
MAPPER_IMAGE = "k3py.local/mapper:latest"


def image_present() -> bool:
    return subprocess.run(["podman", "image", "exists", MAPPER_IMAGE]).returncode == 0


def build_mapper_image(dest: Path) -> Path:
    """Build the mapper image from this checkout (always: the demos' programs are in it)."""
    out = subprocess.run(["sh", str(ROOT / "airgap" / "build-mapper-image.sh"), str(dest)],
                         capture_output=True, text=True, env={**os.environ, "K3PY_REBUILD": "1"})
    assert out.returncode == 0, f"build-mapper-image.sh failed:\n{out.stderr}"
    return dest


class Demo(EmbeddedServer):
    """The one-machine cluster: its node's name, MQTT port and the run.sh environment."""

    mqtt_port = 0

    def run_env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "KUBECTL": KUBECTL,
                "K3PY_DATA_DIR": str(self.data_dir), "K3PY_MQTT_PORT": str(self.mqtt_port),
                "TIMEOUT": "90", **extra}

    def run_sh(self, demo: str, *args: str, timeout: float = 150,
               **extra: str) -> subprocess.CompletedProcess:
        out = subprocess.run(["sh", str(ROOT / "examples" / demo / "run.sh"), *args],
                             capture_output=True, text=True, env=self.run_env(**extra),
                             timeout=timeout)
        assert out.returncode == 0, (f"{demo}/run.sh failed ({out.returncode}):\n{out.stdout}\n"
                                     f"{out.stderr}\n" + self.log_path.read_text()[-3000:])
        return out

    def popen_run_sh(self, demo: str, *args: str, **extra: str) -> subprocess.Popen:
        return subprocess.Popen(["sh", str(ROOT / "examples" / demo / "run.sh"), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.run_env(**extra), start_new_session=True)


@contextlib.contextmanager
def demo_cluster(tmp: Path, prefix: str, image_tar: Path) -> Iterator[Demo]:
    """A started server whose embedded agent's node is Ready, its broker on a free port and the
    mapper image imported from its images directory; stopped and its pods removed on exit."""
    node = f"{prefix}-{uuid.uuid4().hex[:6]}"
    srv = Demo(tmp / "k3py", extra_args=["--node-name", node])
    srv.mqtt_port = free_port()
    srv.extra_args += ["--mqtt-port", str(srv.mqtt_port)]
    # pods read the API at the node's address (the web controller's in-cluster client)
    srv.node, srv.bind_address = node, "0.0.0.0"
    images = srv.data_dir / "agent" / "images"
    images.mkdir(parents=True)
    shutil.copy(image_tar, images / "k3py-mapper.tar")
    try:
        srv.start()
        wait_for(lambda: node_ready(srv, node), 60, 0.3, f"node {node} Ready")
        # the agent imported the tarball before registering its node
        assert image_present(), srv.log_path.read_text()[-3000:]
        yield srv
    finally:
        srv.stop()
        remove_podman_pods(node)


@dataclass(frozen=True)
class JoinedAgent:
    node: str
    data_dir: Path
    mqtt_port: int

    def run_env(self) -> dict[str, str]:
        """What a user sets for run.sh to put the edge side on this agent's node."""
        return {"EDGE_NODE": self.node, "K3PY_DATA_DIR": str(self.data_dir),
                "K3PY_MQTT_PORT": str(self.mqtt_port)}


@contextlib.contextmanager
def joined_agent(srv: Demo, tmp: Path, prefix: str, image_tar: Path) -> Iterator[JoinedAgent]:
    """A `k3py agent` joined to `srv` on this host (its own data dir and broker port), the
    mapper image dropped in its images directory before start; stopped and its pods removed."""
    agent = JoinedAgent(f"{prefix}-{uuid.uuid4().hex[:6]}", tmp / "agent", free_port())
    images = agent.data_dir / "agent" / "images"
    images.mkdir(parents=True)
    shutil.copy(image_tar, images / "k3py-mapper.tar")
    log = open(tmp / "agent.log", "ab")
    proc = subprocess.Popen(srv.agent_command(agent.data_dir, agent.node, "--mqtt-port",
                                              str(agent.mqtt_port)),
                            stdout=log, stderr=subprocess.STDOUT, env=clean_env(),
                            start_new_session=True)
    try:
        wait_for(lambda: proc.poll() is None and node_ready(srv, agent.node), 60, 0.3,
                 f"agent node {agent.node} Ready")
        assert "imported 1 image tarball(s)" in (tmp / "agent.log").read_text()
        yield agent
    finally:
        if proc.poll() is None:
            stop_proc(proc)
        log.close()
        remove_podman_pods(agent.node)


@contextlib.contextmanager
def server_and_agent(tmp: Path, prefix: str,
                     image_tar: Path) -> Iterator[tuple[Demo, JoinedAgent]]:
    """demo_cluster plus a joined_agent: node names `{prefix}s-…` (server) and `{prefix}a-…`."""
    with demo_cluster(tmp, f"{prefix}s", image_tar) as srv, \
            joined_agent(srv, tmp, f"{prefix}a", image_tar) as agent:
        yield srv, agent
