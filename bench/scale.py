"""How far one server goes: one `k3py server` (embedded SQLite, no agent of its own) with N
hollow nodes (bench/hollow.py: the real join, tunnel and heartbeats, pods reported Running with
no container), in a second process on the same machine.

For each size and datastore (SQLite, or PostgreSQL: a fresh local cluster, tests/pg.py, on the
same 2 cores): seconds until N nodes are Ready, the server's RSS (idle, with N nodes, with the
pods), the heartbeats it takes (writes/s over a steady window: lease renewals, N / 10 s, and
the rare status reports, an unchanged status every 5 min per node; against what the agents send:
its ratio) and its CPU meanwhile, the oldest node Lease; then
--pods pods made through Deployments of 100: pods scheduled/s and Running/s (from the first
Deployment create until the last pod; Running/s is nan, and pods_running says how many
ran, if not all ran within --timeout), the API's p99 and p50 for a GET, a LIST (limit=500)
and a CREATE meanwhile, and the server's CPU per pod (all its threads, heartbeats included);
and after a server restart, the seconds until half, 90 % and every node's tunnel are back, the
dials that failed meanwhile and the server's CPU meanwhile.
With two sizes, `ratio:` compares the server RSS per node; with both datastores, postgres /
sqlite for pods scheduled/s, the API p99s, RSS and reconnect time.

The API probe (bench/apiprobe.py) runs in a process of its own, with its own event loop,
from the pods' first create to the last pod: in this process it would share one loop with
the hollow nodes, whose lag (up to 250 ms) would be counted as the server's (docs/ha.md).

Each figure is printed (flushed) as soon as it is measured, the ratios when all runs are done.
A phase past --timeout ends its run (the next one still runs), Ctrl-C ends them all: the ratios
of what was measured follow, then one line on stderr says which phase was cut, and the exit
status is 1.

Run: python3 bench/scale.py --nodes 200 --pods 3000 --datastore sqlite --datastore postgres
[--timeout 600]. Every phase is bounded by --timeout; traffic goes only to 127.0.0.1.
`--window 0 --pods 0`: only the joins and the restart; `--profile DIR`: py-spy's samples of
the server and of the hollow nodes over the heartbeat window and while the pods are made
(collapsed stacks, .txt) and flame
graphs of both during the reconnect (.svg), and the server's log, are kept in DIR.
`--disable-network-policy`: the server's flag of that name. The bench makes no NetworkPolicy,
so the nodes are sent no pod's peer view either way (they go only while a policy exists:
docs/ha.md says why): python3 bench/scale.py --nodes 1000 --pods 30000 --window 20
--timeout 720 [--datastore postgres]."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.api import client_ssl, cpu_seconds, emit, rss_mb  # noqa: E402
from bench.apiprobe import ProbeProcess  # noqa: E402
from bench.hollow import HollowFleet  # noqa: E402
from k3py.agent.node import HEARTBEAT_SECONDS, STATUS_REPORT_SECONDS  # noqa: E402
from tests.harness import ServerProcess  # noqa: E402
from tests.pg import PostgresCluster  # noqa: E402

JSON = {"Content-Type": "application/json"}


async def _wait(pred, timeout: float, what: str, interval: float = 0.5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = await pred()
        if value:
            return value
        await asyncio.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


class Api:
    def __init__(self, srv: ServerProcess, session: aiohttp.ClientSession) -> None:
        self.base = srv.url
        self.kubeconfig = srv.kubeconfig
        self.s = session

    async def get(self, path: str) -> dict:
        async with self.s.get(self.base + path) as r:
            if r.status != 200:
                raise RuntimeError(f"GET {path} -> {r.status}")
            return orjson.loads(await r.read())

    async def revision(self) -> int:
        got = await self.get("/api/v1/namespaces?limit=1")
        return int(got["metadata"]["resourceVersion"])

    async def ready_nodes(self) -> int:
        nodes = (await self.get("/api/v1/nodes"))["items"]
        return sum(any(c["type"] == "Ready" and c["status"] == "True"
                       for c in (n.get("status") or {}).get("conditions") or [])
                   for n in nodes)

    async def oldest_lease_age(self) -> float:
        leases = (await self.get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/"
                                 "leases"))["items"]
        now = time.time()
        ages = [now - _epoch(ls["spec"]["renewTime"]) for ls in leases
                if (ls.get("spec") or {}).get("renewTime")]
        return max(ages) if ages else float("nan")


def _epoch(stamp: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


REPLICAS = 100  # pods per Deployment


def deployment(name: str, replicas: int) -> bytes:
    labels = {"bench": "scale", "app": name}
    return orjson.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"bench": "scale"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                     {"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}}}})


async def pods_through_deployments(run: Run, api: Api, count: int, timeout: float) -> None:
    """`count` pods through Deployments of REPLICAS (_make_pods), and the API's latencies
    meanwhile from a probe in a process of its own (bench/apiprobe.py says why): p99 and p50
    by verb, and one line on stderr if the probe failed."""
    probe = ProbeProcess(api.base, api.kubeconfig)
    await probe.start()  # before the pods' clock starts: its start-up is not theirs
    try:
        await _make_pods(run, api, count, timeout)
    finally:
        report = await probe.stop()
        for verb, value in report.ms(99).items():
            run.put(f"{verb}_p99", value, f"api_{verb}_p99", "ms",
                    "" if verb == "list" else "< 100 ms")
        for verb, value in report.ms(50).items():
            run.put(f"{verb}_p50", value, f"api_{verb}_p50", "ms")
        if report.error:
            print(f"# the API probe failed: {report.error} (its figures are of the "
                  f"{report.samples()} requests before)", file=sys.stderr, flush=True)


async def _make_pods(run: Run, api: Api, count: int, timeout: float) -> None:
    """Pods scheduled/s and Running/s from the first Deployment create until the last pod
    (each printed when reached), and how many ran by the deadline."""
    scheduled: set[str] = set()
    running: set[str] = set()
    done = asyncio.Event()
    rv = str(await api.revision())
    t0 = time.monotonic()

    async def watch() -> None:
        async with api.s.get(f"{api.base}/api/v1/namespaces/default/pods?watch=1&"
                             f"resourceVersion={rv}&labelSelector=bench%3Dscale",
                             timeout=aiohttp.ClientTimeout(total=None)) as r:
            async for line in r.content:
                obj = orjson.loads(line).get("object") or {}
                name = (obj.get("metadata") or {}).get("name")
                if (obj.get("spec") or {}).get("nodeName") and name not in scheduled:
                    scheduled.add(name)
                    if len(scheduled) == count:
                        run.put("scheduled_per_s", count / (time.monotonic() - t0),
                                "pods_scheduled_per_s", "pods/s", ">= 300/s")
                        run.phase = f"{count} pods Running"
                if (obj.get("status") or {}).get("phase") == "Running":
                    running.add(name)
                    if len(running) == count:
                        run.put("running_per_s", count / (time.monotonic() - t0),
                                "pods_running_per_s", "pods/s")
                        done.set()
                        return

    watcher = asyncio.create_task(watch())
    try:
        for i in range(0, count, REPLICAS):
            async with api.s.post(f"{api.base}/apis/apps/v1/namespaces/default/deployments",
                                  data=deployment(f"d-{i // REPLICAS:04d}",
                                                  min(REPLICAS, count - i)),
                                  headers=JSON) as r:
                if r.status != 201:
                    raise RuntimeError(f"create deployment -> {r.status}: {await r.text()}")
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            if "scheduled_per_s" not in run.r:
                raise TimeoutError(f"only {len(scheduled)} scheduled and {len(running)} of "
                                   f"{count} pods Running after {timeout:.0f} s") from None
            # all scheduled: the figures stand, with how many ran by the deadline
    finally:
        watcher.cancel()
        # what was measured, even if this phase is cut short
        run.put("running", len(running), "pods_running", "pods", f"{count} by the deadline")


class Run:
    """The figures of one run (datastore, size), each printed as soon as it is measured;
    `phase` names the step under way, for the line that says where a cut-short run stopped."""

    def __init__(self, store: str, nodes: int) -> None:
        self.store, self.nodes = store, nodes
        self.r: dict[str, float] = {}
        self.phase = "server start"

    def put(self, key: str, value: float, name: str, unit: str, target: str = "") -> None:
        self.r[key] = value
        emit(f"n{self.nodes}_{self.store}_{name}", value, unit, target)


async def one_run(run: Run, pods: int, timeout: float, window: float, tmp: Path,
                  profile: Path | None = None, network_policy: bool = True) -> None:
    """One server on `run.store` (sqlite, or postgres: a fresh local PostgreSQL), N hollow
    nodes, `pods` pods; the figures go into `run` as they are measured. Without
    `network_policy` the server runs with --disable-network-policy (no policy is sent; with
    it, none exists here, so no pod's peer view is sent either)."""
    pg = dsn = None
    if run.store == "postgres":
        pg = PostgresCluster().start()
        dsn = pg.create_db(f"scale{run.nodes}")
    args = ["--datastore-endpoint", dsn] if dsn else []
    if not network_policy:
        args.append("--disable-network-policy")
    srv = ServerProcess(tmp / f"server-{run.store}-{run.nodes}", extra_args=args)
    try:
        srv.start(timeout=60)
        await _measure(run, srv, pods, timeout, window, tmp / f"nodes-{run.store}", profile)
    finally:
        srv.stop()
        if pg is not None:
            pg.destroy()


async def _measure(run: Run, srv: ServerProcess, pods: int, timeout: float, window: float,
                   tmp: Path, profile: Path | None) -> None:
    nodes = run.nodes
    fleet = HollowFleet(nodes, srv.url, srv.join_token(), tmp / str(nodes))
    ctx = client_ssl(srv.kubeconfig, tmp.parent)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=0)) as s:
            api = Api(srv, s)
            await asyncio.sleep(2)
            run.put("rss_idle", rss_mb(srv.proc.pid), "server_rss_idle", "MB")
            run.phase = f"{nodes} nodes joining"
            t0 = time.monotonic()
            await asyncio.wait_for(fleet.start(), timeout)
            await _wait(lambda: _at_least(api.ready_nodes(), nodes), timeout, f"{nodes} nodes "
                        f"Ready", 1.0)
            run.put("nodes_ready", time.monotonic() - t0, "nodes_ready", "s")
            run.put("connected", fleet.connected(), "nodes_connected", "nodes")
            # The hollow nodes' caches and sessions, millions of objects in this one process,
            # live on: a full collection of them paused every node at once (4.9 s at 30,000
            # pods), which 1,000 machines never do. Never scan them again.
            gc.freeze()
            if window:
                async with _profiled(srv, profile, f"heartbeats-{run.store}-n{nodes}"):
                    await _heartbeats(run, api, srv, window)
            else:
                await _idle(run, srv)
            if pods:
                run.phase = f"{pods} pods through Deployments"
                cpu0 = cpu_seconds(srv.proc.pid)
                async with _profiled(srv, profile, f"pods-{run.store}-n{nodes}"):
                    await pods_through_deployments(run, api, pods, timeout)
                run.put("rss_pods", rss_mb(srv.proc.pid), "server_rss_pods", "MB",
                        "< 1500 MB at 30,000 pods")
                emit(f"n{nodes}_{run.store}_server_cpu_per_pod",
                     (cpu_seconds(srv.proc.pid) - cpu0) * 1000 / pods, "ms")
                emit(f"n{nodes}_{run.store}_server_rss_per_pod",
                     (run.r["rss_pods"] - run.r["rss_nodes"]) * 1024 / pods, "KB")
            run.phase = "reconnect after a server restart"
            await reconnect_after_restart(run, srv, fleet, timeout, profile)
            run.phase = ""
    finally:
        await fleet.stop()


