"""Pod streams beyond logs: kubectl port-forward (websocket-tunneled SPDY and plain SPDY, a
server bound to 127.0.0.1 inside the pod), exec over SPDY, attach, cp both ways, and the
Status errors of those subresources.

One `k3py server` with its embedded agent runs real busybox pods on podman (the offline test
image); everything is driven by the real kubectl. Podman pods removed at teardown."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.harness import KUBECTL, ServerProcess, free_port, wait_for

pytestmark = pytest.mark.integration

IMAGE = "k3py.local/busybox:latest"


class EmbeddedServer(ServerProcess):
    def command(self) -> list[str]:
        return [a for a in super().command() if a != "--disable-agent"]


def _remove_podman_pods(node: str) -> None:
    out = subprocess.run(["podman", "pod", "ps", "-q", "--filter",
                          f"label=io.k3py.node={node}"], capture_output=True, text=True)
    for pod_id in out.stdout.split():
        subprocess.run(["podman", "pod", "rm", "-f", "-t", "0", pod_id], capture_output=True)


def _pod(name: str, node: str, script: str, **container) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{
                "name": "c", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", script], **container}]}}


PODS = {
    # busybox httpd on all addresses, and one bound to the pod's loopback only
    "web": dict(script="mkdir -p /www && echo hello-web > /www/index.html && "
                       "exec httpd -f -p 8080 -h /www"),
    "local": dict(script="mkdir -p /www && echo hello-local > /www/index.html && "
                         "exec httpd -f -p 127.0.0.1:8081 -h /www"),
    # attach targets: one echoing its stdin, one printing a tick every 0.2 s
    "echo": dict(script="while read l; do echo got:$l; done; sleep 3600", stdin=True),
    "ticker": dict(script="i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.2; done"),
    "done": dict(script="echo finished", restartPolicy=None),
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("streams")
    root = Path(__file__).resolve().parents[2]
    subprocess.run(["sh", str(root / "airgap" / "build-test-image.sh"),
                    str(tmp / "busybox.tar")], check=True, capture_output=True)
    node = f"str-{uuid.uuid4().hex[:6]}"
    srv = EmbeddedServer(tmp / "k3py", extra_args=["--node-name", node])
    try:
        srv.start()
        def ready():
            n = srv.kubectl_json("get", "node", node)
            conds = {c["type"]: c["status"] for c in n["status"].get("conditions", [])}
            return conds.get("Ready") == "True"
        wait_for(ready, 30, 0.3, f"node {node} Ready")
        items = []
        for name, p in PODS.items():
            extra = {k: v for k, v in p.items() if k not in ("script", "restartPolicy")}
            pod = _pod(name, node, p["script"], **extra)
            if "restartPolicy" in p:
                pod["spec"]["restartPolicy"] = "Never"
            items.append(pod)
        srv.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(i) for i in items))

        def phases():
            out = srv.kubectl_json("get", "pods")
            got = {p["metadata"]["name"]: p["status"].get("phase") for p in out["items"]}
            want = {n: "Succeeded" if n == "done" else "Running" for n in PODS}
            return got == want
        wait_for(phases, 60, 0.3, "pods Running (and done Succeeded)")
        srv.node = node
        yield srv
    finally:
        srv.stop()
        _remove_podman_pods(node)


def _kubectl_popen(srv, *args: str, env: dict | None = None, stdin=None):
    return subprocess.Popen([KUBECTL, "--kubeconfig", str(srv.kubeconfig), *args],
                            stdin=stdin or subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def _port_forward(srv, target: str, remote: int, env: dict | None = None):
    """Runs `kubectl port-forward`, yields the local port once it listens."""
    local = free_port()
    proc = _kubectl_popen(srv, "port-forward", target, f"{local}:{remote}", env=env)
    line = proc.stdout.readline()  # "Forwarding from 127.0.0.1:<local> -> <remote>"
    if "Forwarding from" not in line:
        proc.kill()
        raise AssertionError(f"port-forward did not start: {line}{proc.stderr.read()}")
    return proc, local


def _stop(proc) -> tuple[str, str]:
    proc.terminate()
    try:
        return proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


@pytest.mark.parametrize("websockets", ["true", "false"])
def test_port_forward(cluster, websockets):
    env = {"KUBECTL_PORT_FORWARD_WEBSOCKETS": websockets}
    proc, local = _port_forward(cluster, "pod/web", 8080, env)
    try:
        for _ in range(3):  # several connections over one session
            assert _fetch(f"http://127.0.0.1:{local}/") == "hello-web\n"
    finally:
        _stop(proc)
    # a server bound to 127.0.0.1 inside the pod is reached through the pod's own loopback
    proc, local = _port_forward(cluster, "pod/local", 8081, env)
    try:
        assert _fetch(f"http://127.0.0.1:{local}/") == "hello-local\n"
    finally:
        _stop(proc)


def test_port_forward_to_a_closed_port_reports_the_error(cluster):
    proc, local = _port_forward(cluster, "pod/web", 9999)
    try:
        with pytest.raises(OSError):
            _fetch(f"http://127.0.0.1:{local}/")
    finally:
        _, err = _stop(proc)
    assert "9999" in err and "connection refused" in err.lower(), err
