"""Edge autonomy across an agent restart and a node reboot while the server is unreachable: a
`k3py agent` in a network namespace runs pods with volumes (emptyDir, configMap, secret, the
projected service-account token), its link is cut, and then

- restart: the agent is killed with -9 and started again during the cut. It starts from its
  cache and stored credential alone, adopts the running pods (same container ids, no
  restart), and joins when the link is back with the same certificate and the same Node.
- reboot: the agent is killed and every podman pod of the node removed (as a reboot leaves
  it), then started during the cut. It recreates every pod from its cache, with its volumes,
  and they run (podman and the agent's queued status say so while offline); after the link is
  back the server sees them Running and nothing is recreated a second time.

One server and one namespaced agent for the module; the two tests run in this order. Needs
root (`ip netns`); skipped with the reason otherwise."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import signal
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.harness import ServerProcess, clean_env, wait_for
from tests.integration.agents import (
    IMAGE,
    ROOT,
    build_test_image,
    node_ready,
    remove_podman_pods,
    stop_proc,
)
from tests.integration.netns import NetNS, require_netns

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PODS = 3
SETTLE_SECONDS = 5.0  # after the reconnect: time for a second recreation to show, if any
VALUES = {"cfg/key": "from-configmap", "sec/key": "from-secret"}


class EdgeNode:
    """The server, the namespace and the agent process of the module."""

    def __init__(self, srv: ServerProcess, ns: NetNS, tmp: Path) -> None:
        self.srv, self.ns, self.tmp = srv, ns, tmp
        self.name = f"auto-{uuid.uuid4().hex[:6]}"
        self.data = tmp / "agent"
        self.log = tmp / "agent.log"
        self.proc: subprocess.Popen | None = None

    def start_agent(self) -> None:
        with open(self.log, "ab") as f:
            self.proc = self.ns.popen(
                self.srv.agent_command(self.data, self.name,
                                       server=f"https://{self.ns.host_ip}:{self.srv.port}"),
                stdout=f, stderr=subprocess.STDOUT, env=clean_env(), cwd=str(ROOT))

    def kill_agent(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def started_offline(self, since: int) -> None:
        """The agent restarted after byte `since` of its log is running (its pods, broker
        and syncer started), though the server is unreachable."""
        wait_for(lambda: f"k3py agent {self.name} running" in self.log_since(since), 60, 0.2,
                 "the agent to start with its server unreachable\n" + self.tail())
        assert self.proc is not None and self.proc.poll() is None, self.tail()
        assert "tunnel connected" not in self.log_since(since)

    def log_since(self, offset: int) -> str:
        return self.log.read_bytes()[offset:].decode(errors="replace")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def queued_status(self, pod: str) -> dict:
        """The pod's status the agent queued for the server (its own view while offline)."""
        with contextlib.closing(sqlite3.connect(self.data / "agent" / "meta.db")) as db:
            row = db.execute("SELECT body FROM outbox WHERE key=?",
                             (f"pods/default/{pod}/status",)).fetchone()
        return json.loads(row[0])["content"]["status"] if row else {}

    def podman(self, *args: str) -> str:
        """podman inside the node's namespace (netavark tears pod networks down there)."""
        out = self.ns.run(["podman", *args], timeout=120)
        assert out.returncode == 0, f"podman {args}: {out.stderr}"
        return out.stdout

    def pod_ids(self) -> dict[str, str]:
        """podman pod name -> id, for this node's pods."""
        rows = self.podman("pod", "ps", "--format", "{{.Name}} {{.Id}}", "--filter",
                           f"label=io.k3py.node={self.name}").split("\n")
        return dict(r.split() for r in rows if r.strip())

    def containers(self) -> dict[str, tuple[str, str]]:
        """Kubernetes pod name -> (app container id, state), for this node's pods."""
        out = self.podman("ps", "-a", "--format", "json", "--filter",
                          f"label=io.k3py.node={self.name}", "--filter",
                          "label=io.k3py.container")
        return {c["Labels"]["io.k3py.pod-name"]: (c["Id"], c["State"])
                for c in json.loads(out or "[]")}

    def server_view(self) -> dict[str, tuple[str, str, int]]:
        """pod name -> (phase, container id, restartCount) as the API shows them."""
        out = {}
        for p in self.srv.kubectl_json("get", "pods", "-l", f"node={self.name}")["items"]:
            cs = (p["status"].get("containerStatuses") or [{}])[0]
            out[p["metadata"]["name"]] = (p["status"].get("phase"),
                                          (cs.get("containerID") or "").split("//")[-1],
                                          cs.get("restartCount", -1))
        return out

    def reconnected(self, restored: float) -> dict:
        """The Node once it is Ready with a heartbeat sent after the link came back."""
        def fresh() -> dict | None:
            n = node_ready(self.srv, self.name)
            conds = {c["type"]: c for c in (n or {}).get("status", {}).get("conditions", [])}
            beat = conds.get("Ready", {}).get("lastHeartbeatTime", "")
            return n if beat and _epoch(beat) >= int(restored) else None
        try:
            return wait_for(fresh, 60, 0.3, f"node {self.name} Ready after the link returned")
        except TimeoutError as e:
            raise AssertionError(f"{e}\n{self.tail()}") from None