async def _heartbeats(run: Run, api: Api, srv: ServerProcess, window: float) -> None:
    """The heartbeat writes stored per second over a steady window, the server's CPU
    meanwhile, its RSS with the nodes and the oldest node Lease."""
    run.phase = "heartbeat window"
    nodes = run.nodes
    await asyncio.sleep(min(5.0, window))  # registrations settle
    rev0, cpu0, w0 = await api.revision(), cpu_seconds(srv.proc.pid), time.monotonic()
    await asyncio.sleep(window)
    rev1, cpu1, w1 = await api.revision(), cpu_seconds(srv.proc.pid), time.monotonic()
    run.put("rss_nodes", rss_mb(srv.proc.pid), "server_rss_nodes", "MB")
    emit(f"n{nodes}_{run.store}_server_rss_per_node",
         (run.r["rss_nodes"] - run.r["rss_idle"]) * 1024 / nodes, "KB")
    writes = (rev1 - rev0) / (w1 - w0)
    run.put("heartbeat_writes", writes, "heartbeat_writes", "writes/s")
    # each agent: a lease renewal every 10 s and, its status unchanged, a status report every
    # 5 min (on average: a window this soon after the joins, which posted it, sees none)
    expected = nodes / HEARTBEAT_SECONDS + nodes / STATUS_REPORT_SECONDS
    print(f"ratio: {writes / expected:.2f}   (heartbeat writes stored / sent by the {nodes} "
          f"nodes, {expected:.0f}/s)", flush=True)
    run.put("heartbeat_cpu", 100 * (cpu1 - cpu0) / (w1 - w0), "heartbeat_server_cpu", "%")
    run.put("lease_age_max", await api.oldest_lease_age(), "node_lease_age_max", "s", "< 40 s")


