"""Scheduler scores: least allocated, balanced, preferred affinity, PreferNoSchedule taints,
spreading pods of one controller; and the FailedScheduling message format."""

import pytest

from k3py.server.scheduler.filters import run_filters
from k3py.server.scheduler.scheduler import fit_error_message
from k3py.server.scheduler.scores import balanced_allocation, least_allocated, score_nodes
from tests.unit.scheduler.test_filters import info, node, pod

pytestmark = pytest.mark.unit


def test_least_allocated_prefers_emptier_node() -> None:
    busy = info(node("busy"), pod("a", cpu="1500m", memory="3Gi"))
    idle = info(node("idle"))
    p = pod(cpu="100m", memory="100Mi")
    assert least_allocated(p, idle) > least_allocated(p, busy)
    scores = score_nodes(p, [busy, idle])
    assert scores["idle"] > scores["busy"]


def test_balanced_allocation() -> None:
    n = node(cpu="1", memory="1Gi")
    assert balanced_allocation(pod(cpu="500m", memory="512Mi"), info(n)) == 100
    assert balanced_allocation(pod(cpu="900m", memory="10Mi"), info(n)) < 70


def test_preferred_affinity_and_prefer_no_schedule() -> None:
    a = info(node("a", labels={"zone": "x"}))
    b = info(node("b", taints=[{"key": "k", "effect": "PreferNoSchedule"}]))
    c = info(node("c"))
    p = pod(affinity={"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 50, "preference": {"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["x"]}]}}]}})
    s = score_nodes(p, [a, b, c])
    assert s["a"] > s["c"] > s["b"]
    tolerant = pod(tolerations=[{"key": "k", "operator": "Exists"}])
    s = score_nodes(tolerant, [b, c])
    assert s["b"] == s["c"]


def test_spread_same_controller() -> None:
    owner = [{"uid": "rs-1", "controller": True, "kind": "ReplicaSet", "name": "rs",
              "apiVersion": "apps/v1"}]
    mine = pod("m1")
    mine["metadata"]["ownerReferences"] = owner
    other = pod("o1")
    a = info(node("a"), mine)
    b = info(node("b"), other)
    p = pod("m2")
    p["metadata"]["ownerReferences"] = owner
    s = score_nodes(p, [a, b])
    assert s["b"] > s["a"]


def test_fit_error_message() -> None:
    failures = {
        "n1": ("NodeResourcesFit", ["Insufficient cpu"]),
        "n2": ("NodeAffinity", ["node(s) didn't match Pod's node affinity/selector"]),
        "n3": ("NodeAffinity", ["node(s) didn't match Pod's node affinity/selector"]),
    }
    assert fit_error_message(3, failures) == (
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node "
        "affinity/selector. preemption: 0/3 nodes are available: 1 No preemption victims "
        "found for incoming pod, 2 Preemption is not helpful for scheduling.")
    assert fit_error_message(0, {}) == \
        "0/0 nodes are available: no nodes available to schedule pods."


def test_what_is_computed_once_follows_a_new_node_and_the_next_pod() -> None:
    """A node's parsed allocatable is kept per Node object and a pod's requests per pod being
    scheduled: a Node update (a new object) and the next pod are read afresh."""
    i = info(node(cpu="1", memory="1Gi"))
    big = pod(cpu="1500m")
    assert run_filters(big, i) == ("NodeResourcesFit", ["Insufficient cpu"])
    i.node = node(cpu="2", memory="1Gi")
    assert run_filters(big, i) == ("", [])
    assert run_filters(pod(name="q", cpu="3"), i) == ("NodeResourcesFit", ["Insufficient cpu"])
    assert least_allocated(pod(cpu="1"), i) == least_allocated(pod(cpu="1"), i) < \
        least_allocated(pod(cpu="100m"), i)
