"""Edge autonomy for real: a `k3py agent` in a network namespace loses its link until both ends
have dropped the tunnel (the websocket's heartbeat notices within about 15 s), and for at least
K3PY_TEST_CUT_SECONDS (default 0), while its pods keep running, and after the link returns the
server's view equals the node's.

Offline, the node restarts a container killed under it (restartPolicy Always), records a
readiness flip (its readiness probe fails) and queues both statuses in meta.db, one per pod;
meanwhile on the server one pod is deleted (it stays Terminating, as upstream, until the node
confirms), one is force-deleted (gone at once), one is created and one is relabelled. Once the
link is back: every container on the node is the one the server reports (same podman id,
running, restart count, readiness), the terminating pod is stopped and then gone, the
force-deleted one's containers are gone, the new pod runs, the label is in the node's cache,
no container was restarted or recreated by the reconnect, and each Event is one object whose
count went up only by what happened offline (nothing posted twice).

Before the cut, a `kubectl delete --force --grace-period=0` of a pod on the connected node
deletes the object at once, and the agent then removes its containers. The 10-minute and
100-pod versions are bench/autonomy.py. Needs root (`ip netns`); skipped otherwise."""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.harness import wait_for
from tests.integration.agents import IMAGE, build_test_image
from tests.integration.netns import netns_factory  # noqa: F401 - fixture
from tests.integration.offline import OfflineNode

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CUT_SECONDS = float(os.environ.get("K3PY_TEST_CUT_SECONDS", "0"))
RESYNC_BOUND = 60.0  # a deadline for the waits, not a figure (bench/autonomy.py measures)


def _pod(name: str, *, readiness: bool = False) -> dict:
    c: dict = {"name": "c", "image": IMAGE, "imagePullPolicy": "Never",
               "command": ["sh", "-c", "touch /tmp/ready; exec sleep 3600"]}
    if readiness:
        c["readinessProbe"] = {"exec": {"command": ["test", "-f", "/tmp/ready"]},
                               "periodSeconds": 1, "failureThreshold": 1}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [c]}}


@pytest.fixture
def offline(netns_factory, tmp_path):  # noqa: F811 - the fixture imported above
    ns = netns_factory()
    build_test_image(tmp_path / "busybox.tar")
    node = OfflineNode(ns, tmp_path, f"offline-{ns.id[:6]}")
    try:
        node.start()
        yield node
    finally:
        node.stop()


def _apply(node: OfflineNode, pod: dict) -> None:
    pod["spec"]["nodeName"] = node.node
    node.srv.kubectl("apply", "-f", "-", input=json.dumps(pod))


def _running(node: OfflineNode, names: list[str]) -> bool:
    view = node.server_view()
    return all(view.get(n) and all(c.running for c in view[n].values()) for n in names)


def test_offline_node_keeps_running_and_resyncs(offline: OfflineNode):
    node = offline
    for name in ("steady", "crasher", "doomed", "forced", "quick"):
        _apply(node, _pod(name, readiness=name == "steady"))
    wait_for(lambda: _running(node, ["steady", "crasher", "doomed", "forced", "quick"]) and
             not node.differences({"steady": True}), 90, 0.5, "pods Running" + node.logs())

    # connected: a forced delete removes the object at once, then the node its containers
    node.srv.kubectl("delete", "pod", "quick", "--force", "--grace-period=0")
    assert "quick" not in node.server_view()
    wait_for(lambda: "quick" not in node.node_view(), 30, 0.3, "quick's containers removed")

    before = node.events()
    for key, counts in before.items():
        assert len(counts) == 1, f"{key}: {len(counts)} Event objects, one expected: {counts}"
    crasher = node.node_view()["crasher"]["c"]

    marks = node.log_marks()
    node.cut()
    cut_at = time.monotonic()
    try:
        # on the node: a crash, restarted offline; a readiness flip, recorded offline
        node.podman("kill", crasher.id)
        wait_for(lambda: (v := node.node_view()["crasher"]["c"]).running and v.restarts == 1,
                 30, 0.3, "crasher restarted offline" + node.logs())
        node.podman("exec", node.node_view()["steady"]["c"].id, "rm", "/tmp/ready")
        # on the server: delete (graceful), force-delete, create, relabel
        node.srv.kubectl("delete", "pod", "doomed", "--wait=false")
        node.srv.kubectl("delete", "pod", "forced", "--force", "--grace-period=0")
        _apply(node, _pod("late"))
        node.srv.kubectl("label", "pod", "steady", "changed=offline")
        wait_for(lambda: [c.get("ready") for c in node.queued_status("steady").get(
            "containerStatuses", [])] == [False], 30, 0.3,
            "readiness flip queued offline" + node.logs())
        crashed = node.queued_status("crasher")
        assert crashed["containerStatuses"][0]["restartCount"] == 1, crashed
        wait_for(lambda: node.tunnel_lost(marks), RESYNC_BOUND, 0.5,
                 "both ends to drop the tunnel" + node.logs())
        left = CUT_SECONDS - (time.monotonic() - cut_at)
        if left > 0:
            time.sleep(left)  # a longer cut, when asked for
        doomed = node.srv.kubectl_json("get", "pod", "doomed")
        assert doomed["metadata"].get("deletionTimestamp"), "doomed not Terminating"
        assert doomed["metadata"]["deletionGracePeriodSeconds"] == 1
        assert node.node_view()["doomed"]["c"].running, "doomed stopped without its server"
        messages, events, size = node.outbox()
        print(f"\noutbox after {time.monotonic() - cut_at:.0f}s offline: {messages} messages "
              f"({events} Events), {size} bytes")
        on_node = node.node_view()
    finally:
        node.restore()

    expect = {"steady": False}
    wait_for(lambda: not node.differences(expect) and set(node.server_view()) ==
             {"steady", "crasher", "late"} and _running(node, ["late"]), RESYNC_BOUND, 0.3,
             "the server's view equals the node's after the link returned" + node.logs())
    after = node.node_view(expect)
    for pod in ("steady", "crasher"):  # not restarted, not recreated by the reconnect
        assert after[pod]["c"].same(on_node[pod]["c"]), (pod, on_node[pod], after[pod])
    assert after["crasher"]["c"].restarts == 1 and after["steady"]["c"].ready is False
    steady = node.srv.kubectl_json("get", "pod", "steady")
    assert {c["type"]: c["status"] for c in steady["status"]["conditions"]}["Ready"] == "False"
    assert node.cached_pod("steady")["metadata"]["labels"] == {"changed": "offline"}
    assert not {"doomed", "forced"} & set(node.node_view())

    # Events: one object each; only what happened offline added to their counts (the
    # restart's Events are queued after its status, so they may arrive a little later)
    def restart_counted() -> dict:
        got = node.events()
        return all(got.get(("crasher", r)) == [before[("crasher", r)][0] + 1]
                   for r in ("Created", "Started")) and got
    events = wait_for(restart_counted, 30, 0.3, "the offline restart's Events")
    for key, counts in events.items():
        assert len(counts) == 1, f"{key}: posted {len(counts)} times: {counts}"
    for key, counts in before.items():
        if key[0] == "steady" and key[1] != "Unhealthy":
            assert events[key] == counts, (key, counts, events[key])
    assert events.get(("steady", "Unhealthy")), "the failed readiness probe has no Event"