async def _idle(run: Run, srv: ServerProcess) -> None:
    """Without a heartbeat window (--window 0): the server's RSS and CPU with the nodes over
    5 s once they are Ready."""
    cpu0, w0 = cpu_seconds(srv.proc.pid), time.monotonic()
    await asyncio.sleep(5.0)
    run.put("rss_nodes", rss_mb(srv.proc.pid), "server_rss_nodes", "MB")
    run.put("idle_cpu", 100 * (cpu_seconds(srv.proc.pid) - cpu0) / (time.monotonic() - w0),
            "idle_server_cpu", "%")


async def reconnect_after_restart(run: Run, srv: ServerProcess, fleet: HollowFleet,
                                  timeout: float, profile: Path | None) -> None:
    """Restart the server (SIGTERM, then the same data dir and port): seconds from its
    /readyz until half, 90 % and every hollow node's tunnel are connected again, the dials
    that failed meanwhile (by error), the server's CPU and RSS by then. `profile`: py-spy
    flame graphs of the server and of the hollow nodes over the reconnect (_profiled)."""
    srv.stop()
    await _wait(lambda: _done(fleet.connected() == 0), timeout, "every tunnel down", 0.2)
    await asyncio.to_thread(srv.start, True, 60.0)
    failed0 = fleet.dial_errors()  # (not the dials refused while the server was down)
    t0, cpu0 = time.monotonic(), cpu_seconds(srv.proc.pid)
    marks = {"half": fleet.count // 2, "p90": fleet.count * 9 // 10}
    async with _profiled(srv, profile, f"reconnect-{run.store}-n{run.nodes}", "flamegraph"):
        while fleet.connected() < fleet.count:
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for "
                                   f"{fleet.count} tunnels back ({fleet.connected()} are)")
            for mark, at in list(marks.items()):
                if fleet.connected() >= at:
                    del marks[mark]
                    run.put(f"reconnect_{mark}", time.monotonic() - t0,
                            f"reconnect_{mark}_after_restart", "s")
            await asyncio.sleep(0.2)
        took = time.monotonic() - t0
    for mark in marks:  # (reached with the last tunnels, between two looks)
        run.put(f"reconnect_{mark}", took, f"reconnect_{mark}_after_restart", "s")
    run.put("reconnect", took, "reconnect_after_restart", "s", "< 60 s")
    run.put("reconnect_cpu", 100 * (cpu_seconds(srv.proc.pid) - cpu0) / took,
            "reconnect_server_cpu", "%")
    run.put("rss_reconnected", rss_mb(srv.proc.pid), "server_rss_reconnected", "MB")
    failed = fleet.dial_errors() - failed0
    run.put("dials_failed", sum(failed.values()), "reconnect_dials_failed", "dials")
    for why, count in sorted(failed.items()):
        print(f"# {count} dials failed: {why}", file=sys.stderr, flush=True)


