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
  gone) once the Ingress names another class;
- ServiceLB on both agents: a LoadBalancer Service lists both node IPs, each answers from
  either node; loadBalancerSourceRanges lets only the listed clients in;
- with the link between the nodes cut (each still reaches the server), the routes go and a
  pod reaches the other node's pod, by pod IP and through a Service, via the tunnel
  (this node -> server -> that node), each of a Service's tunnelled endpoints answering, and
  sessionAffinity ClientIP keeping a client on one; the routes come back with the link;
- through the tunnel, a fast sender on one node to a pod on the other that does not read
  for a while is paused (flow control): the server's and both agents' memory stays bounded,
  an exec into that pod (the same tunnel) still works meanwhile, and every byte arrives;
- through the tunnel, a UDP Service whose one endpoint is on the other node (a DNS server in
  that node's namespace on its pod bridge address) answers `nslookup` from a pod;
- with the client node's link to the server cut, cluster DNS and Services still answer on it
  (from its cache; the pod is reached with podman, since kubectl exec needs the server).

Needs root (`ip netns`), podman and nft; skipped with the reason otherwise."""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest

from k3py.agent.network.podnet import gateway_of
from tests.harness import free_port, rss_kib, sampling_rss
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


def in_pod(c: Cluster, pod: str, script: str, node: Agent | None = None) -> str:
    """`script`'s output in `pod`: kubectl exec, or podman exec on `node` (no server needed)."""
    if node is None:
        return c.srv.kubectl("exec", pod, "--", "sh", "-c", script, check=False,
                             timeout=60).stdout
    ids = subprocess.run([*node.podman, "ps", "-q", "--filter", f"label=io.k3py.pod-name={pod}",
                          "--filter", "label=io.k3py.container=c"],
                         capture_output=True, text=True, timeout=30).stdout.split()
    assert ids, f"no container of {pod} in {node.name}'s podman"
    return subprocess.run([*node.podman, "exec", ids[0], "sh", "-c", script],
                          capture_output=True, text=True, timeout=60).stdout


def fetch_from(c: Cluster, pod: str, ip: str, port: int, times: int = 1,
               node: Agent | None = None) -> list[str]:
    """The bodies `times` HTTP GETs of ip:port from inside `pod` answered ("" for a failed
    one). busybox's nc, not its wget: the static wget crashes when a connection fails."""
    get = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} {port} | tail -n 1"
    loop = f"for i in $(seq {times}); do echo \"[$({get})]\"; done"
    return [line.strip().strip("[]") for line in in_pod(c, pod, loop, node).splitlines()]


def curl_in(ag: Agent, ip: str, port: int) -> str:
    """The body of http://ip:port/ from the node's namespace ("" when nothing answers in 3 s)."""
    return ag.ns.run(["curl", "-s", "--max-time", "3", f"http://{ip}:{port}/"]).stdout.strip()


def node_ip(c: Cluster, ag: Agent) -> str:
    return next(a["address"] for a in c.srv.kubectl_json("get", "node", ag.name)["status"][
        "addresses"] if a["type"] == "InternalIP")


def agent_of_pod(c: Cluster, pod: str) -> Agent:
    node = c.pod(pod)["spec"]["nodeName"]
    return c.a if node == c.a.name else c.b


def set_of(rules: str, name: str) -> str:
    """The elements of nft set `name` as `nft list table` prints it."""
    parts = rules.split(f"set {name} {{", 1)
    return parts[1].split("}", 2)[0] if len(parts) == 2 else ""


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
    c.wait(lambda: f"{cidrs[late.name]} via" in routes_in(early) and
           f"{cidrs[early.name]} via" in routes_in(late), 10,
           "routes to the other node's pod CIDR")
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

    node_ips = sorted(node_ip(c, ag) for ag in (c.a, c.b))

    def lb() -> list[dict]:
        return c.srv.kubectl_json("get", "ingress", "nodes")["status"]["loadBalancer"] \
            .get("ingress") or []
    c.wait(lambda: lb() == [{"ip": ip} for ip in node_ips], 20,
           "status.loadBalancer.ingress: both nodes")
    # another class: no longer ours, the status cleared and the routes gone
    c.srv.kubectl("apply", "-f", "-", input=_ingress("other"))
    c.wait(lambda: lb() == [], 20, "status.loadBalancer.ingress cleared")
    c.wait(lambda: answers(c.a, "x.b.nodes.test")[0] == 404, 10, "the route gone")


