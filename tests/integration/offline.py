"""A node that goes offline, for the autonomy test and bench/autonomy.py: a real server on the
host and one real `k3py agent` in a network namespace joined over its veth link, which
`cut()` / `restore()` take down and up.

The node's view of its pods is read where the node keeps it (podman's containers, the
agent's restart counts in <data-dir>/agent/pods/<uid>/state.json, its outbox in meta.db); the
server's view is `kubectl get pods`. `differences()` says where the two disagree."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from tests.harness import ServerProcess, clean_env, wait_for
from tests.integration.agents import ROOT
from tests.integration.netns import NetNS

__all__ = ["OfflineNode", "ContainerView"]



class ContainerView(NamedTuple):
    """One container as a view holds it; `ready` is None where the view cannot tell."""

    id: str            # podman's container id (a restart starts the same container again)
    running: bool
    started: int       # when its current run started, epoch seconds
    restarts: int
    ready: bool | None

    def same(self, other: ContainerView) -> bool:
        """Equal, readiness compared only where both views tell it."""
        return self[:4] == other[:4] and (self.ready is None or other.ready is None or
                                         self.ready == other.ready)


def _epoch(ts: str | None) -> int:
    if not ts:
        return 0
    return int(dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp())


class OfflineNode:
    def __init__(self, ns: NetNS, tmp: Path, name: str) -> None:
        self.ns = ns
        self.node = name
        self.tmp = tmp
        self.srv = ServerProcess(tmp / "server", extra_args=[
            "--bind-address", "0.0.0.0", "--advertise-address", ns.host_ip])
        self.agent_dir = tmp / "agent"
        self.log = tmp / "agent.log"
        self.proc: subprocess.Popen | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 60.0) -> None:
        self.srv.start()
        with open(self.log, "ab") as f:
            self.proc = self.ns.popen(
                self.srv.agent_command(self.agent_dir, self.node,
                                       server=f"https://{self.ns.host_ip}:{self.srv.port}"),
                stdout=f, stderr=subprocess.STDOUT, env=clean_env(), cwd=str(ROOT))
        wait_for(self.ready, timeout, 0.3, f"node {self.node} Ready" + self.logs())

    def stop(self) -> None:
        """The agent (its pods stay), the server, then the node's podman pods: inside the
        namespace, where their bridge is, so that netavark tears their network down."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.srv.stop()
        out = self.ns.run(["podman", "pod", "ps", "-q", "--filter",
                           f"label=io.k3py.node={self.node}"], timeout=60)
        if out.stdout.split():
            self.ns.run(["podman", "pod", "rm", "-f", "-t", "0", *out.stdout.split()],
                        timeout=300)

    def cut(self) -> None:
        self.ns.cut()

    def restore(self) -> None:
        self.ns.restore()

    def log_marks(self) -> tuple[int, int]:
        """Where the server's and the agent's logs end now (for tunnel_lost)."""
        return self.srv.log_path.stat().st_size, self.log.stat().st_size

    def tunnel_lost(self, marks: tuple[int, int]) -> bool:
        """Both ends logged the loss of the node's tunnel after `marks`."""
        server = self.srv.log_path.read_bytes()[marks[0]:]
        agent = self.log.read_bytes()[marks[1]:]
        return f"node {self.node} disconnected".encode() in server and \
            b"lost; reconnecting" in agent

    def logs(self) -> str:
        out = ["", "--- server log (tail)", self.srv.log_path.read_text(errors="replace")[-3000:]]
        if self.log.exists():
            out += ["--- agent log (tail)", self.log.read_text(errors="replace")[-4000:]]
        return "\n".join(out)

    def ready(self) -> bool:
        node = self.srv.kubectl_json("get", "node", self.node)
        return any(c["type"] == "Ready" and c["status"] == "True"
                   for c in node.get("status", {}).get("conditions", []))

    # ------------------------------------------------------------------ the two views

    def podman(self, *args: str, timeout: float = 120.0) -> str:
        out = subprocess.run(["podman", *args], capture_output=True, text=True,
                             timeout=timeout)
        assert out.returncode == 0, f"podman {' '.join(args)}: {out.stderr.strip()}"
        return out.stdout

    def containers(self) -> list[dict]:
        """The node's podman containers (not the infra ones), as `podman ps -a` lists them."""
        return [c for c in json.loads(self.podman(
            "ps", "-a", "--format", "json", "--filter", f"label=io.k3py.node={self.node}")
            or "[]") if not c.get("IsInfra") and c.get("Labels", {}).get("io.k3py.container")]

    def restarts(self, uid: str) -> dict[str, int]:
        path = self.agent_dir / "agent" / "pods" / uid / "state.json"
        try:
            saved = json.loads(path.read_text()).get("containers") or {}
        except (OSError, ValueError):
            return {}
        return {n: int(s.get("restarts") or 0) for n, s in saved.items()}

    def node_view(self, ready: dict[str, bool] | None = None
                  ) -> dict[str, dict[str, ContainerView]]:
        """pod name -> container name -> its running podman container (the newest when a
        restarted one is still listed), restart count, and readiness as `ready` (pod name ->
        expected readiness) says, else None."""
        view: dict[str, dict[str, ContainerView]] = {}
        for c in sorted(self.containers(),  # the running one, else the newest, last
                        key=lambda c: (c.get("State") == "running", str(c.get("Created")))):
            labels = c["Labels"]
            if labels.get("io.k3py.pod-namespace", "default") != "default":
                continue
            pod, name = labels["io.k3py.pod-name"], labels["io.k3py.container"]
            running = c.get("State") == "running"
            count = self.restarts(labels["io.k3py.pod-uid"]).get(name, 0)
            want = None if ready is None else ready.get(pod, True) and running
            view.setdefault(pod, {})[name] = ContainerView(
                c["Id"], running, int(c.get("StartedAt") or 0) if running else 0, count, want)
        return view

    def server_view(self) -> dict[str, dict[str, ContainerView]]:
        view: dict[str, dict[str, ContainerView]] = {}
        for p in self.srv.kubectl_json("get", "pods", "-n", "default")["items"]:
            if p["spec"].get("nodeName") != self.node:
                continue
            view[p["metadata"]["name"]] = {
                s["name"]: ContainerView(
                    s.get("containerID", "").removeprefix("podman://"),
                    "running" in s.get("state", {}),
                    _epoch((s.get("state", {}).get("running") or {}).get("startedAt")),
                    int(s.get("restartCount") or 0), bool(s.get("ready")))
                for s in p.get("status", {}).get("containerStatuses") or []}
        return view

    def differences(self, ready: dict[str, bool] | None = None, *,
                    node_view: dict[str, dict[str, ContainerView]] | None = None) -> list[str]:
        """Where the server's view of the node's pods differs from the node's (empty: equal):
        `node_view` when given (read earlier), else read now. Readiness is compared only where
        `ready` is given."""
        node = node_view if node_view is not None else self.node_view(ready)
        server = self.server_view()
        out = []
        for pod in sorted(set(node) | set(server)):
            if pod not in server:
                out.append(f"{pod}: on the node, not on the server")
                continue
            if pod not in node:
                out.append(f"{pod}: on the server, not on the node")
                continue
            for name in sorted(set(node[pod]) | set(server[pod])):
                n, s = node[pod].get(name), server[pod].get(name)
                if n is None or s is None or not n.same(s):
                    out.append(f"{pod}/{name}: node {n}, server {s}")
        return out

    @contextlib.contextmanager
    def meta(self) -> Iterator[sqlite3.Connection]:
        """The agent's meta.db, read-only, while the agent runs (WAL: readers do not block)."""
        db = sqlite3.connect(f"file:{self.agent_dir / 'agent' / 'meta.db'}?mode=ro", uri=True,
                             timeout=10)
        try:
            yield db
        finally:
            db.close()

    def outbox(self) -> tuple[int, int, int]:
        """(messages, of which Events, bytes) queued in the agent's outbox."""
        with self.meta() as db:
            n, size = db.execute("SELECT count(*), coalesce(sum(length(body)), 0) "
                                 "FROM outbox").fetchone()
            (events,) = db.execute("SELECT count(*) FROM outbox WHERE key LIKE 'events/%'"
                                   ).fetchone()
        return n, events, size

    def queued_status(self, pod: str) -> dict:
        """The pod's status as queued in the outbox (its key keeps one: the newest), or {}."""
        with self.meta() as db:
            row = db.execute("SELECT body FROM outbox WHERE key = ?",
                             (f"pods/default/{pod}/status",)).fetchone()
        return json.loads(row[0])["content"]["status"] if row else {}

    def cached_pod(self, name: str) -> dict | None:
        """The pod as the agent's cache holds it."""
        with self.meta() as db:
            row = db.execute("SELECT body FROM objects WHERE kind='pods' AND namespace='default'"
                             " AND name=?", (name,)).fetchone()
        return json.loads(row[0]) if row else None

    def events(self) -> dict[tuple[str, str], list[int]]:
        """(involved object name, reason) -> the counts of the Events about it, one per Event
        object (a repeat aggregated by the agent is one object with a higher count)."""
        out: dict[tuple[str, str], list[int]] = {}
        for e in self.srv.kubectl_json("get", "events", "-A")["items"]:
            if (e.get("source") or {}).get("host") != self.node:
                continue
            key = (e["involvedObject"].get("name", ""), e.get("reason", ""))
            out.setdefault(key, []).append(int(e.get("count") or 1))
        return {k: sorted(v) for k, v in out.items()}
