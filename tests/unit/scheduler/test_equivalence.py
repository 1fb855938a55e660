"""Equivalence classes: a pod class's verdicts kept per node give the same decisions and
scores as evaluating every node afresh, through pods placed, bound, ended and deleted and
Nodes changed, beaten, deleted and made again; what a verdict is kept with."""

import copy
import random

import pytest

from k3py.server.scheduler.equivalence import EquivalenceCache, equivalence_key, judge
from k3py.server.scheduler.filters import filters_for
from k3py.server.scheduler.nodeinfo import NodeInfo
from k3py.server.scheduler.podstate import PodState
from k3py.server.scheduler.scheduler import Scheduler
from tests.unit.controllers.test_core_support import cluster
from tests.unit.scheduler.test_filters import node, pod

pytestmark = pytest.mark.unit

TOLERATIONS = (None, [{"key": "dedicated", "operator": "Equal", "value": "gpu",
                       "effect": "NoSchedule"}], [{"operator": "Exists"}],
               [{"key": "slow", "operator": "Exists", "effect": "PreferNoSchedule"}])
PREFERRED = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
    {"weight": 10, "preference": {"matchExpressions": [
        {"key": "zone", "operator": "In", "values": ["b"]}]}}]}}


def pod_class(rng: random.Random) -> dict:
    """A random pod shape: requests, tolerations, selector, preferred affinity, host port, owner."""
    spec: dict = {}
    tolerations = rng.choice(TOLERATIONS)
    if tolerations:
        spec["tolerations"] = tolerations
    if rng.random() < 0.2:
        spec["nodeSelector"] = {"zone": rng.choice("ab")}
    if rng.random() < 0.3:
        spec["affinity"] = PREFERRED
    p = pod("x", cpu=rng.choice([None, "100m", "500m", "1"]),
            memory=rng.choice([None, "256Mi", "1Gi"]), **spec)
    if rng.random() < 0.1:
        p["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": 8080}]
    owner = rng.choice([None, "rs-a", "rs-b", "rs-c"])
    if owner:
        p["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "name": owner,
                                             "uid": owner, "controller": True}]
    return p


