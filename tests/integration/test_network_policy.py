"""NetworkPolicy enforced by a node, for real: a server and one agent in its own network
namespace (tests/integration/twonodes.py, one node), real podman pods on the node's bridge in
two namespaces, connections made with busybox nc from inside the pods.

Pods a1, a2 in np-a and b1 in np-b each serve HTTP on 8080 (named "http") and 9090. Each step
applies policies and waits until every expected allowed and denied connection holds:
- no policy: all connect, and the node holds no pod's nor namespace's view (the server sends
  none while no policy exists);
- a default-deny ingress policy in np-a: the node gets every pod's view; a2 -> a1 (same
  namespace, bridged) and b1 -> a1 are refused, while a1 -> b1 connects (the other
  direction; its replies pass);
- ingress from namespace np-b to a1 on port 8080 only: b1 -> a1:8080 connects, :9090 not,
  a2 -> a1 still not; the same through a1's ClusterIP Service (port 80 -> 8080: the policy
  sees the pod behind the service DNAT);
- an ipBlock (the pod CIDR except a2) on port 9090: b1 -> a1:9090 connects, a2 -> a1:9090 not;
- default-deny egress in np-b but to np-a's pods on the named port "http": b1 -> a1:8080
  connects, b1 -> a1:9090 no longer;
- the policies deleted: everything connects again, the node drops the views, and the pods
  stayed Ready (the node's own probes are never filtered).

Needs root (`ip netns`), podman and nft; skipped with the reason otherwise."""

from __future__ import annotations

import json
import shutil

import pytest

from k3py.tunnel.protocol import POD_PEERS_KIND
from tests.integration.agents import IMAGE
from tests.integration.twonodes import Cluster, two_agent_cluster

pytestmark = [pytest.mark.integration]

CLUSTER_CIDR = "10.54.0.0/24"
HTTP, OTHER = 8080, 9090


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if shutil.which("nft") is None:
        pytest.skip("nft is not installed")
    with two_agent_cluster(tmp_path_factory.mktemp("netpol"), {}, labels="a", server_args=(
            "--cluster-cidr", CLUSTER_CIDR, "--node-cidr-mask-size", "24")) as c:
        yield c


def apply(c: Cluster, *objs: dict) -> None:
    c.srv.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                        "items": list(objs)}))


def server_pod(ns: str, name: str, node: str) -> dict:
    script = (f"mkdir -p /www && echo {name} > /www/index.html && httpd -p {OTHER} -h /www "
              f"&& exec httpd -f -p {HTTP} -h /www")
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": ns, "name": name, "labels": {"app": name}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{
                "name": "c", "image": IMAGE, "imagePullPolicy": "Never",
                "command": ["sh", "-c", script],
                "ports": [{"name": "http", "containerPort": HTTP}],
                "readinessProbe": {"tcpSocket": {"port": HTTP}, "periodSeconds": 1}}]}}


def policy(ns: str, name: str, types: list[str], selector: dict | None = None,
           **rules) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"namespace": ns, "name": name},
            "spec": {"podSelector": selector or {}, "policyTypes": types, **rules}}


def connects(c: Cluster, src: tuple[str, str], targets: list[tuple[str, int]]) -> list[bool]:
    """Whether an HTTP GET from pod `src` (namespace, name) to each (ip, port) is answered."""
    get = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {} {} | grep -q '^HTTP' && echo y || echo n"
    script = "; ".join(get.format(ip, port) for ip, port in targets)
    out = c.srv.kubectl("exec", "-n", src[0], src[1], "--", "sh", "-c", script, check=False,
                        timeout=60)
    return [line == "y" for line in out.stdout.split()]


def expect(c: Cluster, what: str, checks: dict[tuple[tuple[str, str], str, int], bool],
           ips: dict[str, str]) -> None:
    """Wait (bounded) until each (source pod, target pod, port) connects or is refused as
    `checks` says."""
    by_src: dict[tuple[str, str], list] = {}
    for (src, dst, port), want in checks.items():
        by_src.setdefault(src, []).append(((ips[dst], port), want, f"{src[1]}->{dst}:{port}"))
    last: list[str] = []

    def holds() -> bool:
        last.clear()
        for src, items in by_src.items():
            got = connects(c, src, [t for t, _, _ in items])
            last.extend(f"{name} {'connects' if g else 'refused'}"
                        for (_, want, name), g in zip(items, got, strict=False) if g != want)
            if len(got) != len(items):
                last.append(f"{src}: no answer from kubectl exec")
        return not last
    try:
        c.wait(holds, 30, what)
    except AssertionError as e:
        raise AssertionError(f"{what}: {last}\n{e}") from None


