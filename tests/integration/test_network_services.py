"""Services and cluster DNS on a one-machine `k3py server` with real pods: a busybox httpd
Deployment, `kubectl expose`, then a client pod (the offline Python image) resolves the
Service by short name and FQDN through the node's DNS at 10.43.0.10 (its resolv.conf as the
kubelet writes it) and fetches from it through the node's nftables rules; kube-dns exists in
kube-system with that IP, and kubernetes.default resolves to the API's ClusterIP.

ServiceLB: a LoadBalancer Service of the same pods answers on the node IP and its port from
the host, its status and `kubectl get svc`'s EXTERNAL-IP show the node IP; one on a port a
host process listens on leaves the node out, with an Event, and the process keeps its port."""

from __future__ import annotations

import json
import socket
import urllib.request

import pytest

from tests.harness import free_port, wait_for
from tests.integration.agents import IMAGE, PY_IMAGE, build_python_image, embedded_node

pytestmark = [pytest.mark.integration, pytest.mark.slow]


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


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    build_python_image()
    with embedded_node(tmp_path_factory.mktemp("svc"), "svc") as s:
        yield s


@pytest.fixture(scope="module")
def web(srv):
    """Two busybox httpd pods labelled app=web answering "hello" on 8080, ready."""
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
    wait_for(lambda: srv.kubectl_json("get", "deployment", "web").get("status", {})
             .get("readyReplicas") == 2, 120, 0.5, "web ready")


def test_expose_then_fetch_by_name(srv, web):
    dns = srv.kubectl_json("get", "service", "-n", "kube-system", "kube-dns")
    assert dns["spec"]["clusterIP"] == "10.43.0.10"
    srv.kubectl("expose", "deployment", "web", "--port", "80", "--target-port", "8080")
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


def _lb_service(name: str, port: int) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                       "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                                "ports": [{"port": port, "targetPort": 8080}]}})


def _ingress(srv, name: str) -> list[str]:
    svc = srv.kubectl_json("get", "service", name)
    return [i.get("ip") for i in svc.get("status", {}).get("loadBalancer", {})
            .get("ingress") or []]


def test_load_balancer_answers_on_the_node_ip(srv, web):
    node = srv.kubectl_json("get", "node", srv.node)
    node_ip = next(a["address"] for a in node["status"]["addresses"]
                   if a["type"] == "InternalIP")
    port = free_port()
    srv.kubectl("apply", "-f", "-", input=_lb_service("web-lb", port))
    assert wait_for(lambda: _ingress(srv, "web-lb"), 30, 0.3, "web-lb's ingress") == [node_ip]
    svc = srv.kubectl_json("get", "service", "web-lb")
    assert svc["status"]["loadBalancer"]["ingress"] == [{"ip": node_ip, "ipMode": "VIP"}]
    row = srv.kubectl("get", "service", "web-lb", "--no-headers").stdout.split()
    assert row[1:4] == ["LoadBalancer", svc["spec"]["clusterIP"], node_ip], row

    def fetch() -> str | None:
        try:
            with urllib.request.urlopen(f"http://{node_ip}:{port}/", timeout=3) as r:
                return r.read().decode()
        except OSError:
            return None  # the node's rules come a moment after the status
    assert wait_for(fetch, 30, 0.3, f"http://{node_ip}:{port}/") == "hello\n"


def test_a_port_in_use_leaves_the_node_out_with_an_event(srv, web):
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", 0))
        listener.listen()
        port = listener.getsockname()[1]
        srv.kubectl("apply", "-f", "-", input=_lb_service("web-taken", port))

        def port_in_use_event() -> list[dict]:
            events = srv.kubectl_json("get", "events", "--field-selector",
                                      "involvedObject.name=web-taken")["items"]
            return [e for e in events if e["reason"] == "PortInUse"]
        (event,) = wait_for(port_in_use_event, 30, 0.3, "a PortInUse Event on web-taken")
        assert f"TCP/{port}" in event["message"] and srv.node in event["message"], event
        assert wait_for(lambda: _ingress(srv, "web-taken") == [], 30, 0.3, "no ingress")
        # the host process still gets its connections
        with socket.create_connection(("127.0.0.1", port), timeout=3):
            conn, _ = listener.accept()
            conn.close()
