"""The Scheduler against a real in-process Registry: binding, FailedScheduling events and the
PodScheduled condition, retry when a node appears, spreading and throughput."""


import pytest

from k3py.server.scheduler.podstate import required_node_names
from k3py.server.scheduler.scheduler import Scheduler
from tests.unit.controllers.test_core_support import cluster, eventually

pytestmark = pytest.mark.unit


def node(name, cpu="4", pods="110", labels=None):
    return {"metadata": {"name": name, "labels": labels or {}},
            "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": pods},
                       "capacity": {"cpu": cpu, "memory": "8Gi", "pods": pods}}}


def pod(name, cpu=None, **spec):
    c = {"name": "c", "image": "busybox"}
    if cpu:
        c["resources"] = {"requests": {"cpu": cpu}}
    return {"metadata": {"name": name}, "spec": {"containers": [c], **spec}}


async def test_binds_and_records_scheduled(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        await c.create("nodes", node("node1"))
        await c.start(Scheduler)
        await c.create("pods", pod("web-1"))

        async def bound():
            p = await c.get("pods", "default", "web-1")
            return p["spec"].get("nodeName")
        assert await eventually(bound) == "node1"
        p = await c.get("pods", "default", "web-1")
        cond = [x for x in p["status"]["conditions"] if x["type"] == "PodScheduled"][0]
        assert cond["status"] == "True"

        async def event():
            return [e for e in await c.list("events", "default") if e["reason"] == "Scheduled"]
        ev = (await eventually(event))[0]
        assert ev["message"] == "Successfully assigned default/web-1 to node1"
        assert ev["source"]["component"] == "default-scheduler"


async def test_unschedulable_then_node_appears(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        await c.create("nodes", node("small", cpu="1"))
        await c.create("nodes", node("ssd", cpu="1", labels={"disk": "ssd"}))
        await c.create("nodes", node("other", cpu="1"))
        await c.start(Scheduler)
        await c.create("pods", pod("big", cpu="2", nodeSelector={"disk": "ssd"}))
        await c.create("pods", pod("other-sched", schedulerName="my-scheduler"))

        async def condition():
            p = await c.get("pods", "default", "big")
            conds = [x for x in (p.get("status") or {}).get("conditions") or []
                     if x["type"] == "PodScheduled"]
            return conds[0] if conds else None
        cond = await eventually(condition)
        msg = ("0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node "
               "affinity/selector. preemption: 0/3 nodes are available: 1 No preemption "
               "victims found for incoming pod, 2 Preemption is not helpful for scheduling.")
        assert cond["status"] == "False" and cond["reason"] == "Unschedulable"
        assert cond["message"] == msg
        evs = [e for e in await c.list("events", "default") if e["reason"] == "FailedScheduling"]
        assert evs and evs[0]["message"] == msg and evs[0]["type"] == "Warning"

        await c.create("nodes", node("ssd-big", cpu="8", labels={"disk": "ssd"}))

        async def bound():
            return (await c.get("pods", "default", "big"))["spec"].get("nodeName")
        assert await eventually(bound) == "ssd-big"
        assert not (await c.get("pods", "default", "other-sched"))["spec"].get("nodeName")


async def test_spread_evenly_over_three_nodes(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        for i in range(3):
            await c.create("nodes", node(f"n{i}"))
        await c.start(Scheduler)
        owner = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                  "uid": "11111111-2222-3333-4444-555555555555", "controller": True}]
        for i in range(99):
            p = pod(f"p{i}", cpu="10m")
            p["metadata"]["ownerReferences"] = owner
            await c.create("pods", p)

        async def all_bound():
            pods = await c.list("pods", "default")
            return len(pods) == 99 and all(p["spec"].get("nodeName") for p in pods)
        await eventually(all_bound, timeout=20)
        counts: dict[str, int] = {}
        for p in await c.list("pods", "default"):
            counts[p["spec"]["nodeName"]] = counts.get(p["spec"]["nodeName"], 0) + 1
        assert sorted(counts.values()) == [33, 33, 33], counts


def pinned(name: str, *nodes: str) -> dict:
    """A pod whose required affinity names its nodes, as a DaemonSet's pods do."""
    terms = [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [n]}]}
             for n in nodes]
    return pod(name, affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                                                {"nodeSelectorTerms": terms}}})