A1, A2, B1 = ("np-a", "a1"), ("np-a", "a2"), ("np-b", "b1")


def test_policies_allow_and_deny_both_directions_and_go_away(cluster: Cluster):
    c = cluster
    node = c.a.name
    apply(c, *({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
               for n in ("np-a", "np-b")))
    apply(c, *(server_pod(ns, name, node) for ns, name in (A1, A2, B1)))
    ips = {}
    for ns, name in (A1, A2, B1):
        pod = c.wait(lambda ns=ns, name=name: c.running(name, ns), 90, f"{name} Ready")
        ips[name] = pod["status"]["podIP"]

    c.srv.kubectl("expose", "pod", "a1", "-n", "np-a", "--name", "a1", "--port", "80",
                  "--target-port", str(HTTP))
    ips["svc-a1"] = c.srv.kubectl_json("get", "service", "a1", "-n", "np-a")["spec"]["clusterIP"]
    expect(c, "no policy: all connect", {(A2, "a1", HTTP): True, (B1, "a1", HTTP): True,
                                         (A1, "b1", HTTP): True, (A2, "svc-a1", 80): True},
           ips)
    # the pods have had their IPs since before they were Ready: their views would be there
    assert c.a.cached(POD_PEERS_KIND) == set() and c.a.cached("namespaces") == set()

    apply(c, policy("np-a", "deny-ingress", ["Ingress"]))
    c.wait(lambda: c.a.cached(POD_PEERS_KIND) >= {"a1", "a2", "b1"}
           and c.a.cached("namespaces") >= {"np-a", "np-b"}, 30,
           "the pods' and namespaces' views on the node once a policy exists")
    expect(c, "default-deny ingress in np-a", {
        (A2, "a1", HTTP): False, (B1, "a1", HTTP): False, (A1, "b1", HTTP): True,
        (A1, "a2", HTTP): False}, ips)

    apply(c, policy("np-a", "from-np-b", ["Ingress"], {"matchLabels": {"app": "a1"}},
                    ingress=[{"from": [{"namespaceSelector": {"matchLabels": {
                        "kubernetes.io/metadata.name": "np-b"}}}],
                              "ports": [{"protocol": "TCP", "port": HTTP}]}]))
    expect(c, "ingress from np-b on 8080", {
        (B1, "a1", HTTP): True, (B1, "a1", OTHER): False, (A2, "a1", HTTP): False,
        (B1, "svc-a1", 80): True, (A2, "svc-a1", 80): False}, ips)

    apply(c, policy("np-a", "ip-block", ["Ingress"], ingress=[{
        "from": [{"ipBlock": {"cidr": CLUSTER_CIDR, "except": [f"{ips['a2']}/32"]}}],
        "ports": [{"port": OTHER}]}]))
    expect(c, "ipBlock with except on 9090", {
        (B1, "a1", OTHER): True, (A2, "a1", OTHER): False, (B1, "a2", OTHER): True}, ips)

    apply(c, policy("np-b", "egress-to-np-a-http", ["Egress"], egress=[{
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "np-a"}}}],
        "ports": [{"port": "http"}]}]))
    expect(c, "egress from np-b to np-a's named port", {
        (B1, "a1", HTTP): True, (B1, "a1", OTHER): False, (A1, "b1", HTTP): True}, ips)

    c.srv.kubectl("delete", "networkpolicy", "--all", "-n", "np-a")
    c.srv.kubectl("delete", "networkpolicy", "--all", "-n", "np-b")
    expect(c, "policies deleted: all connect again", {
        (A2, "a1", HTTP): True, (B1, "a1", OTHER): True, (A1, "a2", HTTP): True}, ips)
    c.wait(lambda: c.a.cached(POD_PEERS_KIND) == set() and c.a.cached("namespaces") == set(),
           30, "the views dropped by the node with the last policy")
    for ns, name in (A1, A2, B1):
        assert c.running(name, ns), f"{name} not Ready\n{c.logs()}"
