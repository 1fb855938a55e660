"""The pod network across nodes, for real: a server started with a non-default
--cluster-cidr/--node-cidr-mask-size and two agents in network namespaces joined by a direct
link (one LAN: tests/integration/twonodes.py with `link`), real podman pods.

The cluster CIDR holds two node subnets, and a Node object with no agent ("placeholder") takes
one before the agents join: the first agent to register gets the other, the second ("late")
gets none (CIDRNotAvailable).
- the late node's pod waits for a pod CIDR, then runs on podman's default network; once the
  placeholder Node is deleted its CIDR goes to the late node at once, and the pod is recreated
  on the node's new bridge network: its `status.podIP` is now in that CIDR;
- each agent routes the other node's pod CIDR via its node IP (host-gw), and a pod on one
  node reaches a pod on the other by pod IP;
- a pod reaches a ClusterIP Service whose endpoints are on both nodes, and gets answers from
  both;
- an endpoint removed from the Service (its pod relabelled, still running) is out of the
  client node's rules within 2 s, and traffic to the Service reaches only the other endpoint;
- the ingress on :80/:443 of each node (curl from the host to the node's namespace address)
  reaches a backend pod on its own node and one on the other node (the host-gw routes), by
  exact and wildcard host, over HTTP and HTTPS (a real TLS secret chosen by SNI); status.loadBalancer.ingress lists both nodes, and is cleared (the routes
  gone) once the Ingress names another class.

Needs root (`ip netns`), podman and nft; skipped with the reason otherwise."""

from __future__ import annotations

import ipaddress
import json
import shutil
import time

import pytest

from tests.integration.agents import IMAGE, curl_host, tls_secret
from tests.integration.twonodes import Agent, Cluster, two_agent_cluster

pytestmark = [pytest.mark.integration]

CLUSTER_CIDR = "10.52.0.0/25"
MASK = 26  # two node subnets
PORT = 8080
TABLE_PREFIX = "k3py-proxy-"
PLACEHOLDER = "placeholder"


def placeholder_node(srv) -> None:
    srv.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": PLACEHOLDER}}))
    srv.kubectl("wait", "node", PLACEHOLDER, "--for=jsonpath={.spec.podCIDR}", "--timeout=20s")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if shutil.which("nft") is None:
        pytest.skip("nft is not installed")
    # each agent in its own namespace: the ingress on the real :80/:443 of its node
    ports = ["--ingress-http-port", "80", "--ingress-https-port", "443"]
    with two_agent_cluster(tmp_path_factory.mktemp("podnet"), {"a": ports, "b": ports},
                           link=True, server_args=(
            "--cluster-cidr", CLUSTER_CIDR, "--node-cidr-mask-size", str(MASK)),
            before_agents=placeholder_node) as c:
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


def routes_in(ag: Agent) -> str:
    return ag.ns.run(["ip", "-4", "route", "show", "proto", "201"]).stdout


def rules_of(ag: Agent) -> str:
    out = ag.ns.run(["nft", "list", "tables"]).stdout
    tables = [line.split()[-1] for line in out.splitlines() if TABLE_PREFIX in line]
    return "".join(ag.ns.run(["nft", "list", "table", "ip", t]).stdout for t in tables)


def pod_ip_in(c: Cluster, pod: str, cidr: str) -> str | None:
    obj = c.running(pod)
    ip = ((obj or {}).get("status") or {}).get("podIP")
    return ip if ip and ipaddress.ip_address(ip) in ipaddress.ip_network(cidr) else None


def test_pod_cidrs_routes_pod_to_pod_and_services_across_nodes(cluster: Cluster):
    c = cluster
    early = c.wait(lambda: next((ag for ag in (c.a, c.b) if node_cidr(c, ag.name)), None),
                   20, "the first agent's pod CIDR")
    late = c.b if early is c.a else c.a
    assert node_cidr(c, late.name) == "", "the cluster CIDR should hold two node subnets"

    # the late node has no CIDR yet: its pod runs on podman's default network after a wait
    web_pod(c, "web-late", late.name, {"app": "web"})
    obj = c.wait(lambda: c.running("web-late"), 60, "web-late Running without a pod CIDR")
    assert ipaddress.ip_address(obj["status"]["podIP"]) not in \
        ipaddress.ip_network(CLUSTER_CIDR), obj["status"]
    # the placeholder goes: its CIDR is the late node's at once, and the pod moves onto it
    c.srv.kubectl("delete", "node", PLACEHOLDER)
    cidrs = {ag.name: c.wait(lambda n=ag.name: node_cidr(c, n), 20, f"{ag.name} pod CIDR")
             for ag in (early, late)}
    for cidr in cidrs.values():
        net = ipaddress.ip_network(cidr)
        assert net.prefixlen == MASK and net.subnet_of(ipaddress.ip_network(CLUSTER_CIDR))
    assert cidrs[early.name] != cidrs[late.name]
    ip_late = c.wait(lambda: pod_ip_in(c, "web-late", cidrs[late.name]), 60,
                     "web-late recreated on the late node's pod CIDR")

    web_pod(c, "web-early", early.name, {"app": "web"})
    web_pod(c, "client", early.name, {"role": "client"})
    ip_early = c.wait(lambda: pod_ip_in(c, "web-early", cidrs[early.name]), 60,
                      "web-early Running in the early node's pod CIDR")
    c.wait(lambda: pod_ip_in(c, "client", cidrs[early.name]), 60, "client Running")

    # host-gw: each namespace routes the other's pod CIDR via the other's node IP
    c.wait(lambda: cidrs[late.name] in routes_in(early) and
           cidrs[early.name] in routes_in(late), 10, "routes to the other node's pod CIDR")
    # pod -> pod on the other node by pod IP, across the link
    assert fetch_from(c, "client", ip_late, PORT) == ["web-late"], c.logs()

    # pod -> ClusterIP with an endpoint on each node: both answer
    c.srv.kubectl("expose", "pod", "web-early", "--name", "web", "--port", "80",
                  "--target-port", str(PORT), "--selector", "app=web")
    svc_ip = c.srv.kubectl_json("get", "service", "web")["spec"]["clusterIP"]
    c.wait(lambda: ip_early in rules_of(early) and ip_late in rules_of(early), 20,
           "both endpoints in the client node's service rules")
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while seen != {"web-early", "web-late"}:
        assert time.monotonic() < deadline, f"only {seen} answered through {svc_ip}\n{c.logs()}"
        seen.update(x for x in fetch_from(c, "client", svc_ip, 80, 8) if x)

    # endpoint removal: web-late leaves the Service (still running); out of the rules in 2 s
    c.srv.kubectl("label", "pod", "web-late", "app-")
    c.wait(lambda: ip_late not in json.dumps(c.srv.kubectl_json(
        "get", "endpointslices", "-l", "kubernetes.io/service-name=web")), 20,
        "web-late out of the EndpointSlice")
    c.wait(lambda: ip_late not in rules_of(early), 2,
           "web-late out of the client node's rules within 2 s")
    answers = fetch_from(c, "client", svc_ip, 80, 10)
    assert answers == ["web-early"] * 10, answers


