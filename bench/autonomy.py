"""Autonomy benchmark: how fast a node that was offline resyncs, for 10 pods and for 100.

One real server and one real `k3py agent` in a network namespace (tests/integration/offline.py).
A Deployment of busybox `sleep` pods pinned to the node runs at 10 replicas, then 100. Each
round cuts the node's link, kills every container under the agent (it restarts them offline:
every pod's status changes, container id and restart count), keeps the link down for
--offline-seconds (default 60; 600 is the 10-minute run), notes the agent's queued outbox, then
restores the link and times until the server's view of every pod equals the node's (the same
running podman container and restart count), and until the tunnel was back.

Prints `resync_10_pods`, `resync_100_pods` (seconds from link restore until the views are
equal), `ratio` (100 / 10), the tunnel's own reconnect time, and the outbox after each offline
period (messages, Events, bytes). Run as root: python3 bench/autonomy.py [--offline-seconds S].
Traffic stays on the veth link and loopback; every wait has a deadline; the server, the agent,
the namespace and the node's podman pods are removed at the end, also on failure."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.api import emit  # noqa: E402
from tests.harness import wait_for  # noqa: E402
from tests.integration.agents import IMAGE, build_test_image  # noqa: E402
from tests.integration.netns import NetNS, netns_available  # noqa: E402
from tests.integration.offline import OfflineNode  # noqa: E402

APP = "autonomy-bench"
RESYNC_DEADLINE = 120.0  # a round that has not resynced by then is reported as failed


class Unmeasurable(Exception):
    pass


def deployment(node: str, replicas: int) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": APP, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": APP}},
                     "template": {"metadata": {"labels": {"app": APP}}, "spec": {
                         "nodeName": node, "terminationGracePeriodSeconds": 1,
                         "containers": [{"name": "c", "image": IMAGE,
                                         "imagePullPolicy": "Never",
                                         "command": ["sleep", "86400"]}]}}}}


def settled(node: OfflineNode, replicas: int) -> bool:
    view = node.node_view()
    return len(view) == replicas and all(c.running for p in view.values()
                                         for c in p.values()) and not node.differences()


def tunnel_back(node: OfflineNode, since: float) -> float | None:
    """Seconds after `since` (epoch) of the agent's first "tunnel connected" line after it."""
    for line in node.log.read_text(errors="replace").splitlines():
        if "tunnel connected" in line:
            try:
                at = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            except ValueError:
                continue
            if at >= since:
                return at - since
    return None


def round_(node: OfflineNode, replicas: int, offline: float) -> float:
    node.srv.kubectl("apply", "-f", "-", input=json.dumps(deployment(node.node, replicas)))
    try:
        wait_for(lambda: settled(node, replicas), 60 + 2 * replicas, 1.0,
                 f"{replicas} pods Running and reported")
    except TimeoutError as e:
        raise Unmeasurable(f"{e}{node.logs()}") from None
    before = node.node_view()
    node.cut()
    cut_at = time.monotonic()
    try:
        node.podman("kill", *sorted(c.id for p in before.values() for c in p.values()))

        def restarted() -> bool:
            view = node.node_view()
            return len(view) == replicas and all(
                c.running and c.restarts == before[pod][name].restarts + 1
                for pod, p in view.items() for name, c in p.items())
        try:
            wait_for(restarted, max(120.0, offline), 1.0,
                     f"{replicas} containers restarted offline")
        except TimeoutError as e:
            raise Unmeasurable(f"{e}{node.logs()}") from None
        left = offline - (time.monotonic() - cut_at)
        if left > 0:
            time.sleep(left)
        messages, events, size = node.outbox()
        on_node = node.node_view()
    finally:
        node.restore()
    restored, restored_wall = time.monotonic(), time.time()
    while node.differences(node_view=on_node):
        if time.monotonic() - restored > RESYNC_DEADLINE:
            raise Unmeasurable(f"{replicas} pods: not resynced {RESYNC_DEADLINE:.0f}s after "
                               f"the link returned: {node.differences(node_view=on_node)[:5]}")
        time.sleep(0.1)
    took = time.monotonic() - restored
    if node.node_view() != on_node:
        raise Unmeasurable(f"{replicas} pods: the reconnect restarted or recreated containers")
    emit(f"offline_{replicas}_pods", time.monotonic() - cut_at - took, "s")
    emit(f"outbox_after_offline_{replicas}_pods", messages, "messages")
    emit(f"outbox_events_after_offline_{replicas}_pods", events, "events")
    emit(f"outbox_bytes_after_offline_{replicas}_pods", size / 1024, "KiB")
    back = tunnel_back(node, restored_wall)
    emit(f"tunnel_back_{replicas}_pods", float("nan") if back is None else back, "s")
    emit(f"resync_{replicas}_pods", took, "s", target="< 5 s at 100 pods")
    return took


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--offline-seconds", type=float, default=60.0,
                    help="how long each round keeps the link down (600: the 10-minute run)")
    ap.add_argument("--pods", default="10,100",
                    help="the rounds' pod counts (the ratio is printed for 10 and 100)")
    args = ap.parse_args()
    counts = [int(n) for n in args.pods.split(",") if n.strip()]
    offline = max(25.0, min(args.offline_seconds, 900.0))  # > the heartbeat's 20 s
    ok, why = netns_available()
    if not ok:
        print(f"error: {why}", flush=True)
        return 1

    def interrupt(*_):
        raise KeyboardInterrupt
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
    with tempfile.TemporaryDirectory(prefix="k3py-bench-autonomy-") as d, NetNS() as ns:
        tmp = Path(d)
        build_test_image(tmp / "busybox.tar")
        node = OfflineNode(ns, tmp, f"autonomy-{ns.id[:6]}")
        try:
            node.start()
            took = {n: round_(node, n, offline) for n in counts}
            if 10 in took and 100 in took:
                print(f"ratio: {took[100] / took[10]:.2f}", flush=True)
            return 0
        except Unmeasurable as e:
            print(f"error: {e}", flush=True)
            return 1
        except KeyboardInterrupt:
            print("error: interrupted", flush=True)
            return 130
        finally:
            node.stop()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
