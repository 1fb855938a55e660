"""The pod network across nodes, for real: a server started with a non-default
--cluster-cidr/--node-cidr-mask-size and two agents in network namespaces joined by a direct
link (one LAN: tests/integration/twonodes.py with `link`), real podman pods.

- each Node gets its own pod CIDR from the cluster CIDR; each agent's pods are on its podman
  bridge network with that subnet, and `status.podIP` is in it;
- each agent routes the other node's pod CIDR via its node IP (host-gw), and a pod on agent A
  reaches a pod on agent B by pod IP;
- a pod on A reaches a ClusterIP Service whose endpoints are on both nodes, and gets answers
  from both;
- an endpoint removed from the Service (its pod relabelled, still running) is out of A's
  rules within 2 s, and traffic to the Service reaches only the other endpoint after that.

Needs root (`ip netns`), podman and nft; skipped with the reason otherwise."""

from __future__ import annotations

import ipaddress
import json
import shutil
import time

import pytest

from tests.integration.agents import IMAGE
from tests.integration.twonodes import Cluster, two_agent_cluster

pytestmark = [pytest.mark.integration]

CLUSTER_CIDR = "10.52.0.0/16"
MASK = 26
PORT = 8080
TABLE_PREFIX = "k3py-proxy-"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if shutil.which("nft") is None:
        pytest.skip("nft is not installed")
    with two_agent_cluster(tmp_path_factory.mktemp("podnet"), {}, link=True, server_args=(
            "--cluster-cidr", CLUSTER_CIDR, "--node-cidr-mask-size", str(MASK))) as c:
        yield c


def web_pod(c: Cluster, name: str, node: str, labels: dict[str, str]) -> None:
    """A busybox httpd on PORT that answers with the pod's name, on `node`."""
    script = (f"mkdir -p /www && echo {name} > /www/index.html && "
              f"exec httpd -f -p {PORT} -h /www")
    c.srv.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "c", "image": IMAGE, "imagePullPolicy": "Never",
            "command": ["sh", "-c", script],
            "readinessProbe": {"tcpSocket": {"port": PORT}, "periodSeconds": 1}}]}}))


def fetch_from(c: Cluster, pod: str, ip: str, port: int, times: int = 1) -> list[str]:
    """The bodies `times` HTTP GETs of ip:port from inside `pod` answered ("" for a failed
    one). busybox's nc, not its wget: the static wget crashes when a connection fails."""
    get = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} {port} | tail -n 1"
    loop = f"for i in $(seq {times}); do echo \"[$({get})]\"; done"
    out = c.srv.kubectl("exec", pod, "--", "sh", "-c", loop, check=False, timeout=60)
    return [line.strip().strip("[]") for line in out.stdout.splitlines()]


def node_cidr(c: Cluster, node: str) -> str:
    return c.srv.kubectl_json("get", "node", node).get("spec", {}).get("podCIDR") or ""


def routes_in(ag) -> str:
    return ag.ns.run(["ip", "-4", "route", "show", "proto", "201"]).stdout


def rules_of(ag) -> str:
    out = ag.ns.run(["nft", "list", "tables"]).stdout
    tables = [line.split()[-1] for line in out.splitlines() if TABLE_PREFIX in line]
    return "".join(ag.ns.run(["nft", "list", "table", "ip", t]).stdout for t in tables)


def test_pods_get_node_cidr_ips_and_reach_each_other_and_services(cluster: Cluster):
    c = cluster
    a, b = c.a, c.b
    cidrs = {ag.name: c.wait(lambda n=ag.name: node_cidr(c, n), 30, f"{ag.name} podCIDR")
             for ag in (a, b)}
    for cidr in cidrs.values():
        net = ipaddress.ip_network(cidr)
        assert net.prefixlen == MASK and net.subnet_of(ipaddress.ip_network(CLUSTER_CIDR))
    assert cidrs[a.name] != cidrs[b.name]

    web_pod(c, "web-a", a.name, {"app": "web"})
    web_pod(c, "web-b", b.name, {"app": "web"})
    web_pod(c, "client", a.name, {"role": "client"})
    pods = {p: c.wait(lambda p=p: c.running(p), 90, f"pod {p} Running and Ready")
            for p in ("web-a", "web-b", "client")}
    for p, obj in pods.items():
        ip = ipaddress.ip_address(obj["status"]["podIP"])
        assert ip in ipaddress.ip_network(cidrs[obj["spec"]["nodeName"]]), (p, ip, cidrs)

    # host-gw: each namespace routes the other's pod CIDR via the other's node IP
    c.wait(lambda: cidrs[b.name] in routes_in(a) and cidrs[a.name] in routes_in(b), 10,
           "routes to the other node's pod CIDR")
    # pod on A -> pod on B by pod IP, across the link
    ip_b = pods["web-b"]["status"]["podIP"]
    got = fetch_from(c, "client", ip_b, PORT)
    assert got == ["web-b"], c.logs()

    # pod on A -> ClusterIP with an endpoint on each node: both answer
    c.srv.kubectl("expose", "pod", "web-a", "--name", "web", "--port", "80",
                  "--target-port", str(PORT), "--selector", "app=web")
    svc_ip = c.srv.kubectl_json("get", "service", "web")["spec"]["clusterIP"]
    ip_a = pods["web-a"]["status"]["podIP"]
    c.wait(lambda: ip_a in rules_of(a) and ip_b in rules_of(a), 20,
           "both endpoints in agent A's service rules")
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while seen != {"web-a", "web-b"}:
        assert time.monotonic() < deadline, f"only {seen} answered through {svc_ip}\n{c.logs()}"
        seen.update(x for x in fetch_from(c, "client", svc_ip, 80, 8) if x)

    # endpoint removal: web-b leaves the Service (still running); out of A's rules in 2 s
    c.srv.kubectl("label", "pod", "web-b", "app-")
    c.wait(lambda: ip_b not in json.dumps(c.srv.kubectl_json(
        "get", "endpointslices", "-l", "kubernetes.io/service-name=web")), 20,
        "web-b out of the EndpointSlice")
    c.wait(lambda: ip_b not in rules_of(a), 2, "web-b out of agent A's rules within 2 s")
    answers = fetch_from(c, "client", svc_ip, 80, 10)
    assert answers == ["web-a"] * 10, answers
