"""Scheduler filters: node selector and affinity operators, taints, unschedulable, host ports,
resource fit with init containers and overhead."""

import pytest

from k3py.server.scheduler.filters import (
    REASON_AFFINITY,
    REASON_PORTS,
    REASON_UNSCHEDULABLE,
    run_filters,
    tolerates,
)
from k3py.server.scheduler.nodeinfo import NodeInfo, pod_requests
from k3py.server.scheduler.podstate import PodState
from k3py.server.scheduler.scores import spread_raw

pytestmark = pytest.mark.unit


def node(name="n1", labels=None, taints=None, cpu="2", memory="4Gi", pods="110",
         unschedulable=False) -> dict:
    spec: dict = {}
    if taints:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec,
            "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": pods}}}


def pod(name="p", cpu=None, memory=None, **spec) -> dict:
    req = {}
    if cpu:
        req["cpu"] = cpu
    if memory:
        req["memory"] = memory
    c = {"name": "c", "image": "x", "resources": {"requests": req} if req else {}}
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [c], **spec}}


def info(n: dict, *pods: dict) -> NodeInfo:
    i = NodeInfo(name=n["metadata"]["name"], node=n)
    for p in pods:
        i.add_pod({**p, "spec": {**p["spec"], "nodeName": i.name}})
    return i


def fits(p: dict, i: NodeInfo) -> tuple[str, list[str]]:
    """run_filters for pod `p`, its PodState read as the scheduler reads it."""
    return run_filters(PodState.of(p), i)


def affinity(*terms) -> dict:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": list(terms)}}}


def test_node_selector() -> None:
    n = node(labels={"disk": "ssd"})
    assert fits(pod(nodeSelector={"disk": "ssd"}), info(n)) == ("", [])
    assert fits(pod(nodeSelector={"disk": "hdd"}), info(n)) == (
        "NodeAffinity", [REASON_AFFINITY])


@pytest.mark.parametrize("expr,matches", [
    ({"key": "zone", "operator": "In", "values": ["a", "b"]}, True),
    ({"key": "zone", "operator": "In", "values": ["c"]}, False),
    ({"key": "zone", "operator": "NotIn", "values": ["c"]}, True),
    ({"key": "other", "operator": "NotIn", "values": ["c"]}, True),
    ({"key": "zone", "operator": "Exists"}, True),
    ({"key": "zone", "operator": "DoesNotExist"}, False),
    ({"key": "cores", "operator": "Gt", "values": ["3"]}, True),
    ({"key": "cores", "operator": "Lt", "values": ["3"]}, False),
    ({"key": "zone", "operator": "Gt", "values": ["3"]}, False),
])
def test_affinity_operators(expr, matches) -> None:
    n = node(labels={"zone": "a", "cores": "4"})
    got = fits(pod(affinity=affinity({"matchExpressions": [expr]})), info(n))
    assert (got == ("", [])) is matches


def test_affinity_terms_are_ored_and_fields_match_name() -> None:
    n = node(name="edge-1")
    no = {"matchExpressions": [{"key": "x", "operator": "Exists"}]}
    by_name = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["edge-1"]}]}
    assert fits(pod(affinity=affinity(no, by_name)), info(n)) == ("", [])
    assert fits(pod(affinity=affinity(no)), info(n))[1] == [REASON_AFFINITY]
    assert fits(pod(affinity=affinity({})), info(n))[1] == [REASON_AFFINITY]


def test_taints_and_tolerations() -> None:
    t = {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}
    n = node(taints=[t, {"key": "soft", "effect": "PreferNoSchedule"}])
    assert fits(pod(), info(n)) == (
        "TaintToleration", ["node(s) had untolerated taint {node.kubernetes.io/unreachable: }"])
    tol = [{"key": "node.kubernetes.io/unreachable", "operator": "Exists"}]
    assert fits(pod(tolerations=tol), info(n)) == ("", [])
    assert fits(pod(tolerations=[{"operator": "Exists"}]), info(n)) == ("", [])
    assert tolerates({"key": "k", "value": "v", "effect": "NoExecute"},
                     {"key": "k", "value": "v", "effect": "NoExecute"})
    assert not tolerates({"key": "k", "value": "w"}, {"key": "k", "value": "v",
                                                      "effect": "NoSchedule"})
    assert not tolerates({"key": "k", "operator": "Exists", "effect": "NoSchedule"},
                         {"key": "k", "effect": "NoExecute"})