def _ingress(cls: str | None) -> str:
    def rule(host: str, svc: str) -> dict:
        return {"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
            "service": {"name": svc, "port": {"number": 80}}}}]}}
    return json.dumps({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                       "metadata": {"name": "nodes"},
                       "spec": {"ingressClassName": cls,
                                "tls": [{"hosts": ["a.nodes.test"], "secretName": "nodes-tls"}],
                                "rules": [rule("a.nodes.test", "ing-a"),
                                          rule("*.b.nodes.test", "ing-b")]}})


def test_ingress_on_each_node_reaches_pods_on_both(cluster: Cluster, tmp_path):
    c = cluster
    c.srv.kubectl("delete", "node", PLACEHOLDER, "--ignore-not-found")  # (the first test's)
    for ag in (c.a, c.b):
        c.wait(lambda n=ag.name: node_cidr(c, n), 20, f"{ag.name} pod CIDR")
    for label, ag in (("a", c.a), ("b", c.b)):
        web_pod(c, f"ing-{label}", ag.name, {"ing": label})
        c.srv.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": f"ing-{label}"},
            "spec": {"selector": {"ing": label},
                     "ports": [{"port": 80, "targetPort": PORT}]}}))
    c.srv.kubectl("apply", "-f", "-", input=json.dumps(
        tls_secret("nodes-tls", "a.nodes.test", tmp_path / "ca.crt")))
    c.srv.kubectl("apply", "-f", "-", input=_ingress(None))
    for label in "ab":
        c.wait(lambda p=f"ing-{label}": c.running(p), 60, f"ing-{label} Running")

    def answers(ag: Agent, host: str, scheme: str = "http") -> tuple[int, str]:
        tls = ("--cacert", str(tmp_path / "ca.crt")) if host == "a.nodes.test" else ("-k",)
        code, body = curl_host(ag.ns.ns_ip, 443 if scheme == "https" else 80, host, "/",
                               *tls, scheme=scheme)
        return code, body.strip()
    # every node's proxy: its own pod and the other node's, by exact and wildcard host
    for ag in (c.a, c.b):
        for host, want in (("a.nodes.test", "ing-a"), ("x.b.nodes.test", "ing-b")):
            c.wait(lambda ag=ag, h=host, w=want: answers(ag, h) == (200, w), 20,
                   f"{host} through {ag.name}'s :80")
    # HTTPS on :443: the secret's certificate (verified against its CA) came down the tunnel
    c.wait(lambda: answers(c.b, "a.nodes.test", "https") == (200, "ing-a"), 20,
           "a.nodes.test over HTTPS through the other node, with the secret's certificate")
    assert answers(c.a, "a.nodes.test", "https") == (200, "ing-a")
    assert answers(c.a, "x.b.nodes.test", "https") == (200, "ing-b")  # default certificate

    node_ips = sorted(next(a["address"] for a in c.srv.kubectl_json("get", "node", ag.name)
                           ["status"]["addresses"] if a["type"] == "InternalIP")
                      for ag in (c.a, c.b))

    def lb() -> list[dict]:
        return c.srv.kubectl_json("get", "ingress", "nodes")["status"]["loadBalancer"] \
            .get("ingress") or []
    c.wait(lambda: lb() == [{"ip": ip} for ip in node_ips], 20,
           "status.loadBalancer.ingress: both nodes")
    # another class: no longer ours, the status cleared and the routes gone
    c.srv.kubectl("apply", "-f", "-", input=_ingress("other"))
    c.wait(lambda: lb() == [], 20, "status.loadBalancer.ingress cleared")
    c.wait(lambda: answers(c.a, "x.b.nodes.test")[0] == 404, 10, "the route gone")
