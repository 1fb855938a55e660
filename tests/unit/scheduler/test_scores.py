"""Scheduler scores: least allocated, balanced, preferred affinity, PreferNoSchedule taints,
spreading pods of one controller; and the FailedScheduling message format."""

import pytest

from k3py.server.scheduler.podstate import PodState
from k3py.server.scheduler.scheduler import fit_error_message
from k3py.server.scheduler.scores import (
    balanced_allocation,
    least_allocated,
    raw_scores,
    weighted_totals,
)
from tests.unit.scheduler.test_filters import fits, info, node, pod


def scored(p: dict, infos: list) -> dict[str, int]:
    """The weighted total of each node of `infos` for pod `p`, as the scheduler adds them."""
    state = PodState.of(p)
    totals = weighted_totals(state, [raw_scores(state, i) for i in infos])
    return {i.name: total for i, total in zip(infos, totals, strict=True)}

pytestmark = pytest.mark.unit


def test_least_allocated_prefers_emptier_node() -> None:
    busy = info(node("busy"), pod("a", cpu="1500m", memory="3Gi"))
    idle = info(node("idle"))
    p = pod(cpu="100m", memory="100Mi")
    state = PodState.of(p)
    assert least_allocated(state, idle) > least_allocated(state, busy)
    scores = scored(p, [busy, idle])
    assert scores["idle"] > scores["busy"]


def test_balanced_allocation() -> None:
    n = node(cpu="1", memory="1Gi")
    even, cpu_heavy = PodState.of(pod(cpu="500m", memory="512Mi")), \
        PodState.of(pod(cpu="900m", memory="10Mi"))
    assert balanced_allocation(even, info(n)) == 100
    assert balanced_allocation(cpu_heavy, info(n)) < 70


def test_preferred_affinity_and_prefer_no_schedule() -> None:
    a = info(node("a", labels={"zone": "x"}))
    b = info(node("b", taints=[{"key": "k", "effect": "PreferNoSchedule"}]))
    c = info(node("c"))
    p = pod(affinity={"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 50, "preference": {"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["x"]}]}}]}})
    s = scored(p, [a, b, c])
    assert s["a"] > s["c"] > s["b"]
    tolerant = pod(tolerations=[{"key": "k", "operator": "Exists"}])
    s = scored(tolerant, [b, c])
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
    s = scored(p, [a, b])
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
    """A node's facts are parsed once per Node object and a pod's once per scheduling cycle
    (its PodState): a Node update (a new object) and the next pod are read afresh."""
    i = info(node(cpu="1", memory="1Gi"))
    big = pod(cpu="1500m")
    assert fits(big, i) == ("NodeResourcesFit", ["Insufficient cpu"])
    i.node = node(cpu="2", memory="1Gi")
    assert fits(big, i) == ("", [])
    assert fits(pod(name="q", cpu="3"), i) == ("NodeResourcesFit", ["Insufficient cpu"])
    one, small = PodState.of(pod(cpu="1")), PodState.of(pod(cpu="100m"))
    assert least_allocated(one, i) < least_allocated(small, i)
