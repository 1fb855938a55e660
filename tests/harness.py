"""Test harness: start real `k3py server` processes on free ports with temporary data dirs,
and drive them with the real kubectl and the official kubernetes Python client.

Every process started here is torn down by its owner (fixtures call stop() in finally)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

__all__ = ["free_port", "ServerProcess", "wait_for", "KUBECTL", "kubectl_builds", "clean_env",
           "node_port_args",
           "NODE_MONITOR_GRACE", "NODE_MONITOR_PERIOD", "NODE_MONITOR_ARGS"]

KUBECTL = os.environ.get("K3PY_TEST_KUBECTL", "kubectl")
# where scripts/setup.sh keeps older kubectl builds, as kubectl.1.NN
KUBECTL_CACHE = Path(os.environ.get("K3PY_TEST_KUBECTL_CACHE", "/var/cache/k3py-test/kubectl"))
_KUBECTL_BUILD = re.compile(r"kubectl\.1\.(\d+)")


def kubectl_builds() -> dict[str, str]:
    """Every kubectl build to test, by label: KUBECTL as "path", then the `kubectl.1.NN` files
    (label "1.NN") beside the last `kubectl` on PATH or its symlink's target (a machine image's
    own older builds, e.g. /usr/lib/google-cloud-sdk/bin/kubectl.1.27) and in
    KUBECTL_CACHE (scripts/setup.sh), oldest first; one entry per distinct binary."""
    builds: dict[str, str] = {}
    seen: set[str] = set()

    def add(label: str, path: str | None) -> None:
        if path and os.path.realpath(path) not in seen:
            seen.add(os.path.realpath(path))
            builds[label] = path
    add("path", shutil.which(KUBECTL))
    on_path = [Path(d) / "kubectl" for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    last = [p for p in on_path if p.is_file() and os.access(p, os.X_OK)][-1:]
    folders = [d for p in last for d in (p.parent, Path(os.path.realpath(p)).parent)]
    found: dict[int, str] = {}
    for folder in folders + [KUBECTL_CACHE]:
        for f in folder.glob("kubectl.1.*") if folder.is_dir() else ():
            m = _KUBECTL_BUILD.fullmatch(f.name)
            if m and os.access(f, os.X_OK):
                found.setdefault(int(m.group(1)), str(f))
    for minor in sorted(found):
        add(f"1.{minor}", found[minor])
    return builds

# Server args for tests that wait for a silent node to turn Unknown: 20 s of grace instead of
# 40 (still two of the agents' 10 s lease renewals), checked every second instead of every 5.
NODE_MONITOR_GRACE = 20.0
NODE_MONITOR_PERIOD = 1.0
NODE_MONITOR_ARGS = ["--kube-controller-manager-arg",
                     f"node-monitor-grace-period={NODE_MONITOR_GRACE:g}s",
                     "--kube-controller-manager-arg",
                     f"node-monitor-period={NODE_MONITOR_PERIOD:g}s"]


_HANDED_OUT: set[int] = set()


def _port_range() -> range:
    """This test process's own slice of 10000-32767: below the kernel's ephemeral range (so no
    client socket or bind(0) elsewhere takes it) and disjoint between pytest-xdist workers."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    span = (32768 - 10000) // count
    return range(10000 + index * span, 10000 + (index + 1) * span)


def free_port() -> int:
    """A port nothing listens on and that this process never handed out before: bind(0) twice
    in a row may return the same port (a server's and its agent's MQTT port collided so)."""
    ports = _port_range()
    for _ in range(2000):
        port = random.choice(ports)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port left in {ports}")


# a node's listeners: never the machine's 1883, 80 and 443 (tests run side by side)
_NODE_PORT_FLAGS = ("--mqtt-port", "--ingress-http-port", "--ingress-https-port")


def node_port_args(args) -> list[str]:
    """Free ports for the node listeners `args` (a k3py command line) does not choose."""
    return [a for flag in _NODE_PORT_FLAGS if flag not in args
            for a in (flag, str(free_port()))]


