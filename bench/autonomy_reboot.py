"""Autonomy benchmark: a node rebooted while its server is unreachable recreates its pods from
its cache. N pods (default 10) are created online (kubectl apply of all of them -> every app
container running in podman); then the server is stopped, the agent killed with -9 and the
node's podman pods removed (what a reboot leaves), and the agent started again: agent start ->
every app container running again, from meta.db alone. Both are timed the same way (podman
polled), in the same run, and their ratio printed.

Run: python3 bench/autonomy_reboot.py [--pods N]. Needs podman and busybox-static
(scripts/setup.sh). Prints `name: value unit` lines and `ratio: x`; exits 1 with a one-line
reason when a figure cannot be measured. `reboot_recreate(...)` is the measurement, for
bench/autonomy.py. Every wait is bounded; the server, the agent and the node's podman pods are
removed, even on failure."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.api import emit  # noqa: E402
from bench.pods import (  # noqa: E402
    IMAGE,
    NODE_LABEL,
    Unmeasurable,
    node_ready,
    podman,
    remove_podman_pods,
    start_agent,
)
from tests.harness import ServerProcess, wait_for  # noqa: E402
from tests.integration.agents import stop_proc  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RUNNING_TIMEOUT = 120.0  # N pods running, online or from the cache


def _pods(node: str, n: int) -> str:
    """`n` pods bound to `node` (YAML documents), each with an emptyDir and the
    service-account token volume (the server adds it), as a reboot must bring them back."""
    return "\n---\n".join(json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"reboot-{i}"},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                 "volumes": [{"name": "scratch", "emptyDir": {}}],
                 "containers": [{"name": "c", "image": IMAGE, "imagePullPolicy": "Never",
                                 "volumeMounts": [{"name": "scratch", "mountPath": "/s"}],
                                 "command": ["sleep", "3600"]}]}}) for i in range(n))


def _running(node: str) -> int:
    """App containers of `node` running in podman."""
    return len(podman("ps", "-q", "--filter", f"label={NODE_LABEL}={node}", "--filter",
                      "label=io.k3py.container", "--filter", "status=running",
                      check=False).split())


def _until_running(node: str, n: int, t0: float, what: str) -> float:
    """Seconds from `t0` until `n` app containers of `node` run."""
    try:
        wait_for(lambda: _running(node) >= n, RUNNING_TIMEOUT, 0.05, what)
    except TimeoutError as e:
        raise Unmeasurable(str(e)) from None
    return time.perf_counter() - t0


def reboot_recreate(tmp: Path, node: str, n: int = 10) -> dict[str, float]:
    """{"online": s, "from_cache": s}: `n` pods created online until running, and the same
    pods recreated from the agent's cache after a simulated reboot with the server down."""
    subprocess.run(["sh", str(ROOT / "airgap" / "build-test-image.sh"),
                    str(tmp / "busybox.tar")], capture_output=True, check=True, timeout=300)
    srv = ServerProcess(tmp / "server")
    agent = None
    try:
        srv.start(timeout=60)
        agent = start_agent(srv, tmp, node)
        wait_for(lambda: node_ready(srv, node, agent), 60, 0.2, f"node {node} Ready")
        t0 = time.perf_counter()
        srv.kubectl("apply", "-f", "-", input=_pods(node, n))
        online = _until_running(node, n, t0, f"{n} pods running online")
        wait_for(lambda: all(p["status"].get("phase") == "Running" for p in srv.kubectl_json(
            "get", "pods")["items"]), 60, 0.2, "the server's view of the pods")

        srv.stop()  # unreachable from now on
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        remove_podman_pods(f"{NODE_LABEL}={node}")  # what a reboot leaves
        if _running(node):
            raise Unmeasurable("the node's pods survived their removal")
        t0 = time.perf_counter()
        agent = start_agent(srv, tmp, node)
        from_cache = _until_running(node, n, t0, f"{n} pods recreated from the cache")
        return {"online": online, "from_cache": from_cache}
    finally:
        if agent is not None and agent.poll() is None:
            stop_proc(agent)
        srv.stop()
        remove_podman_pods(f"{NODE_LABEL}={node}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=10, help="pods (default 10)")
    args = ap.parse_args()
    n = max(1, min(args.pods, 50))

    def interrupt(*_):  # SIGTERM/SIGHUP unwind through the finally blocks like Ctrl-C
        raise KeyboardInterrupt
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
    node = f"bench-reboot-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(prefix="k3py-bench-reboot-") as d:
        try:
            t = reboot_recreate(Path(d), node, n)
        except (Unmeasurable, TimeoutError, AssertionError, subprocess.CalledProcessError) as e:
            print(f"error: {e}".splitlines()[0], flush=True)
            return 1
    print(f"pods: {n}", flush=True)
    emit("online_create_to_running", t["online"], "s")
    emit("reboot_recreate_from_cache", t["from_cache"], "s")
    print(f"ratio: {t['from_cache'] / t['online']:.2f}   (recreate {n} pods from the cache after "
          f"a reboot with the server down, agent start included / create them online: "
          f"kubectl apply -> all running)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
