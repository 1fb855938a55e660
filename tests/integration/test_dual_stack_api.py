"""Dual-stack on a real k3py server through kubectl: the flags' errors, Services' ipFamilies/
ipFamilyPolicy/clusterIPs and their 422s, Node podCIDRs in both families kept across a
restart and freed with the Node, and EndpointSlices per address family."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.harness import ServerProcess, clean_env, wait_for

pytestmark = pytest.mark.integration

CLUSTER = "10.42.0.0/16,2001:cafe:42::/56"
SERVICE = "10.43.0.0/16,2001:cafe:43::/112"


@pytest.fixture(scope="module")
def dual(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("dual"), extra_args=[
        "--cluster-cidr", CLUSTER, "--service-cidr", SERVICE])
    try:
        yield srv.start()
    finally:
        srv.stop()


@pytest.mark.parametrize("args, message", [
    (["--cluster-cidr", "10.42.0.0/16,10.50.0.0/16"],
     "invalid value '10.42.0.0/16,10.50.0.0/16' for --cluster-cidr: want one CIDR, or an IPv4 "
     "and an IPv6 CIDR separated by a comma (not two of one family)"),
    (["--service-cidr", "10.43.0.0/16,2001:cafe:43::/112"],
     "--cluster-cidr 10.42.0.0/16 and --service-cidr 10.43.0.0/16,2001:cafe:43::/112 must both "
     "be single-stack or both dual-stack"),
    (["--cluster-cidr", "2001:cafe:42::/56,10.42.0.0/16", "--service-cidr", SERVICE],
     "must list their IP families in the same order"),
])
def test_bad_cidrs_are_one_line_errors(tmp_path, args, message):
    out = subprocess.run([sys.executable, "-m", "k3py", "server", "--data-dir", str(tmp_path),
                          *args], capture_output=True, text=True, env=clean_env(), timeout=30)
    assert out.returncode != 0
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def _svc(name: str, **spec) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                       "spec": {"selector": {"app": name}, "ports": [{"port": 80}], **spec}})


def test_service_families_and_errors(dual):
    dual.kubectl("create", "service", "clusterip", "plain", "--tcp=80:80")
    plain = dual.kubectl_json("get", "svc", "plain")["spec"]
    assert (plain["ipFamilyPolicy"], plain["ipFamilies"]) == ("SingleStack", ["IPv4"])
    dual.kubectl("apply", "-f", "-", input=_svc("both", ipFamilyPolicy="PreferDualStack"))
    both = dual.kubectl_json("get", "svc", "both")["spec"]
    assert both["ipFamilies"] == ["IPv4", "IPv6"]
    assert both["clusterIPs"][1].startswith("2001:cafe:43::")
    row = dual.kubectl("get", "svc", "both", "--no-headers").stdout.split()
    assert row[2] == ",".join(both["clusterIPs"])  # CLUSTER-IP lists both
    dual.kubectl("apply", "-f", "-", input=_svc("six", ipFamilies=["IPv6"]))
    assert ":" in dual.kubectl_json("get", "svc", "six")["spec"]["clusterIP"]

    bad = dual.kubectl("apply", "-f", "-", check=False, input=_svc(
        "two", clusterIPs=["10.43.9.9", "2001:cafe:43::99"], clusterIP="10.43.9.9"))
    assert bad.returncode != 0
    assert ("spec.ipFamilyPolicy: Invalid value: \"SingleStack\": must be 'RequireDualStack' "
            "or 'PreferDualStack' when multiple cluster IPs are specified") in bad.stderr
    # the primary ClusterIP is immutable; the secondary goes with SingleStack
    moved = dual.kubectl("patch", "svc", "both", "--type=merge", "-p", json.dumps(
        {"spec": {"clusterIP": "10.43.9.10", "clusterIPs": ["10.43.9.10",
                                                            both["clusterIPs"][1]]}}),
        check=False)
    assert "spec.clusterIPs[0]: Invalid value" in moved.stderr and \
        "may not change once set" in moved.stderr
    dual.kubectl("patch", "svc", "both", "--type=merge", "-p",
                 '{"spec": {"ipFamilyPolicy": "SingleStack"}}')
    down = dual.kubectl_json("get", "svc", "both")["spec"]
    assert down["clusterIPs"] == both["clusterIPs"][:1] and down["ipFamilies"] == ["IPv4"]


def test_node_pod_cidrs_in_both_families(dual, tmp_path):
    node = json.dumps({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
    dual.kubectl("apply", "-f", "-", input=node)

    def cidrs(name: str) -> list[str]:
        out = dual.kubectl("get", "node", name, "-o", "jsonpath={.spec.podCIDRs}",
                           check=False).stdout
        return json.loads(out) if out else []
    got = wait_for(lambda: cidrs("n1"), 15, 0.1, "n1 pod CIDRs")
    assert got[0].startswith("10.42.") and got[0].endswith("/24")
    assert got[1].startswith("2001:cafe:42:") and got[1].endswith("/64")
    dual.stop()
    dual.start()
    assert cidrs("n1") == got  # kept across a restart
    dual.kubectl("apply", "-f", "-", input=node.replace("n1", "n2"))
    second = wait_for(lambda: cidrs("n2"), 15, 0.1, "n2 pod CIDRs")
    assert not set(second) & set(got)
    dual.kubectl("delete", "node", "n1", "n2")


def test_endpoint_slices_per_family(dual):
    dual.kubectl("apply", "-f", "-", input=_svc("ep", ipFamilyPolicy="RequireDualStack"))
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ep-pod",
                                                           "labels": {"app": "ep"}},
           "spec": {"nodeName": "nowhere", "containers": [{"name": "c", "image": "busybox"}]}}
    dual.kubectl("apply", "-f", "-", input=json.dumps(pod))
    status = {"status": {"phase": "Running", "podIP": "10.42.0.9",
                         "podIPs": [{"ip": "10.42.0.9"}, {"ip": "2001:cafe:42::9"}],
                         "conditions": [{"type": "Ready", "status": "True"}]}}
    dual.kubectl("patch", "pod", "ep-pod", "--subresource=status", "--type=merge",
                 "-p", json.dumps(status))

    def slices() -> dict | None:
        items = dual.kubectl_json("get", "endpointslices", "-l",
                                  "kubernetes.io/service-name=ep")["items"]
        by = {s["addressType"]: [a for e in s.get("endpoints") or [] for a in e["addresses"]]
              for s in items}
        return by if all(by.get(f) for f in ("IPv4", "IPv6")) else None
    assert wait_for(slices, 15, 0.1, "two EndpointSlices") == {
        "IPv4": ["10.42.0.9"], "IPv6": ["2001:cafe:42::9"]}