async def test_pods_pinned_by_name_as_daemonset_pods(tmp_path) -> None:
    """Only the named nodes are tried (upstream's NodeAffinity PreFilterResult); the others
    count in FailedScheduling as upstream words them, and conflicting terms fail at once."""
    async with cluster(tmp_path) as c:
        for i in range(5):
            await c.create("nodes", node(f"n{i}", cpu="1"))
        await c.start(Scheduler)
        await c.create("pods", pinned("ds-3", "n3"))
        await c.create("pods", pinned("ds-gone", "n3", "gone"))
        await c.create("pods", pinned("ds-big", "n1"))
        big = await c.get("pods", "default", "ds-big")
        big["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "2"}}
        await c.delete("pods", "default", "ds-big")
        big["metadata"] = {"name": "ds-big2"}
        await c.create("pods", big)
        conflict = pinned("ds-conflict", "n1")
        conflict["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0][
            "matchFields"].append({"key": "metadata.name", "operator": "In", "values": ["n2"]})
        await c.create("pods", conflict)

        async def node_of(name):
            return (await c.get("pods", "default", name))["spec"].get("nodeName")
        assert await eventually(lambda: node_of("ds-3")) == "n3"
        assert await eventually(lambda: node_of("ds-gone")) == "n3"

        async def message(name):
            p = await c.get("pods", "default", name)
            return [x["message"] for x in (p.get("status") or {}).get("conditions") or []
                    if x["type"] == "PodScheduled" and x["status"] == "False"]
        assert (await eventually(lambda: message("ds-big2")))[0] == (
            "0/5 nodes are available: 1 Insufficient cpu, 4 node(s) didn't satisfy plugin(s) "
            "[NodeAffinity]. preemption: 0/5 nodes are available: 1 No preemption victims "
            "found for incoming pod, 4 Preemption is not helpful for scheduling.")
        assert (await eventually(lambda: message("ds-conflict")))[0] == (
            "0/5 nodes are available: pod affinity terms conflict. preemption: 0/5 nodes are "
            "available: 5 Preemption is not helpful for scheduling.")


async def test_a_pinned_pod_leaves_the_rotation_where_it_was(tmp_path) -> None:
    """A DaemonSet pod tries its named node only, and the next ordinary pod starts where the
    last ordinary one stopped (it used to start again at node 0, so the first nodes were
    scored far more often while DaemonSet pods came)."""
    async with cluster(tmp_path) as c:
        for i in range(150):
            await c.create("nodes", node(f"n{i:03}"))
        sched = await c.start(Scheduler)

        async def node_of(name):
            return (await c.get("pods", "default", name))["spec"].get("nodeName")
        await c.create("pods", pod("plain"))
        await eventually(lambda: node_of("plain"))
        assert sched._sampler.next_start == 100  # 100 of 150 nodes fit: the search stopped
        await c.create("pods", pinned("ds", "n007"))
        assert await eventually(lambda: node_of("ds")) == "n007"
        assert sched._sampler.next_start == 100


def test_no_node_selector_term_restricts_nothing() -> None:
    assert required_node_names({"nodeSelectorTerms": []}) is None
    assert required_node_names({}) is None


async def test_a_bound_pods_status_updates_keep_its_place_until_it_ends(tmp_path) -> None:
    """Status writes of a bound pod leave it counted on its node (they do not take it off and
    on again); once it Succeeds its slot frees and the waiting pod takes it."""
    async with cluster(tmp_path) as c:
        await c.create("nodes", node("one", pods="1"))
        sched = await c.start(Scheduler)
        await c.create("pods", pod("first"))

        async def node_of(name):
            return (await c.get("pods", "default", name))["spec"].get("nodeName")
        assert await eventually(lambda: node_of("first")) == "one"

        async def phase(value):
            def mutate(cur):
                cur.setdefault("status", {})["phase"] = value
                return cur
            await c.registry.update_with(c.res("pods"), "default", "first", mutate,
                                         subresource="status")
        for value in ("Pending", "Running"):
            await phase(value)
        await c.create("pods", pod("second"))

        async def too_many():
            p = await c.get("pods", "default", "second")
            return [x["message"] for x in (p.get("status") or {}).get("conditions") or []
                    if x["type"] == "PodScheduled" and x["status"] == "False"]
        assert "1 Too many pods" in (await eventually(too_many))[0]
        assert list(sched.nodes["one"].pods) == ["default/first"]
        await phase("Succeeded")
        assert await eventually(lambda: node_of("second")) == "one"
