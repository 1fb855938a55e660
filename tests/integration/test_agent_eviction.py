"""Taint-based eviction end to end: `--node-eviction-timeout` on, and off (KubeEdge autonomy).

Two real servers side by side, each with one real `k3py agent` running real busybox pods on
podman; both agents are killed at once, so the one node-monitor grace (NODE_MONITOR_GRACE,
set on both servers) is paid once for both halves of the proof:
- with `--node-eviction-timeout EVICT_AFTER`, the silent node turns Unknown (NotReady in
  kubectl) with the unreachable NoSchedule and NoExecute taints; a pod tolerating the taint for
  SHORT_TOLERATION seconds is evicted first while the pod with the default 300 s tolerations
  stays, until EVICT_AFTER caps those 300 s and evicts it too; a pod tolerating the taint
  without tolerationSeconds (as DaemonSet pods do) is kept; each eviction has its
  TaintManagerEviction event;
- without the flag, the node goes Unknown with the NoSchedule taint only, and the same pods,
  short toleration included, are all kept (edge autonomy: the node runs them offline).
An evicted pod stays Terminating, as upstream, until its node confirms. Then the evicting node's
agent is restarted: the taints go, and it removes the evicted pods' containers (still running on
the node while it was cut off), which deletes their objects, and keeps the tolerating pod.

The agents' podman pods (labelled with their unique node names) are removed at the end."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.harness import NODE_MONITOR_ARGS, NODE_MONITOR_GRACE, ServerProcess, clean_env, wait_for
from tests.integration.agents import IMAGE, build_test_image, podman_pods, remove_podman_pods

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVICT_AFTER = 12        # --node-eviction-timeout of the evicting server
SHORT_TOLERATION = 2    # tolerationSeconds of the pod that must go first
GRACE = NODE_MONITOR_GRACE  # node-monitor grace period of both servers
LEASE_EVERY = 10        # the agent renews its Lease this often (agent/node.py)
UNREACHABLE = "node.kubernetes.io/unreachable"


class Side:
    """One server, its one agent process and the node that agent registers."""

    def __init__(self, tmp: Path, label: str, server_args: list[str]) -> None:
        self.node = f"{label}-{uuid.uuid4().hex[:6]}"
        self.srv = ServerProcess(tmp / f"server-{label}",
                                 extra_args=[*server_args, *NODE_MONITOR_ARGS])
        self.agent_dir = tmp / f"agent-{label}"
        self.agent_log = tmp / f"agent-{label}.log"
        self.agent: subprocess.Popen | None = None

    def start_agent(self) -> None:
        with open(self.agent_log, "ab") as log:
            self.agent = subprocess.Popen(
                self.srv.agent_command(self.agent_dir, self.node),
                stdout=log, stderr=subprocess.STDOUT, env=clean_env(), start_new_session=True)

    def kill_agent(self) -> None:
        """SIGKILL to the agent only: its containers keep running under conmon, as on a node
        whose link or agent died."""
        assert self.agent is not None and self.agent.poll() is None, self.logs()
        self.agent.send_signal(signal.SIGKILL)
        self.agent.wait(10)

    def ready(self) -> str:
        for c in self.node_obj()["status"].get("conditions", []):
            if c["type"] == "Ready":
                return c["status"]
        return ""

    def node_obj(self) -> dict:
        return self.srv.kubectl_json("get", "node", self.node)

    def taints(self) -> set[tuple[str, str]]:
        return {(t["key"], t["effect"]) for t in self.node_obj()["spec"].get("taints", [])}

    def apply_pod(self, name: str, tolerations: list[dict] | None = None) -> None:
        spec: dict = {"nodeName": self.node, "terminationGracePeriodSeconds": 5,
                      "containers": [{
                          "name": "c", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                          "command": ["sh", "-c", "trap 'exit 0' TERM; "
                                      "while true; do sleep 1; done"]}]}
        if tolerations is not None:
            spec["tolerations"] = tolerations
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
        self.srv.kubectl("apply", "-f", "-", input=json.dumps(pod))

    def pods(self) -> dict[str, dict]:
        return {p["metadata"]["name"]: p
                for p in self.srv.kubectl_json("get", "pods")["items"]}

    def live_pods(self) -> dict[str, dict]:
        """The pods not marked for deletion."""
        return {n: p for n, p in self.pods().items() if not p["metadata"].get("deletionTimestamp")}

    def running(self, names: list[str]) -> bool:
        pods = self.pods()
        return all(pods.get(n, {}).get("status", {}).get("phase") == "Running" for n in names)

    def evictions(self) -> dict[str, dict]:
        """TaintManagerEviction events by pod name."""
        events = self.srv.kubectl_json("get", "events")["items"]
        return {e["involvedObject"]["name"]: e for e in events
                if e.get("reason") == "TaintManagerEviction"}

    def logs(self) -> str:
        out = ""
        for path in (self.srv.log_path, self.agent_log):
            if path.exists():
                out += f"\n--- {path.name}\n" + path.read_text(errors="replace")[-3000:]
        return out

    def stop(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.terminate()  # a clean stop ends its podman service too
            try:
                self.agent.wait(15)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait(10)
        self.srv.stop()
        remove_podman_pods(self.node)


def _time(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))


@pytest.fixture
def sides(tmp_path):
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    build_test_image(tmp_path / "busybox.tar")
    # two clusters on one host: each its own pod CIDR (their pod bridges cannot share a subnet)
    evict = Side(tmp_path, "evict", ["--node-eviction-timeout", str(EVICT_AFTER),
                                     "--cluster-cidr", "10.52.0.0/16"])
    keep = Side(tmp_path, "keep", [])
    try:
        for s in (evict, keep):
            s.srv.start(wait=False)
        for s in (evict, keep):
            s.srv.wait_ready()
            s.start_agent()
        for s in (evict, keep):
            wait_for(lambda s=s: s.ready() == "True", 60, 0.3, f"node {s.node} Ready")
        yield evict, keep
    finally:
        for s in (evict, keep):
            with contextlib.suppress(Exception):
                s.stop()


def test_unreachable_node_evicts_only_with_the_flag(sides):
    evict, keep = sides
    forever = [{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]
    short = [{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute",
              "tolerationSeconds": SHORT_TOLERATION}]
    names = ["short", "default", "forever"]
    for s in (evict, keep):
        s.apply_pod("short", short)
        s.apply_pod("default")  # admission adds the 300 s not-ready/unreachable tolerations
        s.apply_pod("forever", forever)
    for s in (evict, keep):
        wait_for(lambda s=s: s.running(names), 90, 0.5, f"pods Running on {s.node}")
    assert {t["key"]: t.get("tolerationSeconds") for t in
            evict.pods()["default"]["spec"]["tolerations"]}[UNREACHABLE] == 300

    for s in (evict, keep):
        s.kill_agent()
    for s in (evict, keep):
        wait_for(lambda s=s: s.ready() == "Unknown", GRACE + LEASE_EVERY + 20, 1,
                 f"node {s.node} Unknown" + s.logs())
        row = s.srv.kubectl("get", "node", s.node, "--no-headers").stdout.split()
        assert row[1] == "NotReady", row

    # with the flag: NoExecute next to NoSchedule; the short toleration runs out first
    wait_for(lambda: (UNREACHABLE, "NoExecute") in evict.taints(), 15, 0.5,
             "NoExecute taint" + evict.logs())
    assert (UNREACHABLE, "NoSchedule") in evict.taints()
    wait_for(lambda: "short" not in evict.live_pods(), SHORT_TOLERATION + 15, 0.3,
             "short-toleration pod evicted" + evict.logs())
    # (the default pod's turn is EVICT_AFTER - SHORT_TOLERATION seconds away)
    still = evict.pods()
    assert "default" in still and not still["default"]["metadata"].get("deletionTimestamp")

    # EVICT_AFTER caps the default 300 s; a toleration without seconds is never up
    wait_for(lambda: "default" not in evict.live_pods(), EVICT_AFTER + 15, 0.5,
             "default-toleration pod evicted" + evict.logs())
    left = evict.live_pods()
    assert list(left) == ["forever"]
    # as upstream: an evicted pod stays Terminating until its node confirms it stopped it
    assert sorted(evict.pods()) == sorted(names)
    assert not left["forever"]["metadata"].get("deletionTimestamp")

    # the events, and that no pod went before its time (server clocks, 1 s resolution)
    added = next(_time(t["timeAdded"]) for t in evict.node_obj()["spec"]["taints"]
                 if (t["key"], t["effect"]) == (UNREACHABLE, "NoExecute"))
    ev = evict.evictions()
    assert set(ev) == {"short", "default"}, ev
    for name, delay in (("short", SHORT_TOLERATION), ("default", EVICT_AFTER)):
        e = ev[name]
        assert e["message"] == f"Marking for deletion Pod default/{name}"
        assert e["involvedObject"]["kind"] == "Pod"
        assert (_time(e["firstTimestamp"]) - added).total_seconds() >= delay - 1, (name, e)
    assert evict.srv.kubectl("get", "events", "--field-selector",
                             "reason=TaintManagerEviction").stdout.count("Marking") == 2

    # without the flag: NoSchedule only, and once the node has been Unknown for EVICT_AFTER
    # (its lease may have been renewed up to LEASE_EVERY later than the other's) every pod
    # is still there, with no eviction event
    unknown_since = _time(next(c["lastTransitionTime"] for c in
                               keep.node_obj()["status"]["conditions"] if c["type"] == "Ready"))
    left_s = (unknown_since - dt.datetime.now(dt.UTC)).total_seconds() + EVICT_AFTER + 1
    if left_s > 0:
        time.sleep(left_s)
    assert keep.taints() == {(UNREACHABLE, "NoSchedule")}
    kept = keep.pods()
    assert sorted(kept) == sorted(names)
    assert not any(p["metadata"].get("deletionTimestamp") for p in kept.values())
    assert keep.evictions() == {}

    # the evicting node comes back: taints gone, and its agent removes the evicted pods'
    # containers, which ran on offline, and keeps the tolerating one
    for s in (evict, keep):
        assert len(podman_pods(s.node)) == len(names), podman_pods(s.node)
    evict.start_agent()
    wait_for(lambda: evict.ready() == "True", 60, 0.3, "node back Ready" + evict.logs())
    wait_for(lambda: not evict.taints(), 15, 0.5, "lifecycle taints removed" + evict.logs())
    uid = left["forever"]["metadata"]["uid"]
    wait_for(lambda: podman_pods(evict.node) == [f"default_forever_{uid[:8]}"], 60, 0.5,
             "evicted pods removed from podman" + evict.logs())
    wait_for(lambda: list(evict.pods()) == ["forever"], 30, 0.5,
             "evicted pods deleted once the node confirmed" + evict.logs())
    wait_for(lambda: evict.running(["forever"]), 30, 0.5, "kept pod Running")