@contextlib.asynccontextmanager
async def _profiled(srv: ServerProcess, profile: Path | None, name: str, fmt: str = "raw"):
    """py-spy on the server (`name`) and on this process, the hollow nodes (`hollow-name`),
    while the block runs, as collapsed stacks (raw, .txt) or a flame graph (flamegraph,
    .svg); the server's log is kept beside them. Nothing without `profile`."""
    if profile is None:
        yield
        return
    ext = {"raw": "txt", "flamegraph": "svg"}[fmt]
    spies = [_py_spy(srv.proc.pid, profile / f"{name}.{ext}", fmt),
             _py_spy(os.getpid(), profile / f"hollow-{name}.{ext}", fmt)]
    try:
        yield
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            await asyncio.to_thread(spy.wait, 60)
        shutil.copy(srv.log_path, profile / f"server-{name}.log")


def _py_spy(pid: int, out: Path, fmt: str) -> subprocess.Popen:
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--rate", "50",
                             "--format", fmt, "--output", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _done(value: bool) -> bool:
    return value


async def _at_least(value, n: int) -> bool:
    return (await value) >= n


# the figures compared, postgres / sqlite (key in Run.r, printed name)
_COMPARED = (("scheduled_per_s", "pods_scheduled_per_s"), ("get_p99", "api_get_p99"),
             ("list_p99", "api_list_p99"), ("create_p99", "api_create_p99"),
             ("rss_pods", "server_rss_pods"), ("reconnect", "reconnect_after_restart"))


