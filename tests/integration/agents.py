"""Shared pieces of the agent tests: `k3py server` with its embedded agent on real podman, the
offline busybox test image (airgap/build-test-image.sh), and cleanup of the podman pods a
test's node started (only those: podman is shared by everything on the machine)."""

from __future__ import annotations

import base64
import contextlib
import os
import queue
import sqlite3
import subprocess
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

from k3py import pki
from tests.harness import KUBECTL, ServerProcess, free_port, node_port_args, wait_for

__all__ = ["ROOT", "IMAGE", "PY_IMAGE", "build_python_image", "EmbeddedServer", "build_test_image", "cached_names", "curl_host", "embedded_node",
           "node_ready", "podman_pods", "remove_podman_pods", "remove_pod_networks", "container_status", "fetch",
           "kubectl_env", "kubectl_popen", "port_forward", "read_until", "running_unrestarted",
           "stop_proc", "tls_secret"]

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "k3py.local/busybox:latest"
PY_IMAGE = "k3py.local/python-k8s:latest"  # a minimal Python with the kubernetes client


def cached_names(meta_db: Path, kind: str) -> set[str]:
    """The names of the objects of `kind` an agent holds in its meta.db (read only, beside
    the running agent)."""
    db = sqlite3.connect(f"file:{meta_db}?mode=ro", uri=True, timeout=5)
    try:
        return {name for (name,) in db.execute("SELECT name FROM objects WHERE kind=?", (kind,))}
    finally:
        db.close()


class EmbeddedServer(ServerProcess):
    """A server that runs its own node's agent (the harness passes --disable-agent)."""

    node = ""
    bind_address = ""  # e.g. 0.0.0.0 when pods must reach the API at the node's address

    def command(self) -> list[str]:
        cmd = [a for a in super().command() if a != "--disable-agent"]
        if self.bind_address:
            cmd[cmd.index("--bind-address") + 1] = self.bind_address
        return cmd + node_port_args(cmd)


def build_python_image() -> Path:
    """Build the offline Python image into podman (airgap/build-python-image.sh), its tarball
    cached in ~/.cache/k3py between runs; the tarball's path."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    cache = Path(base) / "k3py"
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(["sh", str(ROOT / "airgap" / "build-python-image.sh"),
                    str(cache / "python-k8s.tar")], check=True, capture_output=True)
    return cache / "python-k8s.tar"


def build_test_image(dest: Path) -> Path:
    """Build the busybox test image into podman and save its tarball at `dest`."""
    subprocess.run(["sh", str(ROOT / "airgap" / "build-test-image.sh"), str(dest)],
                   check=True, capture_output=True)
    return dest


def remove_podman_pods(node: str, ns=None) -> None:
    """`podman pod rm -f` of the node's pods; inside the node's network namespace `ns` (a
    NetNS) when its agent ran there: netavark tears the pods' networks down where they are."""
    def run(*args: str) -> subprocess.CompletedProcess:
        cmd = ["podman", *args]
        return subprocess.run(ns.command(cmd) if ns is not None else cmd,
                              capture_output=True, text=True, timeout=120)
    out = run("pod", "ps", "-q", "--filter", f"label=io.k3py.node={node}")
    for pod_id in out.stdout.split():
        run("pod", "rm", "-f", "-t", "0", pod_id)
    remove_pod_networks(node, ns=ns)


def remove_pod_networks(node: str, podman: tuple[str, ...] = ("podman",), ns=None) -> None:
    """The node's pod network (k3py-<cluster>-<node>, agent/network/podnet.py): podman keeps
    network definitions host-wide, so one left over would hold its subnet."""
    out = subprocess.run([*podman, "network", "ls", "--format", "{{.Name}}"],
                         capture_output=True, text=True, timeout=60)
    for net in out.stdout.split():
        if net.startswith("k3py-") and net.endswith(f"-{node}"):
            cmd = [*podman, "network", "rm", "-f", net]
            subprocess.run(ns.command(cmd) if ns is not None else cmd, capture_output=True,
                           timeout=60)


def podman_pods(node: str) -> list[str]:
    out = subprocess.run(["podman", "pod", "ps", "--format", "{{.Name}}", "--filter",
                          f"label=io.k3py.node={node}"], capture_output=True, text=True)
    return out.stdout.split()


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"({e})"


def node_ready(srv: ServerProcess, node: str) -> dict | None:
    """The Node if its Ready condition is True, else None."""
    n = srv.kubectl_json("get", "node", node)
    conds = {c["type"]: c["status"] for c in n["status"].get("conditions", [])}
    return n if conds.get("Ready") == "True" else None