def test_servicelb_on_both_agents_with_source_ranges(cluster: Cluster):
    c = cluster
    ips = {ag.name: node_ip(c, ag) for ag in (c.a, c.b)}
    c.srv.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb"},
        "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                 "ports": [{"port": 8081, "targetPort": PORT}]}}))

    def ingress() -> set[str]:
        st = c.srv.kubectl_json("get", "service", "lb").get("status") or {}
        return {i.get("ip") for i in (st.get("loadBalancer") or {}).get("ingress") or []}
    c.wait(lambda: ingress() == set(ips.values()), 20, "both node IPs in the LB ingress")
    for client in (c.a, c.b):  # each node's address answers, from either node
        for ip in ips.values():
            c.wait(lambda ip=ip, client=client: curl_in(client, ip, 8081) == "web-early", 10,
                   f"{ip}:8081 answering from {client.name}")

    # only a's address may reach the Service's LoadBalancer addresses now
    ip_a = ips[c.a.name]
    c.srv.kubectl("patch", "service", "lb", "-p", json.dumps(
        {"spec": {"loadBalancerSourceRanges": [f"{ip_a}/32"]}}))
    c.wait(lambda: curl_in(c.b, ip_a, 8081) == "", 10, "b's requests dropped by the LB")
    assert curl_in(c.a, ip_a, 8081) == "web-early"
    assert curl_in(c.b, ips[c.b.name], 8081) == ""
    bad = c.srv.kubectl("patch", "service", "lb", "-p", json.dumps(
        {"spec": {"loadBalancerSourceRanges": ["10.0.0.1"]}}), check=False)
    assert bad.returncode != 0 and "must be a list of IP ranges" in bad.stderr, bad.stderr
    c.srv.kubectl("delete", "service", "lb")


def test_a_node_without_a_route_is_reached_through_the_tunnel(cluster: Cluster):
    c = cluster
    far = agent_of_pod(c, "web-late")
    near = agent_of_pod(c, "client")
    assert far is not near
    c.srv.kubectl("label", "pod", "web-late", "far=yes")
    c.srv.kubectl("expose", "pod", "web-late", "--name", "far", "--port", "80",
                  "--target-port", str(PORT), "--selector", "far=yes")
    far_svc = c.srv.kubectl_json("get", "service", "far")["spec"]["clusterIP"]
    ip_late = c.pod("web-late")["status"]["podIP"]
    far_cidr = node_cidr(c, far.name)
    # two endpoints on the far node, behind a Service without and one with ClientIP affinity
    web_pod(c, "web-far2", far.name, {"pair": "yes"})
    c.srv.kubectl("label", "pod", "web-late", "pair=yes")
    for name, affinity in (("pair", {}), ("sticky", {
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}}})):
        c.srv.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"pair": "yes"}, "ports": [{"port": 80, "targetPort": PORT}],
                     **affinity}}))
    c.wait(lambda: c.running("web-far2"), 60, "web-far2 Running")
    pair, sticky = (c.srv.kubectl_json("get", "service", n)["spec"]["clusterIP"]
                    for n in ("pair", "sticky"))
    c.a.ns.set_link(False)  # the nodes' direct link; each still reaches the server
    try:
        c.wait(lambda: " via " not in routes_in(near) + routes_in(far), 10,
               "the host-gw routes gone with the link")
        c.wait(lambda: far_cidr in set_of(rules_of(near), "tunnel-cidrs") and all(
            f"default/{n}:80" in rules_of(near) for n in ("far", "pair", "sticky")), 10,
            "the far pod CIDR and the Services sent to the tunnel")
        assert fetch_from(c, "client", ip_late, PORT) == ["web-late"], c.logs()
        assert fetch_from(c, "client", far_svc, 80, 3) == ["web-late"] * 3, c.logs()
        seen: set[str] = set()
        deadline = time.monotonic() + 30
        while seen != {"web-late", "web-far2"}:
            assert time.monotonic() < deadline, f"only {seen} answered through {pair}"
            seen.update(x for x in fetch_from(c, "client", pair, 80, 6) if x)
        # ClientIP affinity: every connection of the client pod to the same endpoint
        [first, *rest] = fetch_from(c, "client", sticky, 80, 8)
        assert first in seen and rest == [first] * 7, (first, rest)
        assert curl_in(near, ip_late, PORT) == "web-late"  # from the node itself too
        # the tunnel proxy itself takes only what the rules sent it
        proxy = re.search(r"dnat (?:ip )?to ([\d.]+:\d+)", rules_of(near).split(
            "chain nat-prerouting")[1]).group(1).split(":")
        assert fetch_from(c, "client", proxy[0], int(proxy[1])) == [""]
    finally:
        c.a.ns.set_link(True)
    c.wait(lambda: f"{far_cidr} via" in routes_in(near) and far_cidr not in set_of(
        rules_of(near), "tunnel-cidrs"), 10, "the route back with the link")
    assert fetch_from(c, "client", ip_late, PORT) == ["web-late"]


