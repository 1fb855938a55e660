"""The agent drives podman through its libpod REST API: a real `k3py agent` with no system
service around starts its own `podman system service` on <data-dir>/agent/podman.sock, gets
a new one when that service is killed, stops it when the agent stops, reuses it after an
agent kill -9 (and replaces that one too when it dies), and uses a given --container-runtime-endpoint instead of starting one; a
socket that does not answer is one error line and exit 1.

Real server (tests/harness.py), real agents, real podman; only this test's pods and the
services it started are removed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.harness import ServerProcess, clean_env, wait_for
from tests.integration.agents import build_test_image, podman_pods, remove_podman_pods

pytestmark = pytest.mark.integration


def _children_services(pid: int) -> list[int]:
    """`podman system service` processes that are children of `pid`."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                cmd = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"system" in cmd and b"service" in cmd:
                out.append(int(child))
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def _service_on(sock: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"system service.*unix://{sock}$"],
                         capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


class Agent:
    def __init__(self, srv: ServerProcess, data: Path, node: str, *extra: str) -> None:
        self.srv, self.data, self.node, self.extra = srv, data, node, extra
        self.proc: subprocess.Popen | None = None

    @property
    def log(self) -> Path:
        return self.data.parent / f"{self.data.name}.log"

    def start(self) -> subprocess.Popen:
        log = open(self.log, "ab")
        self._log_from = log.tell()  # this start's own lines come after this offset
        self.proc = subprocess.Popen(
            self.srv.agent_command(self.data, self.node, *self.extra), stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, env=clean_env())
        log.close()
        return self.proc

    def ready(self) -> bool:
        """Ready, and through this process's own tunnel: after a restart the Node stays
        Ready from the previous process's heartbeats for up to 40 s."""
        with open(self.log, "rb") as f:
            f.seek(self._log_from)
            if b"tunnel connected" not in f.read():
                return False
        out = self.srv.kubectl("get", "node", self.node, "-o", "json", check=False)
        if out.returncode != 0 or (self.proc and self.proc.poll() is not None):
            return False
        conds = {c["type"]: c["status"]
                 for c in json.loads(out.stdout)["status"].get("conditions", [])}
        return conds.get("Ready") == "True"

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(30)


def _pod(name: str, node: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                       "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                                "containers": [{
                                    "name": "c", "image": "k3py.local/busybox:latest",
                                    "imagePullPolicy": "Never",
                                    "command": ["sh", "-c", "trap 'exit 0' TERM; "
                                                "while true; do sleep 1; done"]}]}})


def _running(srv: ServerProcess, name: str) -> dict | None:
    out = srv.kubectl("get", "pod", name, "-o", "json", check=False)
    if out.returncode != 0:
        return None
    pod = json.loads(out.stdout)
    st = (pod["status"].get("containerStatuses") or [{}])[0]
    return pod if pod["status"].get("phase") == "Running" and st.get("ready") else None


def _container_ids(srv: ServerProcess, *names: str) -> dict:
    return {n: srv.kubectl_json("get", "pod", n)["status"]["containerStatuses"][0]["containerID"]
            for n in names}


@pytest.fixture
def image(tmp_path):
    build_test_image(tmp_path / "busybox.tar")