def clean_env() -> dict[str, str]:
    """This environment without K3PY_* variables, so a child k3py reads only its flags."""
    return {k: v for k, v in os.environ.items() if not k.startswith("K3PY_")}


def rss_kib(pid: int) -> int:
    """The resident set size of process `pid`, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


@contextlib.contextmanager
def sampling_rss(pids: dict[str, int], every: float = 0.1) -> Iterator[dict[str, int]]:
    """The highest RSS (KiB) of each process (by name) while the block runs, sampled in a
    thread every `every` seconds."""
    peak = {name: rss_kib(pid) for name, pid in pids.items()}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(every):
            for name, pid in pids.items():
                with contextlib.suppress(OSError):
                    peak[name] = max(peak[name], rss_kib(pid))
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield peak
    finally:
        stop.set()
        t.join(5)


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - keep polling; report the last error
            last_exc = e
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}"
                       + (f" (last error: {last_exc})" if last_exc else ""))


class ServerProcess:
    """A real `python -m k3py server` child process."""

    def __init__(self, data_dir: Path, *, port: int | None = None,
                 extra_args: list[str] | None = None, env: dict | None = None,
                 host: str = "127.0.0.1") -> None:
        self.data_dir = Path(data_dir)
        self.host = host  # a loopback address: several servers may share one port
        self.port = port or free_port()
        self.kubeconfig = self.data_dir / "kubeconfig.yaml"
        self.extra_args = extra_args or []
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir / "server.log"

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "k3py", "server", "--data-dir", str(self.data_dir),
                "--bind-address", self.host, "--https-listen-port", str(self.port),
                "--write-kubeconfig", str(self.kubeconfig), "--disable-agent",
                *self.extra_args]

    def join_token(self) -> str:
        return (self.data_dir / "server" / "token").read_text().strip()

    def agent_command(self, data_dir: Path, node: str, *extra: str, server: str = "",
                      token: str = "") -> list[str]:
        """`python -m k3py agent` joining this server (`server`: another URL for it, e.g.
        from a network namespace; `token`: another token than the server's)."""
        return [sys.executable, "-m", "k3py", "agent", "--server", server or self.url,
                "--token", token or self.join_token(), "--data-dir", str(data_dir),
                "--node-name", node, *node_port_args(extra), *extra]

    def start(self, wait: bool = True, timeout: float = 30.0) -> ServerProcess:
        if self.proc is not None and self.proc.poll() is None:  # its stop() would miss it
            raise RuntimeError(f"k3py server {self.url} is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**clean_env(), **self.env}
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE

        def ready() -> bool:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"k3py server exited with {self.proc.returncode}:\n"
                                   + self.log_path.read_text()[-3000:])
            with urllib.request.urlopen(f"{self.url}/readyz", context=ctx, timeout=2) as r:
                return r.status == 200 and self.kubeconfig.exists()
        try:
            wait_for(ready, timeout, 0.05, "k3py server /readyz")
        except TimeoutError:
            raise TimeoutError("server not ready:\n" + self.log_path.read_text()[-3000:]) from None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, and after `timeout` SIGKILL: then its stacks are in the log first (what
        its stop waited for), and what is left of its process group gets SIGTERM, i.e. the
        embedded agent's podman service, which would otherwise live on until its idle timeout
        (60 s) and hold up the podman commands of the test's cleanup."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGUSR1)
                time.sleep(1.0)  # the dump is written from the event loop
                self.proc.kill()
                self.proc.wait()
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGTERM)  # its own session (start())
        if getattr(self, "_log", None):
            self._log.close()

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 60.0, binary: str = KUBECTL) -> subprocess.CompletedProcess:
        """`binary` (default KUBECTL): another kubectl build, e.g. one of kubectl_builds()."""
        cmd = [binary, "--kubeconfig", str(self.kubeconfig), *args]
        out = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({out.returncode}):\n"
                                 f"{out.stdout}\n{out.stderr}")
        return out

    def kubectl_json(self, *args: str) -> dict:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def client(self):
        """An ApiClient of the official kubernetes package, from the written kubeconfig."""
        from kubernetes import client, config
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        return client.ApiClient(cfg)
