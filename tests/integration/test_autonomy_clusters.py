"""Two clusters on one host never touch each other's containers: two `k3py server`s with their
embedded agents, each its own data dir and port, name their node alike (as two servers on one
host named after the hostname do) and share podman. Each runs a pod; neither's pod is
stopped, restarted or adopted by the other while the other starts, syncs (full passes after a
deletion), stops and starts again. A pod labelled for the node by an agent older than the
cluster label, which neither cluster wants, is left alone by both. With the same cluster CIDR
and cluster DNS address, the second says in one line each that the first has them."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.harness import wait_for
from tests.integration.agents import (
    IMAGE,
    EmbeddedServer,
    build_test_image,
    node_ready,
    remove_podman_pods,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _pod(name: str, node: str) -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "c", "image": IMAGE, "imagePullPolicy": "Never",
            "command": ["sleep", "3600"]}]}})


def _containers(node: str) -> dict[str, tuple[str, str]]:
    """Kubernetes pod name -> (container id, state) of the node's pods."""
    return {c["Labels"]["io.k3py.pod-name"]: (c["Id"], c["State"]) for c in _listing(node)}


def _listing(node: str) -> list[dict]:
    out = subprocess.run(["podman", "ps", "-a", "--format", "json", "--filter",
                          f"label=io.k3py.node={node}", "--filter", "label=io.k3py.container"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return json.loads(out or "[]")


def _legacy_pods(node: str) -> list[str]:
    out = subprocess.run(["podman", "pod", "ps", "--format", "{{.Name}}", "--filter",
                          f"label=io.k3py.node={node}"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return [n for n in out.split() if n.startswith("legacy-")]


class Cluster:
    def __init__(self, tmp: Path, label: str, node: str) -> None:
        self.srv = EmbeddedServer(tmp / label, extra_args=["--node-name", node])
        self.srv.node = node
        self.pod = f"pod-{label}"

    def start(self) -> None:
        self.srv.start()
        wait_for(lambda: node_ready(self.srv, self.srv.node), 60, 0.3,
                 f"node {self.srv.node} Ready in {self.srv.data_dir}")

    def running(self, name: str) -> str:
        """The pod's container id once the API shows it Running, never restarted."""
        def ok() -> str:
            pod = self.srv.kubectl_json("get", "pod", name)
            cs = (pod["status"].get("containerStatuses") or [{}])[0]
            if pod["status"].get("phase") == "Running" and cs.get("restartCount") == 0:
                return cs["containerID"].split("//")[-1]
            return ""
        return wait_for(ok, 60, 0.3, f"pod {name} Running in {self.srv.data_dir}")

    def full_pass(self) -> None:
        """A pod deleted: the syncer's next pass lists podman and stops what it does not
        want (where another cluster's pods would go, were they listed as its own)."""
        self.srv.kubectl("apply", "-f", "-", input=_pod("churn", self.srv.node))
        self.running("churn")
        self.srv.kubectl("delete", "pod", "churn", "--timeout", "60s")


def test_two_clusters_with_one_node_name_keep_their_own_pods(tmp_path):
    node = f"same-{uuid.uuid4().hex[:6]}"
    build_test_image(tmp_path / "busybox.tar")
    a, b = Cluster(tmp_path, "a", node), Cluster(tmp_path, "b", node)
    legacy = f"legacy-{uuid.uuid4().hex[:6]}"
    try:
        subprocess.run(["podman", "pod", "create", "--name", legacy, "--label",
                        f"io.k3py.node={node}", "--label",
                        f"io.k3py.pod-uid={uuid.uuid4()}"], capture_output=True, check=True,
                       timeout=60)
        a.start()
        a.srv.kubectl("apply", "-f", "-", input=_pod(a.pod, node))
        id_a = a.running(a.pod)
        b.start()
        b.srv.kubectl("apply", "-f", "-", input=_pod(b.pod, node))
        id_b = b.running(b.pod)
        want = {a.pod: (id_a, "running"), b.pod: (id_b, "running")}
        assert _containers(node) == want

        for c in (a, b):
            c.full_pass()
        assert _containers(node) == want
        b.srv.stop()  # its pod stays, as an agent's stop leaves pods running
        a.srv.stop()
        a.start()  # a's first pass lists podman, b's pod and the unclaimed legacy one in it
        a.full_pass()
        assert _containers(node) == want
        assert a.running(a.pod) == id_a
        b.start()  # b adopts its own pod back
        b.full_pass()
        assert b.running(b.pod) == id_b
        assert _containers(node) == want
        assert _legacy_pods(node) == [legacy]
        clusters = {c["Labels"]["io.k3py.pod-name"]: c["Labels"].get("io.k3py.cluster")
                    for c in _listing(node)}
        assert clusters[a.pod] and clusters[b.pod] and clusters[a.pod] != clusters[b.pod]
        # one --cluster-cidr for both: a's pod bridge has the node's subnet, so b's node is
        # refused its own in one line naming a's (its pods run on podman's default network,
        # with no routes), and b cannot answer on the cluster DNS address a answers on
        log_b = b.srv.log_path.read_text()
        refused = [ln for ln in log_b.splitlines() if "cannot make the pod network" in ln]
        assert refused and all(
            f"the pod network k3py-{clusters[a.pod]}-{node} of another k3py cluster on this "
            f"host has subnet 10.42.0.0/24 and is in use" in ln for ln in refused), refused
        assert "another k3py cluster on this host may answer there: give each its own " \
            "--cluster-dns and --service-cidr" in log_b, log_b[-3000:]
    finally:
        a.srv.stop()
        b.srv.stop()
        remove_podman_pods(node)