def _epoch(ts: str) -> float:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _pod(name: str, node: str) -> dict:
    mounts = [{"name": "scratch", "mountPath": "/scratch"},
              {"name": "cfg", "mountPath": "/etc/cfg"},
              {"name": "sec", "mountPath": "/etc/sec"}]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"node": node}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                     "volumes": [{"name": "scratch", "emptyDir": {}},
                                 {"name": "cfg", "configMap": {"name": f"{node}-cfg"}},
                                 {"name": "sec", "secret": {"secretName": f"{node}-sec"}}],
                     "containers": [{
                         "name": "c", "image": IMAGE, "imagePullPolicy": "Never",
                         "volumeMounts": mounts,
                         "command": ["sh", "-c", "echo start >> /scratch/starts; "
                                                 "exec sleep 3600"]}]}}


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    require_netns()
    tmp = tmp_path_factory.mktemp("autonomy")
    build_test_image(tmp / "busybox.tar")
    ns = NetNS().create()
    srv = ServerProcess(tmp / "server", extra_args=[
        "--bind-address", "0.0.0.0", "--advertise-address", ns.host_ip])
    node = EdgeNode(srv, ns, tmp)
    try:
        srv.start()
        node.start_agent()
        wait_for(lambda: node_ready(srv, node.name), 60, 0.3, f"node {node.name} Ready")
        srv.kubectl("create", "configmap", f"{node.name}-cfg", "--from-literal",
                    f"key={VALUES['cfg/key']}")
        srv.kubectl("create", "secret", "generic", f"{node.name}-sec", "--from-literal",
                    f"key={VALUES['sec/key']}")
        for i in range(PODS):
            srv.kubectl("apply", "-f", "-", input=json.dumps(_pod(f"{node.name}-{i}",
                                                                   node.name)))
        wait_for(lambda: [v[0] for v in node.server_view().values()] == ["Running"] * PODS,
                 90, 0.3, f"{PODS} pods Running")
        yield node
    finally:
        ns.restore()
        if node.proc is not None and node.proc.poll() is None:
            stop_proc(node.proc)
        srv.stop()
        remove_podman_pods(node.name, ns)
        ns.destroy()


