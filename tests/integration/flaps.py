"""A node whose link flaps while its pods churn, shared by tests/integration/test_autonomy_flaps.py
and bench/autonomy_flaps.py: a real server and a real `k3py agent` in a network namespace
(netns.py), each started through TASKS_HOOK so that SIGUSR2 makes it write its live asyncio
tasks; what each process holds (RSS, fds, TCP sockets, tasks) is read from outside.

One flap: cut the link for 1-5 s; meanwhile create a running pod and a probe pod on the node
and delete older ones through kubectl; restore; wait until the probe's status came back up
through the tunnel. `converge` waits until the server's pods of the node, podman's pods of
the node and `k3py agent pods -o json` (the node's own view) agree, with nothing queued."""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from k3py.agent.pods.workers import IDLE_SECONDS
from tests.harness import ServerProcess, clean_env, rss_kib, wait_for
from tests.integration.agents import IMAGE, build_test_image
from tests.integration.netns import NetNS

__all__ = ["ROOT", "FlapRig", "Usage", "TASKS_HOOK"]

ROOT = Path(__file__).resolve().parents[2]
RECOVER_SECONDS = 30.0  # bound on a probe's round trip after the link returns
CONVERGE_SECONDS = 90.0
KEEP_CHURN = 2  # running churn pods alive at once
STREAM_TASK = "EdgeHub._stream.<locals>.run"  # the agent's task per open stream

# `python -c TASKS_HOOK <file> <k3py args...>`: k3py with a SIGUSR2 handler that writes to
# <file> {"tasks": {coroutine name: count} of the live asyncio tasks, "objects": {type name:
# count} of what the garbage collector tracks, "sqlite": bytes SQLite holds (its page caches)}
# (the handler runs on the main thread, where the loop runs, between two bytecodes).
TASKS_HOOK = r"""
import asyncio, collections, gc, json, os, signal, sys
out = sys.argv[1]
def dump(*_):
    try:
        names = collections.Counter(getattr(t.get_coro(), "__qualname__", "?")
                                    for t in asyncio.all_tasks())
    except RuntimeError as e:
        names = {"<error>": str(e)}
    objects = collections.Counter(type(o).__name__ for o in gc.get_objects())
    apsw = sys.modules.get("apsw")
    sqlite = apsw.status(apsw.SQLITE_STATUS_MEMORY_USED)[0] if apsw else 0
    with open(out + ".tmp", "w") as f:
        json.dump({"tasks": names, "objects": objects, "sqlite": sqlite}, f)
    os.replace(out + ".tmp", out)
signal.signal(signal.SIGUSR2, dump)
from k3py.cli import main
sys.exit(main(sys.argv[2:]))
"""


@dataclass(frozen=True)
class Usage:
    """What one process holds at a moment."""

    rss_mb: float
    fds: int
    tcp: int  # TCP sockets (any state) that belong to the process, per `ss`
    tasks: dict[str, int]
    objects: dict[str, int]  # objects the garbage collector tracks, by type name
    sqlite_mb: float  # memory SQLite holds in the process (page caches, statements)

    @property
    def task_count(self) -> int:
        return sum(self.tasks.values())

    def grown(self, before: Usage, field: str = "tasks") -> dict[str, tuple[int, int]]:
        """(before, after) of each task or object name there are more of than `before`."""
        was, now = getattr(before, field), getattr(self, field)
        return {n: (was.get(n, 0), c) for n, c in now.items() if c > was.get(n, 0)}


def _hooked(cmd: list[str], tasks_file: Path) -> list[str]:
    assert cmd[:3] == [sys.executable, "-m", "k3py"], cmd
    return [sys.executable, "-c", TASKS_HOOK, str(tasks_file), *cmd[3:]]


class _HookedServer(ServerProcess):
    tasks_file = Path()

    def command(self) -> list[str]:
        return _hooked(super().command(), self.tasks_file)


def _dump(pid: int, path: Path) -> dict[str, dict[str, int]]:
    path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR2)
    wait_for(path.exists, 10, 0.05, f"the task dump of pid {pid}")
    return json.loads(path.read_text())