def test_own_service_started_revived_stopped_and_reused(server, tmp_path, image):
    node = f"api-{uuid.uuid4().hex[:6]}"
    data = tmp_path / "agent"
    sock = data / "agent" / "podman.sock"
    agent = Agent(server, data, node)
    leftovers: set[int] = set()
    try:
        proc = agent.start()
        wait_for(agent.ready, 60, 0.3, f"node {node} Ready")
        # no system service on this host: the agent runs its own, on its data dir
        services = wait_for(lambda: _children_services(proc.pid), 10, 0.2, "its service")
        assert len(services) == 1 and sock.is_socket()
        first = services[0]
        leftovers.add(first)
        server.kubectl("apply", "-f", "-", input=_pod("api-a", node))
        wait_for(lambda: _running(server, "api-a"), 60, 0.3, "api-a Running")

        # the service is killed: pods keep running, the agent starts a new service when
        # it next needs podman, and new pods start
        os.kill(first, signal.SIGKILL)
        server.kubectl("apply", "-f", "-", input=_pod("api-b", node))
        wait_for(lambda: _running(server, "api-b"), 60, 0.3, "api-b Running after a revive")
        second = _children_services(proc.pid)
        assert len(second) == 1 and second[0] != first
        leftovers.add(second[0])
        assert _running(server, "api-a")["status"]["containerStatuses"][0]["restartCount"] == 0
        ids = _container_ids(server, "api-a", "api-b")

        # a clean stop takes the agent's own service down with it
        assert agent.stop() == 0
        wait_for(lambda: not _alive(second[0]), 15, 0.2, "the agent's service stopped")

        # started again: a new service; kill -9: the orphan keeps serving the socket (and
        # exits by itself a minute after its last client), so the restarted agent reuses it
        proc = agent.start()
        wait_for(agent.ready, 60, 0.3, f"node {node} Ready again")
        third = wait_for(lambda: _children_services(proc.pid), 10, 0.2, "a new service")
        leftovers.update(third)
        agent.stop(signal.SIGKILL)
        assert _alive(third[0])
        proc = agent.start()
        wait_for(agent.ready, 60, 0.3, f"node {node} Ready after kill -9")
        assert _children_services(proc.pid) == [] and _service_on(sock) == third
        # the pods were adopted every time: same containers, none duplicated
        assert _container_ids(server, "api-a", "api-b") == ids
        assert sorted(podman_pods(node)) == sorted(
            f"default_{n}_{server.kubectl_json('get', 'pod', n)['metadata']['uid'][:8]}"
            for n in ("api-a", "api-b"))
        # the reused service dies too: the agent starts one of its own again
        os.kill(third[0], signal.SIGKILL)
        server.kubectl("delete", "pod", "api-b", timeout=60)
        assert len(podman_pods(node)) == 1
        fourth = wait_for(lambda: _children_services(proc.pid), 10, 0.2, "a service again")
        leftovers.update(fourth)
        assert _running(server, "api-a")
    finally:
        if agent.proc is not None:
            agent.stop()
        for pid in leftovers | set(_service_on(sock)):
            if _alive(pid):
                os.kill(pid, signal.SIGTERM)
        remove_podman_pods(node)
        server.kubectl("delete", "pod", "api-a", "api-b", "--wait=false",
                       "--ignore-not-found", check=False)


def test_given_endpoint_is_used_and_a_dead_one_is_one_line(server, tmp_path, image):
    node = f"apx-{uuid.uuid4().hex[:6]}"
    sock = tmp_path / "svc" / "podman.sock"
    sock.parent.mkdir()
    # a service of the user's own, as `systemctl enable --now podman.socket` gives
    svc = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    agent = Agent(server, tmp_path / "agent", node,
                  "--container-runtime-endpoint", f"unix://{sock}")
    try:
        wait_for(sock.is_socket, 15, 0.1, "the user's podman service")
        proc = agent.start()
        wait_for(agent.ready, 60, 0.3, f"node {node} Ready")
        server.kubectl("apply", "-f", "-", input=_pod("apx", node))
        wait_for(lambda: _running(server, "apx"), 60, 0.3, "apx Running")
        assert _children_services(proc.pid) == []  # it used the given socket
        assert not (tmp_path / "agent" / "agent" / "podman.sock").exists()
        server.kubectl("delete", "pod", "apx", timeout=60)
        assert agent.stop() == 0
        assert svc.poll() is None  # not the agent's to stop
    finally:
        if agent.proc is not None:
            agent.stop()
        svc.terminate()
        svc.wait(15)
        remove_podman_pods(node)

    # a socket nobody serves: one line, exit 1, no hang
    out = subprocess.run(
        server.agent_command(tmp_path / "agent2", node + "-x", "--container-runtime-endpoint",
                             f"unix://{tmp_path}/nobody.sock"),
        capture_output=True, text=True, timeout=60, env=clean_env())
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not answer" in lines[0], out.stderr
    # and a value that is not a unix socket URL is refused by the flag parser
    out = subprocess.run([sys.executable, "-m", "k3py", "agent", "--server", server.url,
                          "--token", "x", "--container-runtime-endpoint", "/run/x.sock"],
                         capture_output=True, text=True, timeout=60, env=clean_env())
    assert out.returncode != 0 and "unix:///" in out.stderr