def random_node(rng: random.Random, name: str) -> dict:
    taints = []
    if rng.random() < 0.2:
        taints.append({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"})
    if rng.random() < 0.3:
        taints.append({"key": "slow", "effect": "PreferNoSchedule"})
    return node(name, labels={"zone": rng.choice("ab")}, taints=taints,
                cpu=rng.choice(["2", "4"]), memory=rng.choice(["4Gi", "8Gi"]),
                pods=rng.choice(["4", "8", "110"]), unschedulable=rng.random() < 0.05)


def heartbeat(n: dict) -> dict:
    """The Node again as a status update makes it: a new object, the same facts."""
    beat = copy.deepcopy(n)
    beat["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    return beat


def assert_kept_verdicts_current(sched: Scheduler, states: dict[bytes, PodState]) -> None:
    """Every verdict kept at a node's current generation is what evaluating it now gives."""
    for key, known in sched._equivalence._classes.items():
        state = states[key]
        for name, verdict in known.items():
            info = sched.nodes.get(name)
            if info is not None and verdict.generation == info.generation:
                assert verdict == judge(state, info, filters_for(state)), (name, state.pod)


async def test_kept_verdicts_decide_as_evaluating_every_node(tmp_path) -> None:
    """Two schedulers see the same events; one keeps its classes' verdicts, the other keeps
    none (every node evaluated for every pod). With the same random tie-breaks they choose
    the same nodes and fail with the same messages, 1,500 steps over 30 nodes."""
    rng = random.Random(14)
    async with cluster(tmp_path) as c:
        kept, fresh = Scheduler(c.ctx), Scheduler(c.ctx)
        fresh._equivalence = EquivalenceCache(classes=0)
        both = (kept, fresh)
        for s in both:
            s.setup()  # its informers are not started: the test plays their events
        nodes = {f"n{i:02d}": random_node(rng, f"n{i:02d}") for i in range(30)}
        for n in nodes.values():
            for s in both:
                s._on_node("ADDED", None, n)
        placed: dict[str, dict] = {}  # pod name -> the pod as bound (nodeName set)
        assumed: dict[str, dict] = {}  # pod name -> the pod not yet seen bound
        shapes = [pod_class(rng) for _ in range(12)]  # fewer than the classes kept
        states: dict[bytes, PodState] = {}
        decided = failed = 0
        for step in range(1500):
            roll = rng.random()
            if roll < 0.55:  # a new pod of one of the shapes
                p = copy.deepcopy(rng.choice(shapes))
                p["metadata"]["name"] = f"p{step}"
                state = PodState.of(p)
                states[equivalence_key(state)] = state
                seed = rng.random()
                results = []
                for s in both:
                    random.seed(seed)
                    results.append(s.schedule_one(state))
                assert results[0] == results[1], p
                if isinstance(results[0], str):
                    decided += 1
                    for s in both:
                        s._assume(state, results[0])
                    assumed[p["metadata"]["name"]] = {
                        **p, "spec": {**p["spec"], "nodeName": results[0]}}
                else:
                    failed += 1
            elif roll < 0.7 and assumed:  # the watch shows an assumed pod bound
                name = rng.choice(sorted(assumed))
                bound = placed[name] = assumed.pop(name)
                for s in both:
                    s._on_pod("MODIFIED", None, bound)
            elif roll < 0.8 and placed:  # a pod ends or is deleted
                name = rng.choice(sorted(placed))
                gone = placed.pop(name)
                if rng.random() < 0.5:
                    ended = {**gone, "status": {"phase": "Succeeded"}}
                    for s in both:
                        s._on_pod("MODIFIED", gone, ended)
                else:
                    for s in both:
                        s._on_pod("DELETED", gone, None)
            elif roll < 0.9:  # a heartbeat: the facts unchanged
                name = rng.choice(sorted(nodes))
                beat = heartbeat(nodes[name])
                for s in both:
                    s._on_node("MODIFIED", nodes[name], beat)
                nodes[name] = beat
            elif roll < 0.97:  # labels, taints, allocatable or cordon changed
                name = rng.choice(sorted(nodes))
                changed = random_node(rng, name)
                for s in both:
                    s._on_node("MODIFIED", nodes[name], changed)
                nodes[name] = changed
            else:  # a Node deleted, or made again
                name = rng.choice(sorted(nodes))
                for s in both:
                    s._on_node("DELETED", nodes[name], None)
                if rng.random() < 0.5:
                    for s in both:
                        s._on_node("ADDED", None, nodes[name])
                else:
                    del nodes[name]
            assert_kept_verdicts_current(kept, states)
        assert decided > 300 and failed > 10  # both ways taken often


def test_a_heartbeat_keeps_the_generation_a_change_moves_it() -> None:
    n = node("n1", labels={"zone": "a"})
    i = NodeInfo("n1", n)
    first = i.generation
    i.node = heartbeat(n)
    assert i.generation == first
    i.node = node("n1", labels={"zone": "b"})
    second = i.generation
    assert second > first
    i.add_pod({**pod("p"), "spec": {**pod("p")["spec"], "nodeName": "n1"}})
    assert i.generation > second
    third = i.generation
    i.remove_pod("default/missing")
    assert i.generation == third
    i.remove_pod("default/p")
    assert i.generation > third
    i.node = None
    assert i.generation > third and NodeInfo("n1").generation > i.generation


def test_pods_of_one_replicaset_share_a_class_others_do_not() -> None:
    def owned(name: str, owner: str, **kw) -> dict:
        p = pod(name, **kw)
        p["metadata"]["ownerReferences"] = [{"uid": owner, "controller": True}]
        return p
    key = equivalence_key(PodState.of(owned("a-1", "a", cpu="100m")))
    assert equivalence_key(PodState.of(owned("a-2", "a", cpu="100m"))) == key
    assert equivalence_key(PodState.of(owned("b-1", "b", cpu="100m"))) != key
    assert equivalence_key(PodState.of(owned("a-3", "a", cpu="200m"))) != key
    assert equivalence_key(PodState.of(pod("huge", cpu=str(2 ** 70)))) is None


def test_classes_kept_are_the_most_recent() -> None:
    cache = EquivalenceCache(classes=2)
    states = [PodState.of(pod(f"p{i}", cpu=f"{i + 1}00m")) for i in range(3)]
    cache.verdicts(states[0])["n1"] = "a"  # type: ignore[assignment]
    cache.verdicts(states[1])
    cache.verdicts(states[0])  # used again: the most recent
    cache.verdicts(states[2])  # the third: the least recent (states[1]) goes
    assert cache.verdicts(states[0]) == {"n1": "a"}
    assert cache.verdicts(states[1]) == {}