def summary(runs: list[Run], sizes: list[int], stores: list[str]) -> None:
    """The ratios between the runs made so far (a figure a cut run lacks is skipped)."""
    done = {(run.store, run.nodes): run.r for run in runs}
    first = [done.get((stores[0], n)) for n in (sizes[0], sizes[-1])]
    if len(sizes) > 1 and all(r and "rss_nodes" in r for r in first):
        per = [(r["rss_nodes"] - r["rss_idle"]) / n for n, r in zip((sizes[0], sizes[-1]),
                                                                   first, strict=True)]
        print(f"ratio: {per[1] / per[0]:.2f}   (server RSS per node, {sizes[-1]} / {sizes[0]} "
              f"nodes, {stores[0]})")
    if len(stores) > 1:
        for n in sizes:
            pg, lite = done.get(("postgres", n)) or {}, done.get(("sqlite", n)) or {}
            for key, name in _COMPARED:
                if key in pg and key in lite:
                    print(f"ratio: {pg[key] / lite[key]:.2f}   ({name}, postgres / sqlite, "
                          f"{n} nodes)")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, action="append", help="a size (repeatable)")
    ap.add_argument("--pods-per-node", type=int, default=1)
    ap.add_argument("--pods", type=int, help="pods in all (instead of --pods-per-node)")
    ap.add_argument("--datastore", action="append", choices=("sqlite", "postgres"),
                    help="run on this datastore (repeatable: side by side; default sqlite)")
    ap.add_argument("--timeout", type=float, default=600, help="bound of each phase (s)")
    ap.add_argument("--window", type=float, default=20,
                    help="seconds of steady heartbeats measured (0: none)")
    ap.add_argument("--profile", type=Path,
                    help="keep py-spy flame graphs of the reconnect (server, hollow nodes) and "
                         "the server log here")
    ap.add_argument("--disable-network-policy", action="store_true",
                    help="the server's --disable-network-policy")
    args = ap.parse_args()
    # the hollow agents' reconnect warnings during the restart are expected: figures only
    logging.basicConfig(level=logging.ERROR)
    # the hollow nodes' caches are millions of objects in this process: the server's reason
    # (k3py/server/main.py) for fewer full collections holds here too
    gc.set_threshold(10_000, 10, 100)
    sizes = sorted(args.nodes or [100])
    stores = args.datastore or ["sqlite"]
    runs: list[Run] = []
    cuts: list[str] = []
    with tempfile.TemporaryDirectory(prefix="k3py-scale-") as d:
        try:
            for n in sizes:
                for store in stores:
                    run = Run(store, n)
                    runs.append(run)
                    try:
                        pods = n * args.pods_per_node if args.pods is None else args.pods
                        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                            runner.run(one_run(run, pods, args.timeout, args.window, Path(d),
                                               args.profile, not args.disable_network_policy))
                    except (TimeoutError, RuntimeError) as e:  # a bound: on to the next run
                        cuts.append(f"{store}, {n} nodes: cut during {run.phase}: {e}")
        except KeyboardInterrupt:
            cuts.append(f"{run.store}, {run.nodes} nodes: interrupted during {run.phase}")
    summary(runs, sizes, stores)
    if cuts:
        print(f"scale.py: run cut short ({'; '.join(cuts)}); the figures above are those "
              "measured", file=sys.stderr, flush=True)
        return 1
    return 0


def _loop_factory():
    """uvloop, as the server's, the probe's and the agent's loop: the hollow nodes share this
    machine's cores with the server, and on asyncio's own loop they took about 17 % more CPU
    a pod (py-spy's samples of this process while 10,000 pods were made, docs/ha.md).
    asyncio's loop where uvloop is missing."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of the server
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