# Sends argv[3] seeded random bytes to argv[1]:argv[2], printing "sent N" after each MiB the
# kernel took, then "done <sha256>" once the far side closed. A connection the tunnel could
# not make (the pod not listening yet) is reset before any byte got through: tried again.
SENDER = """
import hashlib, random, socket, sys, time
ip, port, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for attempt in range(20):
    rng, digest, sent = random.Random(11), hashlib.sha256(), 0
    try:
        with socket.create_connection((ip, port), timeout=60) as s:
            while sent < total:
                chunk = rng.randbytes(min(1 << 20, total - sent))
                s.sendall(chunk)
                digest.update(chunk)
                sent += len(chunk)
                print("sent", sent, flush=True)
            s.shutdown(socket.SHUT_WR)
            s.recv(1)
        print("done", digest.hexdigest(), flush=True)
        break
    except OSError as e:
        print("retry", e, flush=True)
        time.sleep(0.5)
"""
FLOW_BYTES = 200 * 2**20
PAUSE = 3.0  # seconds the sink does not read


def test_a_slow_reader_pauses_a_fast_sender_through_the_tunnel(cluster: Cluster):
    c = cluster
    far = agent_of_pod(c, "web-late")
    near = agent_of_pod(c, "client")
    # reads nothing until /tmp/go exists, then everything, and prints its checksum
    c.srv.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sink"},
        "spec": {"nodeName": far.name, "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "c", "image": IMAGE, "imagePullPolicy": "Never", "command": ["sh", "-c",
            "sleep 3600 | nc -l -p 9000 | "
            "(until [ -e /tmp/go ]; do sleep 0.1; done; sha256sum; echo summed)"]}]}}))
    sink = c.wait(lambda: c.running("sink"), 60, "the sink pod Running")["status"]["podIP"]
    far_cidr = node_cidr(c, far.name)
    c.a.ns.set_link(False)
    sender = None
    try:
        c.wait(lambda: far_cidr in set_of(rules_of(near), "tunnel-cidrs"), 10,
               "the far pod CIDR sent to the tunnel")
        pids = {"server": c.srv.proc.pid, "near agent": near.proc.pid,
                "far agent": far.proc.pid}
        before = {name: rss_kib(pid) for name, pid in pids.items()}
        lines: list[str] = []
        sender = near.ns.popen([sys.executable, "-c", SENDER, sink, "9000", str(FLOW_BYTES)],
                               stdout=subprocess.PIPE, text=True)
        threading.Thread(target=lambda: lines.extend(sender.stdout), daemon=True).start()

        def sent() -> int:
            return next((int(x.split()[1]) for x in reversed(lines) if x.startswith("sent")), 0)
        with sampling_rss(pids) as peak:
            c.wait(lambda: sent() >= 2**20, 30, "the first MiB through the tunnel")
            paused_until = time.monotonic() + PAUSE
            while time.monotonic() < paused_until:
                time.sleep(0.1)
            held = sent()
            # another stream on the far node's tunnel is not held up by the stalled one
            assert in_pod(c, "sink", "touch /tmp/go && echo go") == "go\n", c.logs()
            c.wait(lambda: sender.poll() is not None, 120, "the sender done")
        growth = {name: (peak[name] - before[name]) // 1024 for name in pids}
        print(f"flow control: {held // 2**20} MiB sent while the sink read nothing for "
              f"{PAUSE:.0f} s; RSS growth (MiB) {growth}; before {before}")
        assert held < 32 * 2**20, f"the sender was not paused: {held} bytes sent"
        assert all(g < 24 for g in growth.values()), growth
        done = next((x.split()[1] for x in lines if x.startswith("done")), "")
        assert done, "".join(lines[-5:])
        c.wait(lambda: "summed" in c.srv.kubectl("logs", "sink").stdout, 10, "the checksum")
        assert c.srv.kubectl("logs", "sink").stdout.split()[0] == done, c.logs()
    finally:
        if sender is not None and sender.poll() is None:
            sender.kill()
        c.a.ns.set_link(True)
        c.srv.kubectl("delete", "pod", "sink", "--wait=false")


# Answers every A query on argv[1]:argv[2] with 10.9.8.7, anything else with no records.
DNS_SERVER = """
import socket, sys
import dns.message, dns.rdatatype, dns.rrset
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    data, client = s.recvfrom(4096)
    query = dns.message.from_wire(data)
    answer = dns.message.make_response(query)
    if query.question and query.question[0].rdtype == dns.rdatatype.A:
        answer.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A",
                                                 "10.9.8.7"))
    s.sendto(answer.to_wire(), client)
"""


def test_a_udp_service_on_a_node_without_a_route_answers_through_the_tunnel(cluster: Cluster):
    c = cluster
    far = agent_of_pod(c, "web-late")
    near = agent_of_pod(c, "client")
    far_cidr = node_cidr(c, far.name)
    port = free_port()
    server = far.ns.popen([sys.executable, "-c", DNS_SERVER, gateway_of(far_cidr), str(port)])
    c.srv.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                        "items": [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "udp-far"},
         "spec": {"ports": [{"port": 53, "protocol": "UDP", "targetPort": port}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "udp-far-1", "labels": {"kubernetes.io/service-name": "udp-far"}},
         "addressType": "IPv4", "ports": [{"port": port, "protocol": "UDP"}],
         "endpoints": [{"addresses": [gateway_of(far_cidr)], "nodeName": far.name,
                        "conditions": {"ready": True}}]}]}))
    svc = c.srv.kubectl_json("get", "service", "udp-far")["spec"]["clusterIP"]
    c.a.ns.set_link(False)
    try:
        c.wait(lambda: far_cidr in set_of(rules_of(near), "tunnel-cidrs") and re.search(
            r"udp dport \d+ ct status ! dnat drop", rules_of(near)), 10,
            "the UDP Service sent to the tunnel proxy")
        for _ in range(3):  # a flow per query (each from a new source port)
            out = in_pod(c, "client", f"nslookup -type=a tunnel.k3py.test {svc}")
            assert "10.9.8.7" in out, f"{out}\n{rules_of(near)}\n{c.logs()}"
    finally:
        c.a.ns.set_link(True)
        server.kill()
        server.wait(10)


def test_dns_and_services_answer_on_a_node_cut_off_from_the_server(cluster: Cluster):
    c = cluster
    near = agent_of_pod(c, "client")
    svc_ip = c.srv.kubectl_json("get", "service", "web")["spec"]["clusterIP"]
    near.ns.cut()
    try:
        out = in_pod(c, "client", "nslookup web.default.svc.cluster.local", near)
        assert svc_ip in out, out
        assert fetch_from(c, "client", svc_ip, 80, 3, near) == ["web-early"] * 3, c.logs()
    finally:
        near.ns.restore()