def test_unschedulable_node() -> None:
    n = node(unschedulable=True)
    assert fits(pod(), info(n))[1] == [REASON_UNSCHEDULABLE]
    tol = [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists",
            "effect": "NoSchedule"}]
    assert fits(pod(tolerations=tol), info(n)) == ("", [])


def test_host_ports() -> None:
    def hp(port, ip=None, proto=None):
        p = pod()
        cp = {"containerPort": 80, "hostPort": port}
        if ip:
            cp["hostIP"] = ip
        if proto:
            cp["protocol"] = proto
        p["spec"]["containers"][0]["ports"] = [cp]
        return p
    i = info(node(), hp(8080, "10.0.0.1"))
    assert fits(hp(8080), i)[1] == [REASON_PORTS]
    assert fits(hp(8080, "10.0.0.2"), i) == ("", [])
    assert fits(hp(8080, proto="UDP"), i) == ("", [])
    assert fits(hp(8081), i) == ("", [])


def test_resources_fit() -> None:
    n = node(cpu="1", memory="1Gi", pods="2")
    i = info(n, pod("a", cpu="600m", memory="512Mi"))
    assert fits(pod(cpu="400m"), i) == ("", [])
    assert fits(pod(cpu="500m", memory="600Mi"), i) == (
        "NodeResourcesFit", ["Insufficient cpu", "Insufficient memory"])
    i.add_pod({**pod("b"), "spec": {**pod("b")["spec"], "nodeName": "n1"}})
    assert fits(pod(), i)[1] == ["Too many pods"]
    gpu = pod()
    gpu["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    assert "Insufficient nvidia.com/gpu" in fits(gpu, info(node()))[1]


def test_bare_node_without_status_is_unlimited() -> None:
    bare = {"metadata": {"name": "kwok"}}
    assert fits(pod(cpu="64"), info(bare)) == ("", [])


def test_init_containers_max_rule_and_overhead() -> None:
    p = pod(cpu="100m", memory="100Mi")
    p["spec"]["initContainers"] = [
        {"name": "i1", "resources": {"requests": {"cpu": "500m"}}},
        {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}},
        {"name": "i2", "resources": {"requests": {"cpu": "300m", "memory": "1Gi"}}},
    ]
    p["spec"]["overhead"] = {"cpu": "10m"}
    # max(100 + 50 sidecar, 500, 50 + 300) + 10 overhead
    assert pod_requests(p) == {"cpu": 510, "memory": 2 ** 30}


def test_scoring_defaults_fill_only_missing_requests() -> None:
    """Upstream's non-zero requests for scoring: 100m / 200Mi where a container (init
    containers too) requests nothing; an explicit 0 stays 0."""
    p = pod()
    p["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "0"}}
    p["spec"]["initContainers"] = [{"name": "i", "resources": {}}]
    # containers: cpu 0 (explicit), memory 200Mi; the init container alone: 100m, 200Mi
    assert pod_requests(p, non_zero=True) == {"cpu": 100, "memory": 200 * 2 ** 20}


def test_spread_counts_the_pods_of_the_same_controller_on_a_node():
    def owned(name: str, uid: str, ns: str = "default") -> dict:
        p = pod(name)
        p["metadata"].update(namespace=ns, ownerReferences=[
            {"kind": "ReplicaSet", "name": "rs", "uid": uid, "controller": True}])
        return p
    info = NodeInfo("n1")
    for p in (owned("a", "u1"), owned("b", "u1"), owned("c", "u2"), owned("d", "u1", "other")):
        info.add_pod(p)
    new = PodState.of(owned("new", "u1"))
    assert spread_raw(new, info) == 2  # (not the one in the other namespace)
    info.remove_pod("default/a")
    info.add_pod(owned("b", "u1"))  # the same pod again: counted once
    assert spread_raw(new, info) == 1
    assert spread_raw(PodState.of(pod("bare")), info) == 0
    info.remove_pod("default/b")
    assert ("default", "u1") not in info.controlled