def test_agent_restart_while_offline_adopts_its_pods_and_rejoins(edge: EdgeNode):
    node_before = edge.srv.kubectl_json("get", "node", edge.name)
    creds = {f: (edge.data / "agent" / f).read_bytes()
             for f in ("server-ca.crt", "client-node.crt", "client-node.key")}
    pods_before, running_before = edge.pod_ids(), edge.containers()
    assert [s for _, s in running_before.values()] == ["running"] * PODS

    edge.ns.cut()
    edge.kill_agent()
    offset = edge.log.stat().st_size
    edge.start_agent()
    edge.started_offline(offset)
    # the new agent adopted the pods: it reports them Running with the same containers,
    # queued for the server, and restarted nothing
    def adopted() -> bool:
        for name, (cid, _) in running_before.items():
            st = edge.queued_status(name)
            cs = (st.get("containerStatuses") or [{}])[0]
            if st.get("phase") != "Running" or not cs.get("containerID", "").endswith(cid):
                return False
            assert cs["restartCount"] == 0, st
        return True
    wait_for(adopted, 30, 0.3, "the restarted agent's status of its adopted pods\n"
             + edge.tail())
    assert edge.containers() == running_before
    assert edge.pod_ids() == pods_before

    restored = time.time()
    edge.ns.restore()
    node_after = edge.reconnected(restored)
    assert node_after["metadata"]["uid"] == node_before["metadata"]["uid"]
    assert [n["metadata"]["name"] for n in edge.srv.kubectl_json("get", "nodes")["items"]
            ].count(edge.name) == 1
    for f, data in creds.items():
        assert (edge.data / "agent" / f).read_bytes() == data, f"{f} changed"
    assert edge.containers() == running_before
    assert edge.pod_ids() == pods_before
    assert edge.server_view() == {n: ("Running", cid, 0)
                                  for n, (cid, _) in running_before.items()}


def test_node_reboot_while_offline_recreates_pods_from_the_cache(edge: EdgeNode):
    edge.ns.cut()
    edge.kill_agent()
    old = edge.containers()
    remove_podman_pods(edge.name, edge.ns)  # what a reboot leaves: no pod, no container
    assert edge.pod_ids() == {}
    offset = edge.log.stat().st_size
    edge.start_agent()
    edge.started_offline(offset)

    def recreated() -> dict[str, tuple[str, str]] | None:
        now = edge.containers()
        if len(now) == PODS and all(s == "running" and cid != old[n][0]
                                    for n, (cid, s) in now.items()):
            return now
        return None
    try:
        running = wait_for(recreated, 90, 0.3, f"{PODS} pods recreated offline")
    except TimeoutError as e:
        raise AssertionError(f"{e}: {edge.containers()}\n{edge.tail()}") from None
    for name, (cid, _) in running.items():
        wait_for(lambda n=name, c=cid: edge.queued_status(n).get("phase") == "Running" and
                 edge.queued_status(n)["containerStatuses"][0]["containerID"].endswith(c),
                 30, 0.3, f"the agent's Running status of {name}")
        files = {rel: edge.podman("exec", cid, "cat", f"/etc/{rel}") for rel in VALUES}
        assert files == VALUES
        token = edge.podman("exec", cid, "cat",
                            "/var/run/secrets/kubernetes.io/serviceaccount/token")
        assert token.count(".") == 2, token  # a JWT, from the cached podtokens
        # the emptyDir is the one the pod had before the reboot
        assert edge.podman("exec", cid, "cat", "/scratch/starts").split() == ["start"] * 2
    pods_offline = edge.pod_ids()

    restored = time.time()
    edge.ns.restore()
    edge.reconnected(restored)
    want = {n: ("Running", cid) for n, (cid, _) in running.items()}
    wait_for(lambda: {n: v[:2] for n, v in edge.server_view().items()} == want, 30, 0.3,
             "the server's view of the recreated pods")
    # the down direction flowed since the reconnect: a new pod starts; then nothing of the
    # old ones was recreated, also a while later
    probe = f"{edge.name}-after"
    edge.srv.kubectl("apply", "-f", "-", input=json.dumps(_pod(probe, edge.name)))
    wait_for(lambda: edge.server_view().get(probe, ("",))[0] == "Running", 60, 0.3,
             f"{probe} Running")
    time.sleep(SETTLE_SECONDS)  # a deliberate settling period, not a wait for a condition
    assert {n: v for n, v in edge.containers().items() if n != probe} == running
    assert {k: v for k, v in edge.pod_ids().items() if probe not in k} == pods_offline