@contextlib.contextmanager
def embedded_node(tmp: Path, prefix: str, timeout: float = 60.0, bind_address: str = "",
                  args: tuple[str, ...] = (), **server_kw) -> Iterator[EmbeddedServer]:
    """A started server (with `args` added to its command line) whose embedded agent's node
    (`srv.node`) is Ready, with the test image in podman; stopped and its pods removed on
    exit."""
    build_test_image(tmp / "busybox.tar")
    node = f"{prefix}-{uuid.uuid4().hex[:6]}"
    srv = EmbeddedServer(tmp / "k3py", extra_args=["--node-name", node, *args],
                         **server_kw)
    srv.node, srv.bind_address = node, bind_address
    try:
        srv.start()
        try:
            wait_for(lambda: node_ready(srv, node), timeout, 0.3, f"node {node} Ready")
        except TimeoutError as e:
            raise TimeoutError(f"{e}; server log ends:\n{_log_tail(srv.log_path)}") from None
        yield srv
    finally:
        srv.stop()
        remove_podman_pods(node)


# ---------------------------------------------------------------- kubectl stream helpers

def kubectl_popen(srv, *args: str, env: dict | None = None, stdin=None):
    return subprocess.Popen([KUBECTL, "--kubeconfig", str(srv.kubeconfig), *args],
                            stdin=stdin or subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def curl_host(address: str, port: int, host: str, path: str = "/", *extra: str,
              scheme: str = "http") -> tuple[int, str]:
    """(status, body) of `curl` to address:port with `host` as Host (and SNI); (-exit code,
    stderr) when curl fails."""
    out = subprocess.run(["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}",
                          "--resolve", f"{host}:{port}:{address}", *extra,
                          f"{scheme}://{host}:{port}{path}"],
                         capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        return -out.returncode, out.stderr
    body, _, code = out.stdout.rpartition("\n")
    return int(code), body


def tls_secret(name: str, host: str, ca_path: Path) -> dict:
    """A `kubernetes.io/tls` Secret for `host` (an ingress test's), signed by a fresh CA whose
    certificate is written to `ca_path`."""
    ca_cert, ca_key = pki._make_ca("ingress test CA")
    cert, key = pki._issue(ca_cert, ca_key, host, server=True, dns=(host,))
    ca_path.write_bytes(ca_cert)
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": base64.b64encode(cert).decode(),
                     "tls.key": base64.b64encode(key).decode()}}


def port_forward(srv, target: str, remote: int, env: dict | None = None):
    """Runs `kubectl port-forward`, yields the local port once it listens."""
    local = free_port()
    proc = kubectl_popen(srv, "port-forward", target, f"{local}:{remote}", env=env)
    line = proc.stdout.readline()  # "Forwarding from 127.0.0.1:<local> -> <remote>"
    if "Forwarding from" not in line:
        proc.kill()
        raise AssertionError(f"port-forward did not start: {line}{proc.stderr.read()}")
    return proc, local


def followed_logs(prefix: str) -> int:
    """The `podman logs --follow` running here of containers whose podman name (the agent's
    NAMESPACE_POD_CONTAINER_UID) starts with `prefix`."""
    count = 0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:  # ended meanwhile
            continue
        if b"logs" in args and b"--follow" in args and any(
                a.startswith(prefix.encode()) for a in args):
            count += 1
    return count


def stop_proc(proc) -> tuple[str, str]:
    proc.terminate()
    try:
        return proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def read_until(proc, needle: str, timeout: float = 30.0) -> str:
    """stdout lines of `proc` until one holds `needle` (a reader thread: no hang)."""
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        with contextlib.suppress(ValueError):  # closed by stop_proc meanwhile
            for line in proc.stdout:
                lines.put(line)
        lines.put(None)
    threading.Thread(target=pump, daemon=True).start()
    seen = ""
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            line = None
        if line is None:
            raise AssertionError(f"{needle!r} not in {seen!r}")
        seen += line
        if needle in line:
            return seen


def running_unrestarted(srv, name: str) -> bool:
    pod = srv.kubectl_json("get", "pod", name)
    cs = pod["status"]["containerStatuses"][0]
    return pod["status"]["phase"] == "Running" and cs["restartCount"] == 0 and \
        "running" in cs["state"]


def kubectl_env(srv, *args: str, env: dict, input: str | None = None) -> str:
    out = subprocess.run([KUBECTL, "--kubeconfig", str(srv.kubeconfig), *args],
                         capture_output=True, text=True, input=input,
                         env={**os.environ, **env}, timeout=60)
    assert out.returncode == 0, f"kubectl {args}: {out.stderr}"
    return out.stdout


def container_status(srv, name: str, key: str = "containerStatuses") -> dict:
    """The pod's first container status (or init container status with `key`)."""
    return (srv.kubectl_json("get", "pod", name).get("status") or {}).get(key, [{}])[0]
