"""Services and cluster DNS on a one-machine `k3py server` with real pods: a busybox httpd
Deployment, `kubectl expose`, then a client pod (the offline Python image) resolves the
Service by short name and FQDN through the node's DNS at 10.43.0.10 (its resolv.conf as the
kubelet writes it) and fetches from it through the node's nftables rules; kube-dns exists in
kube-system with that IP, and kubernetes.default resolves to the API's ClusterIP."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.harness import wait_for
from tests.integration.agents import IMAGE, ROOT, embedded_node

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PY_IMAGE = "k3py.local/python-k8s:latest"

CLIENT = """
import json, socket, urllib.request
out = {"resolv": open("/etc/resolv.conf").read()}
for name in ("web", "web.default.svc.cluster.local", "kubernetes.default"):
    try:
        out[name] = socket.gethostbyname(name)
    except OSError as e:
        out[name] = "error: %s" % e
try:
    out["body"] = urllib.request.urlopen("http://web/", timeout=10).read().decode()
except Exception as e:
    out["body"] = "error: %s" % e
print("RESULT " + json.dumps(out), flush=True)
"""


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "k3py"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    _cache_dir().mkdir(parents=True, exist_ok=True)
    subprocess.run(["sh", str(ROOT / "airgap" / "build-python-image.sh"),
                    str(_cache_dir() / "python-k8s.tar")], check=True, capture_output=True)
    with embedded_node(tmp_path_factory.mktemp("svc"), "svc") as s:
        yield s


def test_expose_then_fetch_by_name(srv):
    dns = srv.kubectl_json("get", "service", "-n", "kube-system", "kube-dns")
    assert dns["spec"]["clusterIP"] == "10.43.0.10"
    web = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                        "containers": [{"name": "httpd", "image": IMAGE,
                                        "imagePullPolicy": "Never",
                                        "command": ["sh", "-c",
                                                    "mkdir -p /www && echo hello > "
                                                    "/www/index.html && "
                                                    "exec httpd -f -p 8080 -h /www"],
                                        "readinessProbe": {"tcpSocket": {"port": 8080},
                                                           "periodSeconds": 1}}]}}}}
    srv.kubectl("apply", "-f", "-", input=json.dumps(web))
    srv.kubectl("expose", "deployment", "web", "--port", "80", "--target-port", "8080")
    wait_for(lambda: srv.kubectl_json("get", "deployment", "web").get("status", {})
             .get("readyReplicas") == 2, 120, 0.5, "web ready")
    client = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
              "spec": {"restartPolicy": "Never", "containers": [{
                  "name": "c", "image": PY_IMAGE, "imagePullPolicy": "Never",
                  "command": ["python3", "-c", CLIENT]}]}}
    srv.kubectl("apply", "-f", "-", input=json.dumps(client))

    def result() -> dict | None:
        out = srv.kubectl("logs", "client", check=False).stdout
        for line in out.splitlines():
            if line.startswith("RESULT "):
                return json.loads(line[7:])
        return None
    got = wait_for(result, 120, 1.0, "the client pod's result")
    svc_ip = srv.kubectl_json("get", "service", "web")["spec"]["clusterIP"]
    assert "nameserver 10.43.0.10" in got["resolv"], got
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in got["resolv"]
    assert "ndots:5" in got["resolv"], got
    assert got["web"] == svc_ip and got["web.default.svc.cluster.local"] == svc_ip, got
    assert got["kubernetes.default"] == "10.43.0.1", got
    assert got["body"] == "hello\n", got