def _tasks(pid: int, path: Path) -> dict[str, int]:
    return _dump(pid, path)["tasks"]


def _usage(pid: int, dump: Path, ss: list[str]) -> Usage:
    d = _dump(pid, dump)
    return Usage(rss_kib(pid) / 1024, len(os.listdir(f"/proc/{pid}/fd")), _tcp(pid, ss), d["tasks"],
                 d["objects"], d["sqlite"] / 2**20)


def _tcp(pid: int, ss: list[str]) -> int:
    out = subprocess.run(ss, capture_output=True, text=True, timeout=20, check=True).stdout
    return sum(f"pid={pid}," in line for line in out.splitlines())


def _epoch(line: str) -> float | None:
    with contextlib.suppress(ValueError):
        return dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


class FlapRig:
    """Server + agent in `ns`; `start()`, then `flap()`s, `converge()`, `usage()`; `close()`."""

    def __init__(self, tmp: Path, ns: NetNS, *, seed: int = 0,
                 server_args: tuple[str, ...] = ()) -> None:
        self.tmp, self.ns = tmp, ns
        self.rng = random.Random(seed)
        self.node = f"flap-{ns.id[:6]}"
        self.srv = _HookedServer(tmp / "server", env={"PYTHONPATH": str(ROOT)}, extra_args=[
            "--bind-address", "0.0.0.0", "--advertise-address", ns.host_ip, *server_args])
        self.srv.tasks_file = tmp / "server-tasks.json"
        self.agent_dir = tmp / "agent"
        self.agent_log = tmp / "agent.log"
        self.agent_tasks_file = tmp / "agent-tasks.json"
        self.agent: subprocess.Popen | None = None
        self.churn: collections.deque[str] = collections.deque()
        self.flaps = 0
        self.recoveries: list[float] = []   # link back -> a probe's status back up (s)
        self.reconnects: list[float] = []   # link back -> "tunnel connected" (s), if redialled

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        build_test_image(self.tmp / "busybox.tar")
        self.srv.start()
        cmd = self.srv.agent_command(self.agent_dir, self.node,
                                     server=f"https://{self.ns.host_ip}:{self.srv.port}")
        with open(self.agent_log, "ab") as log:
            self.agent = self.ns.popen(_hooked(cmd, self.agent_tasks_file), stdout=log,
                                       stderr=subprocess.STDOUT, cwd=str(ROOT),
                                       env={**clean_env(), "PYTHONPATH": str(ROOT)})
        try:
            wait_for(self._node_ready, 60, 0.3, f"node {self.node} Ready")
        except TimeoutError as e:
            raise AssertionError(f"{e}\n{self.logs()}") from None
        self.create_pod("steady")

    def close(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.terminate()
            try:
                self.agent.wait(15)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait()
        self.srv.stop()
        # inside the agent's namespace, where its pods' bridge is: netavark tears their
        # network down there (the IPAM database is shared by the whole host)
        out = self.ns.run(["podman", "pod", "ps", "-q", "--filter",
                           f"label=io.k3py.node={self.node}"])
        for pod_id in out.stdout.split():
            self.ns.run(["podman", "pod", "rm", "-f", "-t", "0", pod_id], timeout=60)

    def _node_ready(self) -> bool:
        node = self.srv.kubectl_json("get", "node", self.node)
        return any(c["type"] == "Ready" and c["status"] == "True"
                   for c in node["status"].get("conditions", []))

    def logs(self) -> str:
        return "\n".join(["--- server log (tail)",
                          self.srv.log_path.read_text(errors="replace")[-3000:],
                          "--- agent log (tail)",
                          self.agent_log.read_text(errors="replace")[-3000:]])

    # ---------------------------------------------------------------- pods

    def create_pod(self, name: str, *, probe: bool = False) -> None:
        """A busybox pod on the node, or (`probe`) one whose image is absent with pull policy
        Never: its status (ErrImageNeverPull) comes up without podman running anything."""
        image = "k3py.test/absent-on-purpose:never" if probe else IMAGE
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "labels": {"k3py-test": "flaps"}},
               "spec": {"nodeName": self.node, "terminationGracePeriodSeconds": 1,
                        "containers": [{"name": "c", "image": image,
                                        "imagePullPolicy": "Never",
                                        "command": ["sleep", "3600"]}]}}
        self.srv.kubectl("apply", "-f", "-", input=json.dumps(pod))

    def delete_pods(self, *names: str) -> None:
        if names:
            self.srv.kubectl("delete", "pod", "--wait=false", "--ignore-not-found", *names)

    def probe_answered(self, name: str) -> bool:
        pod = self.srv.kubectl_json("get", "pod", name)
        return any((cs.get("state", {}).get("waiting") or {}).get("reason") ==
                   "ErrImageNeverPull"
                   for cs in pod.get("status", {}).get("containerStatuses") or [])

    def clear_churn(self) -> None:
        """Delete every churn and probe pod: the node is left with `steady` only."""
        out = self.srv.kubectl("get", "pods", "-l", "k3py-test=flaps", "-o", "name")
        names = [n.split("/", 1)[1] for n in out.stdout.split()]
        self.delete_pods(*[n for n in names if n != "steady"])
        self.churn.clear()

    # ---------------------------------------------------------------- flapping

    def flap(self) -> float:
        """One cut of 1-5 s with pod churn during it; returns the seconds from the link's
        return to the probe's status coming back up."""
        i = self.flaps = self.flaps + 1
        cut_for = self.rng.uniform(1.0, 5.0)
        self.ns.cut()
        cut_at = time.monotonic()
        try:
            self.create_pod(f"churn-{i}")
            self.churn.append(f"churn-{i}")
            self.create_pod(f"probe-{i}", probe=True)
            old = [self.churn.popleft() for _ in range(max(0, len(self.churn) - KEEP_CHURN))]
            self.delete_pods(*old, f"probe-{i - 1}")
            time.sleep(max(0.0, cut_for - (time.monotonic() - cut_at)))
        finally:
            self.ns.restore()
        back, back_wall = time.monotonic(), time.time()
        assert self.agent is not None and self.agent.poll() is None, self.logs()
        while not self.probe_answered(f"probe-{i}"):
            if time.monotonic() - back > RECOVER_SECONDS:
                raise AssertionError(f"flap {i} (cut {cut_for:.1f}s): the probe's status did "
                                     f"not come back within {RECOVER_SECONDS:g}s of the link"
                                     f"\n{self.logs()}")
            time.sleep(0.1)
        took = time.monotonic() - back
        self.recoveries.append(took)
        redialled = self._connected_since(back_wall)
        if redialled is not None:
            self.reconnects.append(redialled - back_wall)
        time.sleep(self.rng.uniform(0.0, 1.0))  # the link stays up a little
        return took

    def _connected_since(self, since: float) -> float | None:
        for line in self.agent_log.read_text(errors="replace").splitlines():
            if "tunnel connected" in line and (at := _epoch(line)) is not None and at >= since:
                return at
        return None

    # ---------------------------------------------------------------- views

    def server_view(self) -> dict[str, dict]:
        pods = self.srv.kubectl_json("get", "pods", "-A", "--field-selector",
                                     f"spec.nodeName={self.node}")["items"]
        return {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in pods}

    def podman_view(self) -> dict[str, str]:
        """uid -> podman pod status, of the node's podman pods."""
        out = subprocess.run(["podman", "pod", "ps", "--format", "json", "--filter",
                              f"label=io.k3py.node={self.node}"], capture_output=True,
                             text=True, timeout=30, check=True).stdout
        return {p["Labels"]["io.k3py.pod-uid"]: p["Status"] for p in json.loads(out or "[]")}

    def local_view(self) -> dict:
        """`k3py agent pods -o json` on the node's data dir."""
        out = subprocess.run([sys.executable, "-m", "k3py", "agent", "pods", "--data-dir",
                              str(self.agent_dir), "-o", "json"], capture_output=True,
                             text=True, timeout=60, cwd=str(ROOT),
                             env={**clean_env(), "PYTHONPATH": str(ROOT)})
        assert out.returncode == 0, f"k3py agent pods failed: {out.stderr}"
        return json.loads(out.stdout)

    def differences(self) -> list[str]:
        """What still differs between the server's view, podman's and the node's own."""
        server, podman, local = self.server_view(), self.podman_view(), self.local_view()
        diffs = []
        server_uids = {p["metadata"]["uid"]: k for k, p in server.items()}
        if set(server_uids) != set(podman):
            diffs.append(f"server pods {sorted(server)} vs podman uids {sorted(podman)}")
        by_key = {f"{r['namespace']}/{r['name']}": r for r in local["pods"]}
        if set(by_key) != set(server):
            diffs.append(f"server pods {sorted(server)} vs the node's {sorted(by_key)}")
        if local["outbox"]:
            diffs.append(f"{local['outbox']} message(s) still queued on the node")
        for key, pod in server.items():
            if pod["metadata"].get("deletionTimestamp"):
                diffs.append(f"{key}: still Terminating on the server")
                continue
            row = by_key.get(key)
            st = pod.get("status") or {}
            cs = (st.get("containerStatuses") or [{}])[0]
            want = "ErrImageNeverPull" if key.split("/")[1].startswith("probe-") else "Running"
            seen = (cs.get("state", {}).get("waiting") or {}).get("reason") or st.get("phase")
            if seen != want:
                diffs.append(f"{key}: {seen} on the server, want {want}")
            if row is None:
                continue
            mine = (row["uid"], row["phase"], row["ready"], row["restarts"], row["ip"])
            theirs = (pod["metadata"]["uid"], st.get("phase"),
                      f"{sum(bool(c.get('ready')) for c in st.get('containerStatuses') or [])}"
                      f"/{len(pod['spec']['containers'])}",
                      sum(c.get("restartCount", 0) for c in st.get("containerStatuses") or []),
                      st.get("podIP") or "")
            if mine != theirs:
                diffs.append(f"{key}: node {mine} vs server {theirs}")
        return diffs

    def converge(self, timeout: float = CONVERGE_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        diffs: list[str] = []
        while time.monotonic() < deadline:
            diffs = self.differences()
            if not diffs:
                return
            time.sleep(0.5)
        raise AssertionError(f"the server's view and the node's still differ after "
                             f"{timeout:g}s: {diffs}\n{self.logs()}")

    # ---------------------------------------------------------------- what they hold

    def usage(self) -> dict[str, Usage]:
        """What each process holds once the node is quiet: measured after the agent's pod
        workers of the deleted pods ended (a worker ends after IDLE_SECONDS without a job)."""
        assert self.agent is not None and self.srv.proc is not None
        agent, server = self.agent.pid, self.srv.proc.pid
        wait_for(lambda: not _tasks(agent, self.agent_tasks_file).get("PodWorkers._work"),
                 IDLE_SECONDS * 3, 1.0, "the agent's idle pod workers to end")
        return {"agent": _usage(agent, self.agent_tasks_file, self.ns.command(["ss", "-tanp"])),
                "server": _usage(server, self.srv.tasks_file, ["ss", "-tanp"])}

    def agent_tasks(self) -> dict[str, int]:
        assert self.agent is not None
        return _tasks(self.agent.pid, self.agent_tasks_file)

    def agent_streams(self) -> int:
        """The agent's tasks serving a stream (logs, exec, attach, port-forward)."""
        return self.agent_tasks().get(STREAM_TASK, 0)

    def steady_container(self) -> tuple[str, int]:
        """(containerID, restartCount) of the `steady` pod, as the server has them."""
        cs = self.srv.kubectl_json("get", "pod", "steady")["status"]["containerStatuses"][0]
        return cs.get("containerID", ""), cs.get("restartCount", 0)
