"""The scheduler's CPU a pod, in-process (no server, no store write): 1,000 hollow nodes'
Node objects (the agent's own node_object, as bench/hollow.py registers them) and 10,000 pods
of 100 ReplicaSets, each decided (schedule_one) and assumed on its node, as the Scheduler's
worker does before it binds.

Twice on the same nodes and pods, with the same random tie-breaks: with each pod class's
verdicts kept per node (equivalence.py, as the server runs) and with none kept (every node
tried is evaluated for every pod); the two must choose the same nodes.

Run: python3 bench/scheduler.py [--nodes 1000] [--pods 10000]. Prints `name: value unit`
lines and `ratio: x` (kept / none kept)."""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.api import emit  # noqa: E402
from k3py.agent.node import node_object  # noqa: E402
from k3py.server.scheduler.equivalence import EquivalenceCache  # noqa: E402
from k3py.server.scheduler.podstate import PodState  # noqa: E402
from k3py.server.scheduler.scheduler import Scheduler  # noqa: E402
from tests.unit.conftest import ControllerEnv, real_env  # noqa: E402

REPLICAS = 100  # pods per ReplicaSet, as bench/scale.py's Deployments


def replica_pods(count: int) -> list[dict]:
    """bench/scale.py's pods as their ReplicaSets make them, one ReplicaSet after the other."""
    pods = []
    for i in range(count):
        rs = f"scale-{i // REPLICAS:04d}-5d8f7c"
        pods.append({
            "metadata": {"name": f"{rs}-{i % REPLICAS:03d}", "namespace": "default",
                         "labels": {"bench": "scale", "app": rs},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                              "name": rs, "uid": f"uid-{rs}",
                                              "controller": True}]},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                                     "command": ["sleep", "3600"]}]}})
    return pods


def decide_all(sched: Scheduler, pods: list[dict]) -> tuple[float, list[str]]:
    """CPU seconds to decide and assume every pod, and the nodes chosen."""
    random.seed(14)
    chosen = []
    t0 = time.process_time()
    for pod in pods:
        state = PodState.of(pod)
        node = sched.schedule_one(state)
        if not isinstance(node, str):
            raise SystemExit(f"{pod['metadata']['name']}: {node[1]}")
        sched._assume(state, node)
        chosen.append(node)
    return time.process_time() - t0, chosen


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--pods", type=int, default=10000)
    args = ap.parse_args()
    pods = replica_pods(args.pods)
    with tempfile.TemporaryDirectory(prefix="k3py-bench-sched-") as tmp:
        nodes = [node_object(name=f"hollow-{i:05d}", node_ip="127.0.0.1",
                             labels={"k3py.io/hollow": "true"}, taints=[],
                             runtime_version="hollow", data_dir=tmp)
                 for i in range(args.nodes)]
        async with real_env(Path(tmp), (), ControllerEnv) as env:
            seconds: dict[str, float] = {}
            choices = []
            for label, classes in (("none_kept", 0), ("kept", None)):
                sched = Scheduler(env.ctx)
                sched.setup()  # informers not started: the nodes are played to it below
                if classes is not None:
                    sched._equivalence = EquivalenceCache(classes=classes)
                for n in nodes:
                    sched._on_node("ADDED", None, n)
                seconds[label], chosen = decide_all(sched, pods)
                choices.append(chosen)
                emit(f"n{args.nodes}_schedule_ms_per_pod_{label}",
                     seconds[label] * 1000 / args.pods, "ms")
    if choices[0] != choices[1]:
        raise SystemExit("the two schedulers chose different nodes")
    emit("same_nodes_chosen", args.pods, "pods")
    print(f"ratio: {seconds['kept'] / seconds['none_kept']:.2f}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
