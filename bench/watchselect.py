"""The API server's CPU an event for watches with a label selector, in-process (no store, no
HTTP): bench/scale.py's pods (100 per ReplicaSet, labelled bench=scale), each created, bound
and Running, as three store events published through the real Broadcaster to the Registry's
watches: the pod informer's (unselected, decoded) and `--watchers` selecting ones, the first
bench/scale.py's own `bench=scale`, the others `app=<one ReplicaSet>` (a `kubectl get -l -w`
each); each event a selecting watch sends is made into its JSON line as serve_watch does.

Run with the labels of each object version remembered (the Registry's LabelMemo, as the server
runs) and with none remembered (each watcher decodes both sides of each event), each less the
run of the informer alone. Run: python3 bench/watchselect.py [--pods 10000] [--watchers 4].
Prints `name: value unit` lines and `ratio: x` (remembered / none remembered)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.api import emit  # noqa: E402
from bench.scheduler import REPLICAS, replica_pods  # noqa: E402
from k3py.api.resources import builtin_registry  # noqa: E402
from k3py.server.apiserver.watch import _line  # noqa: E402
from k3py.server.registry import Registry  # noqa: E402
from k3py.server.store.backend import Event, KeyValue  # noqa: E402
from k3py.server.store.broadcaster import Broadcaster, WatchStream  # noqa: E402
from k3py.server.watchselection import LABEL_MEMO_ENTRIES, LabelMemo  # noqa: E402

BATCH = 16  # events a store commit publishes at once under load
BIND_LAG = REPLICAS  # pods created before the first of them is bound: one ReplicaSet's burst
RUN_LAG = 10 * REPLICAS  # pods created before the first of them reports Running
STAMP = "2026-12-07T19:00:00Z"


class ReplayBackend:
    """What Registry.watch asks of a store: a watch (a real WatchStream on a real
    Broadcaster) that the bench publishes to."""

    def __init__(self) -> None:
        self.broadcaster = Broadcaster(max_pending=1 << 30)

    async def watch(self, prefix: str, revision: int) -> WatchStream:
        return WatchStream(self.broadcaster, self.broadcaster.subscribe(prefix), [], revision,
                           revision, 0)


def _managed(manager: str, operation: str, fields: dict, sub: str = "") -> dict:
    entry = {"manager": manager, "operation": operation, "apiVersion": "v1", "time": STAMP,
             "fieldsType": "FieldsV1", "fieldsV1": fields}
    if sub:
        entry["subresource"] = sub
    return entry


def pod_versions(pod: dict, uid: int) -> tuple[bytes, bytes, bytes]:
    """The stored bytes of a pod as its ReplicaSet made it, once bound, once Running."""
    md = pod["metadata"]
    md.update({"uid": f"0000-{uid:08d}", "creationTimestamp": STAMP,
               "generateName": md["name"][:-3], "managedFields": [_managed(
                   "kube-controller-manager", "Update", {
                       "f:metadata": {"f:generateName": {}, "f:labels": {
                           "f:app": {}, "f:bench": {}}, "f:ownerReferences": {}},
                       "f:spec": {"f:containers": {'k:{"name":"c"}': {
                           "f:command": {}, "f:image": {}, "f:name": {}}}}})]})
    pod.update({"apiVersion": "v1", "kind": "Pod"})
    spec = pod["spec"]
    spec.update({"restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
                 "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
                 "serviceAccountName": "default", "enableServiceLinks": True,
                 "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                                  "effect": "NoExecute", "tolerationSeconds": 300}]})
    spec["containers"][0].update({"imagePullPolicy": "Always",
                                  "terminationMessagePath": "/dev/termination-log",
                                  "terminationMessagePolicy": "File", "resources": {}})
    pod["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
    created = Registry._strip(pod)
    spec["nodeName"] = f"hollow-{uid % 1000:05d}"
    pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "True",
                                    "lastProbeTime": None, "lastTransitionTime": STAMP}]
    bound = Registry._strip(pod)
    ip = f"10.42.{uid // 250 % 250}.{uid % 250 + 2}"
    pod["status"].update({
        "phase": "Running", "hostIP": "127.0.0.1", "podIP": ip, "podIPs": [{"ip": ip}],
        "startTime": STAMP,
        "conditions": [{"type": t, "status": "True", "lastProbeTime": None,
                        "lastTransitionTime": STAMP}
                       for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")],
        "containerStatuses": [{"name": "c", "ready": True, "restartCount": 0, "started": True,
                               "image": "busybox", "imageID": "sha256:" + "ab" * 32,
                               "containerID": f"podman://{uid:064x}",
                               "state": {"running": {"startedAt": STAMP}}}]})
    md["managedFields"].append(_managed("k3py-agent", "Update", {"f:status": {
        "f:conditions": {}, "f:containerStatuses": {}, "f:hostIP": {}, "f:phase": {},
        "f:podIP": {}, "f:podIPs": {}, "f:startTime": {}}}, "status"))
    return created, bound, Registry._strip(pod)


def pod_events(count: int) -> list[Event]:
    """Each pod's create, bind and Running update, in the order a scale run writes them:
    pods are bound BIND_LAG and report Running RUN_LAG creates after they were created."""
    pods = replica_pods(count)
    versions = [pod_versions(p, i) for i, p in enumerate(pods)]
    resources = builtin_registry()
    res = resources.get("", "v1", "pods")
    keys = [resources.storage_key(res, "default", p["metadata"]["name"]) for p in pods]
    live: dict[int, KeyValue] = {}
    events: list[Event] = []
    for step in range(count + RUN_LAG):
        for i, which in ((step, 0), (step - BIND_LAG, 1), (step - RUN_LAG, 2)):
            if not 0 <= i < count:
                continue
            rev = len(events) + 2
            prev = live.get(i)
            kv = KeyValue(keys[i], prev.create_revision if prev else rev, rev, versions[i][which])
            events.append(Event(create=prev is None, delete=False, kv=kv, prev_kv=prev))
            live[i] = kv
    return events


async def run(events: list[Event], selectors: list[str], memo: LabelMemo) -> float:
    """CPU seconds to publish `events` to the pod informer's watch and to one watch per
    selector, and for each watch to take every event it sees."""
    backend = ReplayBackend()
    registry = Registry(backend, builtin_registry())  # type: ignore[arg-type]
    registry.labels = memo
    pods = registry.resources.get("", "v1", "pods")
    seen = [0] * (len(selectors) + 1)

    async def informer() -> None:
        async for _ in await registry.watch(pods, None, resource_version="1"):
            seen[0] += 1

    async def selecting(i: int, selector: str) -> None:
        async for etype, obj in await registry.watch(pods, "default", resource_version="1",
                                                     label_selector=selector, raw=True):
            _line(etype, obj)
            seen[i] += 1

    tasks = [asyncio.create_task(informer())]
    tasks += [asyncio.create_task(selecting(i + 1, s)) for i, s in enumerate(selectors)]
    await asyncio.sleep(0)  # each watch subscribes, the informer's first (as in the server)
    gc.collect()
    t0 = time.process_time()
    for i in range(0, len(events), BATCH):
        backend.broadcaster.publish(events[i:i + BATCH])
        await asyncio.sleep(0)  # every watch takes the batch
    took = time.process_time() - t0
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if seen[0] != len(events) or (selectors and seen[1] != len(events)):
        raise SystemExit(f"the watches saw {seen} of {len(events)} events")
    return took


def memo_bytes_per_entry(events: list[Event]) -> float:
    """Bytes a full LabelMemo holds an entry, with its key (the store's string, shared)."""
    memo = LabelMemo()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for ev in events[:LABEL_MEMO_ENTRIES]:
        memo.labels(ev.kv)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return held / len(memo)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pods", type=int, default=10000)
    ap.add_argument("--watchers", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    events = pod_events(args.pods)
    replica_sets = sorted({p["metadata"]["labels"]["app"] for p in replica_pods(args.pods)})
    selectors = ["bench=scale"] + [f"app={rs}" for rs in replica_sets[:args.watchers - 1]]
    emit("events", len(events))
    emit("stored_pod_bytes", sum(len(e.kv.value) for e in events) / len(events), "B")
    best: dict[str, float] = {}
    for _ in range(args.repeat):
        for label, sel, memo in (("informer_alone", [], LabelMemo()),
                                 ("remembered", selectors, LabelMemo()),
                                 ("none_remembered", selectors, LabelMemo(entries=0))):
            took = await run(events, sel, memo)
            best[label] = min(best.get(label, took), took)
    us = 1e6 / len(events)
    emit("informer_us_per_event", best["informer_alone"] * us, "us")
    selected = {k: (best[k] - best["informer_alone"]) * us
                for k in ("remembered", "none_remembered")}
    for label, value in selected.items():
        emit(f"w{args.watchers}_selecting_us_per_event_{label}", value, "us")
    emit("label_memo_bytes_per_entry", memo_bytes_per_entry(events), "B")
    print(f"ratio: {selected['remembered'] / selected['none_remembered']:.2f}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
