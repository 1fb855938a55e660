"""Agent benchmark: pod startup latency (create -> Running as seen by a watch) next to raw
`podman pod create` + `podman run -d` of the same container in the same run, the agent's idle
RSS and CPU with the pods running, `kubectl logs` / `kubectl exec` through the tunnel next
to `podman logs` / `podman exec`, and `kubectl rollout undo` of a 2-replica Deployment whose
old pods ignore SIGTERM (30 s grace) until `kubectl rollout status` succeeds, and the same
rollback by Helm 4 (`helm rollback --wait`, its Go library through helm-python-sdk), each next
to one pod's `kubectl apply` + `kubectl wait --for=condition=Ready`.

Run: python3 bench/pods.py [--pods N]. Needs podman, busybox-static and helm-python-sdk
(scripts/setup.sh).
Prints `name: value unit` lines and `ratio: x` lines; exits 1 with a one-line reason when a
figure cannot be measured. Traffic goes only to 127.0.0.1; every loop is bounded in count and
time; the server, the agent and every podman pod this run created are removed, even on failure."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.api import client_ssl, emit, pct, rss_mb  # noqa: E402
from tests.harness import KUBECTL, ServerProcess, clean_env, free_port, wait_for  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "k3py.local/busybox:latest"
COMMAND = ["sh", "-c", "echo k3py-bench-ready; exec sleep 3600"]
BENCH_LABEL = "io.k3py.bench"        # on the raw peer's podman pods and containers
NODE_LABEL = "io.k3py.node"          # the agent's own label on what it starts
APP = "k3py-bench-pods"
ROLLOUT = "bench-rollback"           # the Deployment of the rollback figure (label app=)
HELM_ROLLOUT = "bench-helm-rollback"  # the same Deployment as a Helm release's
ROLLOUT_GRACE = 30                   # its old pods' grace period; they ignore SIGTERM
IGNORES_TERM = ["sh", "-c", "trap '' TERM; echo k3py-bench-ready; "
                "while true; do sleep 1; done"]
POD_TIMEOUT = 90.0                   # create -> Running, per pod
TOTAL_TIMEOUT = 900.0                # the whole pod phase


class Unmeasurable(Exception):
    """A figure could not be measured; the message is the one-line reason."""


def podman(*args: str, timeout: float = 120.0, check: bool = True) -> str:
    out = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise Unmeasurable(f"podman {' '.join(args[:3])} failed: {out.stderr.strip()[-300:]}")
    return out.stdout


def timed(cmd: list[str], timeout: float = 60.0) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return (time.perf_counter() - t0) * 1000, out


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(utime+stime, cutime+cstime) of `pid` in clock ticks, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # fields from #3 (state) on
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def service_pid(agent_pid: int) -> int | None:
    """The `podman system service` the agent started (its child), if it runs one."""
    for task in Path(f"/proc/{agent_pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmd = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            if b"system" in cmd and b"service" in cmd:
                return int(child)
    return None


def remove_podman_pods(label: str) -> int:
    ids = podman("pod", "ps", "-q", "--filter", f"label={label}", check=False).split()
    for pod_id in ids:
        podman("pod", "rm", "-f", "-t", "0", pod_id, check=False)
    ctrs = podman("ps", "-aq", "--filter", f"label={label}", check=False).split()
    for cid in ctrs:
        podman("rm", "-f", "-t", "0", cid, check=False)
    return len(ids) + len(ctrs)


# -- raw peer ---------------------------------------------------------------------------------

def raw_start(name: str, run_id: str) -> float:
    """`podman pod create` + `podman run -d` of the bench container; ms."""
    t0 = time.perf_counter()
    podman("pod", "create", "--name", name, "--label", f"{BENCH_LABEL}={run_id}")
    podman("run", "-d", "--pod", name, "--name", f"{name}-c", "--label",
           f"{BENCH_LABEL}={run_id}", IMAGE, *COMMAND)
    return (time.perf_counter() - t0) * 1000


# -- k3py pods through the API ------------------------------------------------------------------

class PodWatch:
    """One watch on the bench pods; records when each is first seen Running."""

    def __init__(self, session, base: str) -> None:
        self.s = session
        self.url = f"{base}/api/v1/namespaces/default/pods"
        self.running: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Event] = {}
        self.last_status: dict[str, dict] = {}
        self.task: asyncio.Task | None = None
        self.ready = asyncio.Event()

    async def run(self) -> None:
        import aiohttp
        import orjson
        rv = ""
        while True:
            params = {"watch": "true", "labelSelector": f"app={APP}",
                      "allowWatchBookmarks": "true", "timeoutSeconds": "600"}
            if rv:
                params["resourceVersion"] = rv
            try:
                async with self.s.get(self.url, params=params,
                                      timeout=aiohttp.ClientTimeout(total=None)) as r:
                    if r.status != 200:
                        raise Unmeasurable(f"pod watch -> HTTP {r.status}")
                    self.ready.set()
                    async for line in r.content:
                        now = time.perf_counter()
                        if not line.strip():
                            continue
                        ev = orjson.loads(line)
                        obj = ev.get("object") or {}
                        rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                        name = (obj.get("metadata") or {}).get("name")
                        if ev.get("type") in ("ADDED", "MODIFIED") and name:
                            st = obj.get("status") or {}
                            self.last_status[name] = st
                            if st.get("phase") == "Running" and name not in self.running:
                                self.running[name] = now
                                if name in self.waiters:
                                    self.waiters[name].set()
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
                await asyncio.sleep(0.1)

    async def start(self) -> None:
        self.task = asyncio.create_task(self.run())
        await asyncio.wait_for(self.ready.wait(), 30)

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def create_and_wait(self, name: str, node: str) -> float:
        """POST the pod and wait for the watch to show it Running; ms."""
        import orjson
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "labels": {"app": APP}},
               "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
                        "containers": [{"name": "c", "image": IMAGE,
                                        "imagePullPolicy": "Never", "command": COMMAND}]}}
        ev = self.waiters[name] = asyncio.Event()
        t0 = time.perf_counter()
        async with self.s.post(self.url, data=orjson.dumps(pod),
                               headers={"Content-Type": "application/json"}) as r:
            body = await r.read()
            if r.status != 201:
                raise Unmeasurable(f"create pod {name} -> HTTP {r.status}: {body[:200]!r}")
        try:
            await asyncio.wait_for(ev.wait(), POD_TIMEOUT)
        except TimeoutError:
            st = self.last_status.get(name) or {}
            why = [(c.get("state") or {}) for c in st.get("containerStatuses") or []]
            raise Unmeasurable(f"pod {name} not Running after {POD_TIMEOUT:.0f} s "
                               f"(phase {st.get('phase')!r}, containers {why})") from None
        return (self.running[name] - t0) * 1000

    async def delete_all(self) -> None:
        async with self.s.delete(self.url, params={"labelSelector": f"app={APP}"}) as r:
            await r.read()


async def startup_phase(srv: ServerProcess, tmp: Path, node: str, n: int, run_id: str,
                        res: dict) -> None:
    """Interleaved: one raw podman pod, then one k3py pod, n times (same machine load)."""
    import aiohttp
    ctx = client_ssl(srv.kubeconfig, tmp)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
        watch = PodWatch(s, srv.url)
        await watch.start()
        deadline = time.perf_counter() + TOTAL_TIMEOUT
        try:
            for i in range(n):
                if time.perf_counter() > deadline:
                    raise Unmeasurable(f"pod phase over {TOTAL_TIMEOUT:.0f} s after {i} pods")
                res["raw"].append(await asyncio.to_thread(raw_start, f"k3pybench-{run_id}-{i}",
                                                          run_id))
                res["k3py"].append(await watch.create_and_wait(f"bench-{i}", node))
        finally:
            await watch.stop()


async def delete_phase(srv: ServerProcess, tmp: Path) -> None:
    import aiohttp
    ctx = client_ssl(srv.kubeconfig, tmp)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
        await PodWatch(s, srv.url).delete_all()


# -- main -------------------------------------------------------------------------------------

def start_agent(srv: ServerProcess, tmp: Path, node: str) -> subprocess.Popen:
    """The agent joining `srv`, on a free MQTT port (never the machine's 1883)."""
    log = open(tmp / "agent.log", "ab")
    proc = subprocess.Popen(srv.agent_command(tmp / "agent", node), stdout=log,
                            stderr=subprocess.STDOUT, env=clean_env(), start_new_session=True)
    log.close()
    return proc


def node_ready(srv: ServerProcess, node: str, agent: subprocess.Popen) -> bool:
    if agent.poll() is not None:
        raise Unmeasurable(f"agent exited with {agent.returncode}")
    out = srv.kubectl("get", "node", node, "-o", "json", check=False, timeout=10)
    if out.returncode != 0:
        return False
    conds = {c["type"]: c["status"]
             for c in json.loads(out.stdout)["status"].get("conditions", [])}
    return conds.get("Ready") == "True"


def stream_latencies(srv: ServerProcess, pod: str, container: str, calls: int) -> dict:
    """kubectl logs/exec through the tunnel vs podman logs/exec, interleaved; ms lists."""
    kc = [KUBECTL, "--kubeconfig", str(srv.kubeconfig)]
    res: dict = {"kubectl_logs": [], "podman_logs": [], "kubectl_exec": [], "podman_exec": [],
                 "exec_error": ""}
    stop_at = time.perf_counter() + 120
    for _ in range(calls):
        if time.perf_counter() > stop_at:
            break
        ms, out = timed([*kc, "logs", pod])
        if out.returncode != 0 or "k3py-bench-ready" not in out.stdout:
            raise Unmeasurable(f"kubectl logs {pod} failed: {(out.stderr or out.stdout)[-200:]}")
        res["kubectl_logs"].append(ms)
        ms, out = timed(["podman", "logs", container])
        if out.returncode != 0 or "k3py-bench-ready" not in out.stdout + out.stderr:
            raise Unmeasurable(f"podman logs {container} failed: {out.stderr[-200:]}")
        res["podman_logs"].append(ms)
    ms, out = timed([*kc, "exec", pod, "--", "true"], timeout=30)
    if out.returncode != 0:
        res["exec_error"] = ((out.stderr or out.stdout).strip().splitlines() or ["?"])[-1]
        return res
    stop_at = time.perf_counter() + 120
    for _ in range(calls):
        if time.perf_counter() > stop_at:
            break
        ms, out = timed([*kc, "exec", pod, "--", "true"], timeout=30)
        if out.returncode != 0:
            res["exec_error"] = ((out.stderr or out.stdout).strip().splitlines() or ["?"])[-1]
            break
        res["kubectl_exec"].append(ms)
        ms, out = timed(["podman", "exec", container, "true"], timeout=30)
        if out.returncode != 0:
            raise Unmeasurable(f"podman exec {container} failed: {out.stderr[-200:]}")
        res["podman_exec"].append(ms)
    return res


PF_MB = 16  # the file fetched through port-forward and directly


def _fetch_mb_s(url: str) -> float:
    import urllib.request
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:  # noqa: S310 - loopback / pod IP
        size = len(r.read())
    if size != PF_MB << 20:
        raise Unmeasurable(f"fetched {size} bytes from {url}, expected {PF_MB} MiB")
    return size / (1 << 20) / (time.perf_counter() - t0)


def port_forward_throughput(srv: ServerProcess, node: str, rounds: int = 3) -> dict:
    """MB/s of one HTTP download from a pod: through `kubectl port-forward` (server, tunnel,
    agent, pod netns) next to straight to the pod IP from this host; best of `rounds`."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bench-pf"},
           "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0, "containers": [{
               "name": "web", "image": "k3py.local/busybox:latest",
               "imagePullPolicy": "Never", "command": ["sh", "-c",
               f"mkdir -p /www && dd if=/dev/zero of=/www/f bs=1M count={PF_MB} 2>/dev/null "
               "&& exec httpd -f -p 8080 -h /www"]}]}}
    srv.kubectl("apply", "-f", "-", input=json.dumps(pod))
    wait_for(lambda: srv.kubectl_json("get", "pod", "bench-pf")["status"].get("phase")
             == "Running", 60, 0.3, "bench-pf Running")
    ip = srv.kubectl_json("get", "pod", "bench-pf")["status"]["podIP"]
    wait_for(lambda: _fetch_mb_s(f"http://{ip}:8080/f"), 30, 0.3, "httpd in bench-pf")
    port = free_port()
    pf = subprocess.Popen([KUBECTL, "--kubeconfig", str(srv.kubeconfig), "port-forward",
                           "pod/bench-pf", f"{port}:8080"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
    try:
        assert pf.stdout is not None
        if "Forwarding" not in pf.stdout.readline():
            raise Unmeasurable("kubectl port-forward did not start")
        res = {"direct": [], "port_forward": []}
        for _ in range(rounds):
            res["direct"].append(_fetch_mb_s(f"http://{ip}:8080/f"))
            res["port_forward"].append(_fetch_mb_s(f"http://127.0.0.1:{port}/f"))
        return res
    finally:
        pf.terminate()
        pf.wait(10)
        srv.kubectl("delete", "pod", "bench-pf", "--wait=false", check=False)


async def probe_exec_latencies(agent_dir: Path, container: str, calls: int) -> list[float]:
    """A probe's exec as the agent runs it (libpod API, the agent's own service), ms each;
    its peer is the `podman exec` of stream_latencies, in the same run."""
    from k3py.agent.runtime.libpod import LibpodAPI
    api = LibpodAPI(agent_dir=str(agent_dir))
    await api.open()  # the agent's own service: it answers on agent/podman.sock
    out: list[float] = []
    try:
        for _ in range(calls):
            t0 = time.perf_counter()
            code, _ = await api.exec_check(container, ["true"], 30)
            if code != 0:
                raise Unmeasurable(f"probe exec in {container} exited {code}")
            out.append((time.perf_counter() - t0) * 1000)
    finally:
        await api.close()
    return out


def _rollout_deployment(node: str, revision: str, grace: int, name: str = ROLLOUT) -> dict:
    """The rollback bench's Deployment: 2 replicas of a container ignoring SIGTERM, upstream's
    default RollingUpdate (one new pod at a time, none unavailable)."""
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"nodeName": node, "terminationGracePeriodSeconds": grace,
                                       "containers": [{
                                           "name": "c", "image": IMAGE,
                                           "imagePullPolicy": "Never", "command": IGNORES_TERM,
                                           "env": [{"name": "REVISION", "value": revision}]}]}}}}


def _kubectl_timed(srv: ServerProcess, *args: str, timeout: float = 180.0) -> float:
    """Run kubectl; seconds it took. Unmeasurable when it fails."""
    t0 = time.perf_counter()
    out = srv.kubectl(*args, check=False, timeout=timeout)
    if out.returncode != 0:
        raise Unmeasurable(f"kubectl {' '.join(args[:3])} failed: "
                           f"{(out.stderr or out.stdout).strip()[-200:]}")
    return time.perf_counter() - t0


def _rollout_pods(srv: ServerProcess, name: str = ROLLOUT) -> list[dict]:
    return srv.kubectl_json("get", "pods", "-l", f"app={name}")["items"]


def rollback_phase(srv: ServerProcess, node: str) -> dict:
    """Seconds of `kubectl rollout undo` + `kubectl rollout status` of the 2-replica
    Deployment, whose pods of the revision undone ignore SIGTERM with a 30 s grace (they are
    the ones being replaced: a node stopping them one grace period at a time would make this
    60 s); next to one pod's `kubectl apply` + `kubectl wait --for=condition=Ready`, kubectl
    for kubectl."""
    res: dict = {}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bench-single"},
           "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0, "containers": [{
               "name": "c", "image": IMAGE, "imagePullPolicy": "Never", "command": COMMAND}]}}
    t0 = time.perf_counter()
    srv.kubectl("apply", "-f", "-", input=json.dumps(pod))
    _kubectl_timed(srv, "wait", "--for=condition=Ready", "pod/bench-single", "--timeout=90s")
    res["single"] = time.perf_counter() - t0
    srv.kubectl("delete", "pod", "bench-single", "--wait=false", check=False)
    try:
        # revision 1 (its pods stop within 2 s), then revision 2: the 30 s pods
        srv.kubectl("apply", "-f", "-", input=json.dumps(_rollout_deployment(node, "1", 2)))
        _kubectl_timed(srv, "rollout", "status", f"deploy/{ROLLOUT}", "--timeout=120s")
        srv.kubectl("apply", "-f", "-",
                    input=json.dumps(_rollout_deployment(node, "2", ROLLOUT_GRACE)))
        _kubectl_timed(srv, "rollout", "status", f"deploy/{ROLLOUT}", "--timeout=120s")
        try:
            wait_for(lambda: len(_rollout_pods(srv)) == 2, 30, 0.3, "revision 1's pods gone")
        except TimeoutError as e:
            raise Unmeasurable(str(e)) from None
        t0 = time.perf_counter()
        _kubectl_timed(srv, "rollout", "undo", f"deploy/{ROLLOUT}")
        _kubectl_timed(srv, "rollout", "status", f"deploy/{ROLLOUT}", "--timeout=180s")
        res["rollback"] = time.perf_counter() - t0
        res["terminating"] = sum(1 for p in _rollout_pods(srv)
                                 if p["metadata"].get("deletionTimestamp"))
    finally:  # no 30 s wait at teardown: the objects go at once, the agent stops the rest
        srv.kubectl("delete", "deploy", ROLLOUT, "--wait=false", check=False)
        srv.kubectl("delete", "pods", "-l", f"app={ROLLOUT}", "--grace-period=0", "--force",
                    check=False)
    return res


# the chart of the Helm rollback: its one template is the Deployment given in its values
HELM_CHART = {"Chart.yaml": "apiVersion: v2\nname: bench-rollback\nversion: 0.1.0\n",
              "templates/deployment.yaml": "{{ toJson .Values.deployment }}\n"}


def helm_rollback_phase(srv: ServerProcess, node: str, tmp: Path) -> dict:
    """Seconds of Helm 4's `rollback --wait` (helm-python-sdk) of a release holding the same
    2-replica Deployment: installed at revision 1 (pods stopping within 2 s), upgraded with
    --wait to revision 2 (pods ignoring SIGTERM, 30 s grace), rolled back to revision 1.
    Empty when helm-python-sdk is not installed."""
    try:
        import helm_python as helm
    except ImportError:
        return {}
    chart = tmp / "helm-chart"
    for name, text in HELM_CHART.items():
        (chart / name).parent.mkdir(parents=True, exist_ok=True)
        (chart / name).write_text(text)

    def values(revision: str, grace: int) -> dict:
        return {"deployment": _rollout_deployment(node, revision, grace, HELM_ROLLOUT)}
    res: dict = {}
    with helm.Config(kubeconfig_path=str(srv.kubeconfig), namespace="default") as cfg:
        try:
            cfg.install(chart, HELM_ROLLOUT, values("1", 2), wait="watcher", timeout=120)
            cfg.upgrade(chart, HELM_ROLLOUT, values("2", ROLLOUT_GRACE), wait="watcher",
                        timeout=120)
            wait_for(lambda: len(_rollout_pods(srv, HELM_ROLLOUT)) == 2, 30, 0.3,
                     "revision 1's pods gone")
            t0 = time.perf_counter()
            cfg.rollback(HELM_ROLLOUT, version=1, wait="watcher", timeout=180)
            res["rollback"] = time.perf_counter() - t0
            res["terminating"] = sum(1 for p in _rollout_pods(srv, HELM_ROLLOUT)
                                     if p["metadata"].get("deletionTimestamp"))
        except (helm.HelmError, TimeoutError) as e:
            raise Unmeasurable(f"helm rollback phase: {e}"[:300]) from None
        finally:  # the release's objects go at once, the agent stops the rest
            cfg.uninstall(HELM_ROLLOUT, ignore_not_found=True)
            srv.kubectl("delete", "pods", "-l", f"app={HELM_ROLLOUT}", "--grace-period=0",
                        "--force", check=False)
    return res


def run(args: argparse.Namespace, tmp: Path, run_id: str, node: str,
        started: dict) -> None:
    for tool in ("podman", "busybox", KUBECTL):
        if shutil.which(tool) is None:
            raise Unmeasurable(f"{tool} not found (sh scripts/setup.sh installs podman and "
                               "busybox-static)")
    t0 = time.perf_counter()
    out = subprocess.run(["sh", str(ROOT / "airgap" / "build-test-image.sh"),
                          str(tmp / "busybox.tar")], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise Unmeasurable(f"build-test-image.sh failed: {out.stderr.strip()[-300:]}")
    emit("test_image_build", time.perf_counter() - t0, "s")
    # warm the peer once (first podman call of a run pays storage/network setup)
    raw_start(f"k3pybench-{run_id}-warm", run_id)

    srv = started["server"] = ServerProcess(tmp / "server")
    srv.start(timeout=60)
    agent = started["agent"] = start_agent(srv, tmp, node)
    t0 = time.perf_counter()
    try:
        wait_for(lambda: node_ready(srv, node, agent), 60, 0.2, f"node {node} Ready")
    except TimeoutError as e:
        raise Unmeasurable(str(e)) from None
    emit("agent_join_to_ready", time.perf_counter() - t0, "s")
    time.sleep(3.0)
    emit("agent_rss_no_pods", rss_mb(agent.pid), "MB")

    res: dict = {"raw": [], "k3py": []}
    try:
        asyncio.run(startup_phase(srv, tmp, node, args.pods, run_id, res))
    finally:
        raw, k3 = res["raw"], res["k3py"]
        print(f"pods_measured: {len(k3)} of {args.pods}", flush=True)
        if raw:
            emit("raw_podman_start_p50", pct(raw, 50), "ms")
            emit("raw_podman_start_p99", pct(raw, 99), "ms")
        if k3:
            emit("pod_startup_p50", pct(k3, 50), "ms")
            emit("pod_startup_p99", pct(k3, 99), "ms")
        if len(k3) >= 10:  # does startup grow with the pods already running?
            emit("pod_startup_first5_p50", pct(k3[:5], 50), "ms")
            emit("pod_startup_last5_p50", pct(k3[-5:], 50), "ms")
            emit("raw_podman_start_last5_p50", pct(raw[-5:], 50), "ms")
        if raw and k3 and len(k3) == len(raw):
            print(f"ratio: {pct(k3, 50) / pct(raw, 50):.2f}   (k3py create->Running p50 / "
                  "podman pod create + run -d p50, target <= 1.3)", flush=True)
        remove_podman_pods(f"{BENCH_LABEL}={run_id}")  # the idle figures see only k3py's pods

    # idle: the pods run, nothing changes; settle, then ~20 s of /proc/<pid>/stat
    time.sleep(5.0)
    hz = os.sysconf("SC_CLK_TCK")
    svc = service_pid(agent.pid)
    own0, kids0 = cpu_ticks(agent.pid)
    svc0 = cpu_ticks(svc)[0] if svc else 0
    w0 = time.perf_counter()
    time.sleep(args.idle_seconds)
    own1, kids1 = cpu_ticks(agent.pid)
    svc1 = cpu_ticks(svc)[0] if svc else 0
    wall = time.perf_counter() - w0
    emit("agent_idle_rss", rss_mb(agent.pid), "MB", "< 45 MB")
    emit("agent_idle_cpu", (own1 - own0) / hz / wall * 100, "% of one core", "< 2 %")
    emit("agent_idle_cpu_incl_podman_children", (own1 - own0 + kids1 - kids0) / hz / wall * 100,
         "% of one core")
    if svc:  # the libpod API service the agent started: podman's process, counted apart
        emit("podman_api_service_idle_rss", rss_mb(svc), "MB")
        emit("podman_api_service_idle_cpu", (svc1 - svc0) / hz / wall * 100, "% of one core")
    if agent.poll() is not None:
        raise Unmeasurable(f"agent exited with {agent.returncode} while idle")

    # streams through the tunnel vs podman directly
    uid = srv.kubectl_json("get", "pod", "bench-0")["metadata"]["uid"]
    container = f"default_bench-0_c_{uid[:8]}"
    st = stream_latencies(srv, "bench-0", container, args.calls)
    emit("kubectl_logs_p50", pct(st["kubectl_logs"], 50), "ms")
    emit("podman_logs_p50", pct(st["podman_logs"], 50), "ms")
    print(f"ratio: {pct(st['kubectl_logs'], 50) / pct(st['podman_logs'], 50):.2f}   "
          "(kubectl logs through the tunnel p50 / podman logs p50)", flush=True)
    if st["kubectl_exec"]:
        emit("kubectl_exec_p50", pct(st["kubectl_exec"], 50), "ms")
        emit("podman_exec_p50", pct(st["podman_exec"], 50), "ms")
        print(f"ratio: {pct(st['kubectl_exec'], 50) / pct(st['podman_exec'], 50):.2f}   "
              "(kubectl exec -- true through the tunnel p50 / podman exec true p50)", flush=True)
    else:
        print(f"kubectl_exec: unsupported   ({st['exec_error'][:160]})", flush=True)
    tp = port_forward_throughput(srv, node)
    emit("port_forward_mb_s", max(tp["port_forward"]), "MB/s")
    emit("direct_to_pod_ip_mb_s", max(tp["direct"]), "MB/s")
    print(f"ratio: {max(tp['port_forward']) / max(tp['direct']):.3f}   (kubectl port-forward "
          "through the tunnel / straight to the pod IP, best of 3)", flush=True)
    pe = asyncio.run(probe_exec_latencies(tmp / "agent" / "agent", container, args.calls))
    emit("probe_exec_api_p50", pct(pe, 50), "ms")
    if st["podman_exec"]:
        print(f"ratio: {pct(pe, 50) / pct(st['podman_exec'], 50):.2f}   (a probe's exec "
              "through the libpod API p50 / podman exec p50)", flush=True)

    rb = rollback_phase(srv, node)
    emit("single_pod_apply_to_ready", rb["single"], "s")
    emit("rollback_2_replicas_to_ready", rb["rollback"], "s")
    print(f"rollback_old_pods_still_terminating_at_ready: {rb['terminating']} of 2", flush=True)
    print(f"ratio: {rb['rollback'] / rb['single']:.2f}   (kubectl rollout undo + rollout status "
          f"of 2 replicas whose old pods ignore SIGTERM ({ROLLOUT_GRACE} s grace) / one pod's "
          "kubectl apply + wait Ready, target <= 2)", flush=True)
    hr = helm_rollback_phase(srv, node, tmp)
    if not hr:
        print("helm_rollback: unmeasured   (helm-python-sdk not installed)", flush=True)
        return
    emit("helm_rollback_2_replicas_to_ready", hr["rollback"], "s")
    print(f"helm_rollback_old_pods_still_terminating_at_ready: {hr['terminating']} of 2",
          flush=True)
    print(f"ratio: {hr['rollback'] / rb['single']:.2f}   (helm rollback --wait of 2 replicas "
          f"whose old pods ignore SIGTERM ({ROLLOUT_GRACE} s grace) / one pod's kubectl apply "
          "+ wait Ready, target <= 2)", flush=True)


def teardown(srv: ServerProcess | None, agent: subprocess.Popen | None, tmp: Path,
             node: str, run_id: str) -> None:
    if srv and agent and agent.poll() is None and srv.proc and srv.proc.poll() is None:
        try:  # graceful path first: the agent stops and removes its pods
            asyncio.run(asyncio.wait_for(delete_phase(srv, tmp), 20))
            wait_for(lambda: not podman("pod", "ps", "-q", "--filter",
                                        f"label={NODE_LABEL}={node}", check=False).strip(),
                     30, 0.5, "agent removing its pods")
        except Exception as e:  # noqa: BLE001 - the forced removal below still runs
            print(f"# teardown: {type(e).__name__}: {e}"[:200], file=sys.stderr)
    if agent and agent.poll() is None:
        agent.terminate()
        try:
            agent.wait(15)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
    if srv:
        srv.stop()
    left = remove_podman_pods(f"{NODE_LABEL}={node}") + \
        remove_podman_pods(f"{BENCH_LABEL}={run_id}")
    if left:
        print(f"# teardown: force-removed {left} podman pods/containers", file=sys.stderr)


def guarded_run(prefix: str, body, cleanup) -> int:
    """`body(tmp)` in a fresh temporary directory, `cleanup(tmp)` after it whatever happens:
    0; 1 with the one-line reason (and the tail of tmp/agent.log) when a figure cannot be
    measured; 130 when interrupted. SIGTERM and SIGHUP unwind like Ctrl-C."""
    def interrupt(*_):
        raise KeyboardInterrupt
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        tmp = Path(d)
        try:
            body(tmp)
            return 0
        except (Unmeasurable, TimeoutError) as e:
            print(f"error: {e}", flush=True)
            log = tmp / "agent.log"
            if log.exists():
                tail = log.read_text(errors="replace").strip().splitlines()[-15:]
                print("# agent log tail:\n# " + "\n# ".join(tail), file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("error: interrupted", flush=True)
            return 130
        finally:
            cleanup(tmp)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=30, help="pods to start (default 30)")
    ap.add_argument("--calls", type=int, default=20, help="logs/exec calls (default 20)")
    ap.add_argument("--idle-seconds", type=float, default=20.0)
    ap.add_argument("--node-name", default="bench-node")
    args = ap.parse_args()
    args.pods = max(1, min(args.pods, 200))
    args.calls = max(1, min(args.calls, 200))
    args.idle_seconds = max(1.0, min(args.idle_seconds, 120.0))
    run_id = uuid.uuid4().hex[:8]
    started: dict = {}
    return guarded_run(
        "k3py-bench-pods-", lambda tmp: run(args, tmp, run_id, args.node_name, started),
        lambda tmp: teardown(started.get("server"), started.get("agent"), tmp,
                             args.node_name, run_id))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
