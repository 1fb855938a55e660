"""API server benchmark: cold start, idle RSS, GET / CREATE / LIST / watch fan-out latencies,
each next to its limit measured in the same run (a bare aiohttp handler; raw apsw inserts).

Run: python3 bench/api.py [--quick] [--realistic-only]. Prints `name: value unit` lines and
`ratio: x` lines.
Traffic goes only to 127.0.0.1; every loop is bounded in count and time."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.harness import ServerProcess, free_port, wait_for  # noqa: E402

TARGETS = {
    "cold_start": 1.0, "idle_rss": 70.0, "get_rps": 4000, "get_p99": 10.0, "create_rps": 1000,
    "create_p99": 25.0, "list_10k": 400.0, "fanout_p99": 100.0, "get_vs_bare": 0.6,
}


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def emit(name: str, value: float, unit: str = "", target: str = "") -> None:
    print(f"{name}: {value:.2f} {unit}".rstrip() + (f"   (target {target})" if target else ""),
          flush=True)


def client_ssl(kubeconfig: Path, tmp: Path) -> ssl.SSLContext:
    kc = yaml.safe_load(kubeconfig.read_text())
    user = kc["users"][0]["user"]
    ca = base64.b64decode(kc["clusters"][0]["cluster"]["certificate-authority-data"])
    cert = tmp / "admin.crt"
    key = tmp / "admin.key"
    cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
    key.write_bytes(base64.b64decode(user["client-key-data"]))
    ctx = ssl.create_default_context(cadata=ca.decode())
    ctx.check_hostname = False
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """The process's resident memory in MB (`field` "VmHWM": its peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) the process has used, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(session, method: str, urls, body_fn, duration: float, concurrency: int,
               max_requests: int) -> tuple[list[float], float]:
    lat: list[float] = []
    count = 0
    stop_at = time.perf_counter() + duration

    async def worker(wid: int) -> None:
        nonlocal count
        i = 0
        while time.perf_counter() < stop_at and count < max_requests:
            count += 1
            i += 1
            url = urls(wid, i)
            data = body_fn(wid, i) if body_fn else None
            t0 = time.perf_counter()
            async with session.request(method, url, data=data, headers={
                    "Content-Type": "application/json"}) as r:
                await r.read()
                if r.status >= 300:
                    raise RuntimeError(f"{method} {url} -> {r.status}")
            lat.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return lat, len(lat) / (time.perf_counter() - t0)


BARE_SERVER = textwrap.dedent("""
    import ssl, sys
    from aiohttp import web
    import uvloop
    body = open(sys.argv[3], 'rb').read()
    async def h(request):
        return web.Response(body=body, content_type='application/json')
    app = web.Application()
    app.router.add_get('/{tail:.*}', h)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(sys.argv[1], sys.argv[2])
    uvloop.install()
    web.run_app(app, host='127.0.0.1', port=int(sys.argv[4]), ssl_context=ctx,
                access_log=None, print=None)
""")


async def bench_server(srv: ServerProcess, tmp: Path, quick: bool) -> dict:
    import aiohttp
    ctx = client_ssl(srv.kubeconfig, tmp)
    conn = aiohttp.TCPConnector(ssl=ctx, limit=0)
    results: dict = {}
    async with aiohttp.ClientSession(connector=conn) as s:
        base = srv.url
        ns_url = f"{base}/api/v1/namespaces/default/configmaps"
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bench-get"},
              "data": {"k": "v" * 200}}
        import orjson
        async with s.post(ns_url, data=orjson.dumps(cm),
                          headers={"Content-Type": "application/json"}) as r:
            assert r.status in (201, 409), r.status
            stored = await r.read()
        (tmp / "body.json").write_bytes(stored)
        # GET, interleaved with the bare handler serving the same body so both see the
        # same machine load; the best round of each is compared
        dur = 3 if quick else 5
        bare_url, bare_proc = start_bare(tmp, srv)
        bare_ctx = ssl.create_default_context()
        bare_ctx.check_hostname = False
        bare_ctx.verify_mode = ssl.CERT_NONE
        best, bare_best = (0.0, 0.0, 0.0), 0.0
        try:
            async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=bare_ctx, limit=0)) as bs:
                for _ in range(2):
                    _, brps = await load(bs, "GET", lambda w, i: bare_url, None, dur, 16, 200000)
                    bare_best = max(bare_best, brps)
                    lat, rps = await load(s, "GET", lambda w, i: f"{ns_url}/bench-get", None,
                                          dur, 16, 200000)
                    if rps > best[0]:
                        best = (rps, pct(lat, 50), pct(lat, 99))
        finally:
            bare_proc.terminate()
            bare_proc.wait()
        results["get"] = best
        results["bare"] = bare_best
        # CREATE
        lat, rps = await load(s, "POST", lambda w, i: ns_url,
                              lambda w, i: orjson.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                                                         "metadata": {"name": f"c-{w}-{i}"},
                                                         "data": {"k": "v"}}),
                              dur, 16, 50000)
        results["create"] = (rps, pct(lat, 50), pct(lat, 99))
        # LIST 10k pods
        n = 2000 if quick else 10000
        pod_url = f"{base}/api/v1/namespaces/default/pods"
        # the pods are bound to an API-created node so the scheduler stays idle meanwhile
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "bench-node"},
                "status": {"allocatable": {"cpu": "1000", "memory": "1Ti", "pods": "20000"},
                           "capacity": {"cpu": "1000", "memory": "1Ti", "pods": "20000"}}}
        async with s.post(f"{base}/api/v1/nodes", data=orjson.dumps(node),
                          headers={"Content-Type": "application/json"}) as r:
            await r.read()

        def pod(w: int, i: int) -> bytes:
            return orjson.dumps({"apiVersion": "v1", "kind": "Pod",
                                 "metadata": {"name": f"p-{w}-{i}", "labels": {"app": "bench"}},
                                 "spec": {"nodeName": "bench-node",
                                          "containers": [{"name": "c", "image": "busybox:1.36",
                                                          "command": ["sleep", "3600"]}]}})
        lat_c, _ = await load(s, "POST", lambda w, i: pod_url, pod, 120, 16, n)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            async with s.get(pod_url) as r:
                body = await r.read()
            times.append((time.perf_counter() - t0) * 1000)
        items = len(orjson.loads(body)["items"])
        results["list"] = (items, statistics.median(times), min(times))
        # watch fan-out: 500 watchers on configmaps, one update each round
        watchers = 100 if quick else 500
        wurl = f"{base}/api/v1/namespaces/default/configmaps?watch=true&fieldSelector=metadata.name%3Dfanout"
        async with s.post(ns_url, data=orjson.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                                                     "metadata": {"name": "fanout"},
                                                     "data": {"n": "0"}}),
                          headers={"Content-Type": "application/json"}) as r:
            rv = orjson.loads(await r.read())["metadata"]["resourceVersion"]
        received: list[list[float]] = []
        sent_at: dict[str, float] = {}

        async def watcher(ready: asyncio.Event, counter: list[int]) -> None:
            async with s.get(f"{wurl}&resourceVersion={rv}",
                             timeout=aiohttp.ClientTimeout(total=None)) as r:
                counter[0] += 1
                if counter[0] == watchers:
                    ready.set()
                async for line in r.content:
                    ev = orjson.loads(line)
                    n_ = ev["object"]["data"]["n"]
                    if n_ in sent_at:
                        received.append([time.perf_counter() - sent_at[n_]])
        ready = asyncio.Event()
        counter = [0]
        tasks = [asyncio.create_task(watcher(ready, counter)) for _ in range(watchers)]
        await asyncio.wait_for(ready.wait(), 60)
        await asyncio.sleep(0.5)
        rounds = 5 if quick else 10
        for k in range(1, rounds + 1):
            received.clear()
            sent_at[str(k)] = time.perf_counter()
            async with s.patch(f"{ns_url}/fanout", data=orjson.dumps({"data": {"n": str(k)}}),
                               headers={"Content-Type": "application/merge-patch+json"}) as r:
                await r.read()
            deadline = time.perf_counter() + 10
            while len(received) < watchers and time.perf_counter() < deadline:
                await asyncio.sleep(0.005)
            results.setdefault("fanout", []).extend(x[0] * 1000 for x in received)
            results.setdefault("fanout_missing", 0)
            results["fanout_missing"] += watchers - len(received)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return results


def start_bare(tmp: Path, srv: ServerProcess) -> tuple[str, subprocess.Popen]:
    """The peer: a bare aiohttp handler returning the stored JSON body, same TLS cert."""
    port = free_port()
    tls = srv.data_dir / "server" / "tls"
    cert, key = tls / "serving-kube-apiserver.crt", tls / "serving-kube-apiserver.key"
    script = tmp / "bare.py"
    script.write_text(BARE_SERVER)
    proc = subprocess.Popen([sys.executable, str(script), str(cert), str(key),
                             str(tmp / "body.json"), str(port)])
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    import urllib.request
    url = f"https://127.0.0.1:{port}/x"
    try:
        wait_for(lambda: urllib.request.urlopen(url, context=ctx, timeout=1).status == 200, 20)
    except BaseException:
        proc.terminate()
        raise
    return url, proc


def realistic_pod(w: int, i: int) -> bytes:
    """A ~1.8 KB pod as workloads write them: two containers with env, ports, resources and
    probes; a nodeSelector nobody matches, so it stays Pending (the scheduler writes its
    Unschedulable condition, as it would)."""
    import orjson

    def container(name: str) -> dict:
        return {"name": name, "image": "registry.example.com/team/app:1.2.3",
                "command": ["/app/server", "--port=8080", "--log-level=info"],
                "env": [{"name": f"ENV_{k}", "value": f"value-{k}-abcdefgh"} for k in range(8)],
                "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                              "limits": {"cpu": "500m", "memory": "256Mi"}},
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080},
                                   "periodSeconds": 5},
                "livenessProbe": {"httpGet": {"path": "/livez", "port": 8080},
                                  "periodSeconds": 10, "failureThreshold": 3}}
    return orjson.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"r-{w}-{i}", "labels": {"app": "bench", "tier": "web", "w": str(w)},
                     "annotations": {"example.com/owner": "team-a"}},
        "spec": {"containers": [container("app"), container("sidecar")],
                 "nodeSelector": {"bench.k3py.io/none": "x"}}})


async def bench_realistic_pods(srv: ServerProcess, tmp: Path, n: int) -> dict:
    """Server RSS per realistic pod and pod creates/s at concurrency 16, with a pod watch open
    (and read) all along; ConfigMap creates/s on the same server just before, as the peer."""
    import aiohttp
    import orjson
    ctx = client_ssl(srv.kubeconfig, tmp)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=0)) as s:
        cm_url = f"{srv.url}/api/v1/namespaces/default/configmaps"
        cpu0 = cpu_seconds(srv.proc.pid)
        cm_lat, cm_rps = await load(s, "POST", lambda w, i: cm_url,
                                    lambda w, i: orjson.dumps({
                                        "apiVersion": "v1", "kind": "ConfigMap",
                                        "metadata": {"name": f"c-{w}-{i}"}, "data": {"k": "v"}}),
                                    5, 16, 20000)
        cm_cpu = (cpu_seconds(srv.proc.pid) - cpu0) / len(cm_lat)
        url = f"{srv.url}/api/v1/namespaces/default/pods"
        async with s.get(url + "?watch=true", timeout=aiohttp.ClientTimeout(total=None)) as wr:
            async def drain() -> None:
                with contextlib.suppress(aiohttp.ClientError):
                    async for _ in wr.content.iter_any():
                        pass
            reader = asyncio.create_task(drain())
            await asyncio.sleep(2)
            before, cpu0 = rss_mb(srv.proc.pid), cpu_seconds(srv.proc.pid)
            lat, rps = await load(s, "POST", lambda w, i: url, realistic_pod, 300, 16, n)
            await asyncio.sleep(5)  # the scheduler's condition writes and the watch settle
            after, cpu1 = rss_mb(srv.proc.pid), cpu_seconds(srv.proc.pid)
            reader.cancel()
    # the pods' CPU includes the scheduler's and the watch's work after the last create
    return {"pod_rps": rps, "cm_rps": cm_rps, "kb_per_pod": (after - before) * 1024 / n,
            "pod_cpu_ms": (cpu1 - cpu0) * 1000 / len(lat), "cm_cpu_ms": cm_cpu * 1000,
            "pod_p99": pct(lat, 99)}


def raw_apsw_inserts(tmp: Path, seconds: float = 3.0) -> float:
    import apsw
    db = apsw.Connection(str(tmp / "raw.db"))
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE kv (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, value BLOB)")
    value = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":{"k":"v"}}'
    n = 0
    stop = time.perf_counter() + seconds
    t0 = time.perf_counter()
    while time.perf_counter() < stop:
        with db:
            db.execute("INSERT INTO kv(name, value) VALUES (?, ?)", (f"k{n}", value))
        n += 1
    return n / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes (CI smoke)")
    ap.add_argument("--realistic-only", action="store_true",
                    help="only the realistic pods' creates/s and RSS (and their peer)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.realistic_only:
            realistic(tmp, args.quick)
            return 0
        starts = []
        for i in range(3):
            srv = ServerProcess(tmp / f"cold{i}")
            t0 = time.perf_counter()
            srv.start(timeout=30)
            starts.append(time.perf_counter() - t0)
            srv.stop()
        emit("cold_start_to_readyz", statistics.median(starts), "s", "< 1.0 s")
        srv = ServerProcess(tmp / "main")
        srv.start()
        try:
            time.sleep(2.0)
            idle = rss_mb(srv.proc.pid)
            emit("idle_rss", idle, "MB", "< 70 MB")
            res = asyncio.run(bench_server(srv, tmp, args.quick))
            rps, p50, p99 = res["get"]
            emit("get_throughput", rps, "req/s", ">= 4000")
            emit("get_p50", p50, "ms")
            emit("get_p99", p99, "ms", "< 10 ms")
            rps_c, c50, c99 = res["create"]
            emit("create_throughput", rps_c, "req/s", ">= 1000")
            emit("create_p50", c50, "ms")
            emit("create_p99", c99, "ms", "< 25 ms")
            items, med, best = res["list"]
            emit(f"list_{items}_pods_median", med, "ms", "< 400 ms")
            emit(f"list_{items}_pods_best", best, "ms")
            fan = res.get("fanout", [])
            emit("fanout_watchers_events", len(fan), "events")
            emit("fanout_p50", pct(fan, 50), "ms")
            emit("fanout_p99", pct(fan, 99), "ms", "< 100 ms")
            emit("fanout_missing_events", res.get("fanout_missing", 0), "events")
            bare = res["bare"]
            emit("bare_aiohttp_get_throughput", bare, "req/s")
            print(f"ratio: {rps / bare:.2f}   (k3py GET / bare aiohttp GET, target >= 0.6)")
            raw = raw_apsw_inserts(tmp)
            emit("raw_apsw_insert_throughput", raw, "rows/s")
            print(f"ratio: {rps_c / raw:.2f}   (k3py CREATE / raw apsw single-row commits)")
            emit("rss_after_load", rss_mb(srv.proc.pid), "MB")
        finally:
            srv.stop()
        realistic(tmp, args.quick)
    return 0


def realistic(tmp: Path, quick: bool) -> None:
    """Realistic pods on a fresh server, so its RSS growth is theirs alone."""
    n = 1000 if quick else 5000
    srv = ServerProcess(tmp / "pods")
    srv.start()
    try:
        r = asyncio.run(bench_realistic_pods(srv, tmp, n))
        emit(f"realistic_pod_create_throughput_{n}", r["pod_rps"], "req/s", ">= 1000")
        emit("configmap_create_throughput_same_server", r["cm_rps"], "req/s")
        emit("realistic_pod_create_p99", r["pod_p99"], "ms")
        print(f"ratio: {r['pod_rps'] / r['cm_rps']:.2f}   (pod creates / ConfigMap creates)")
        emit("server_cpu_per_realistic_pod_create", r["pod_cpu_ms"], "ms")
        emit("server_cpu_per_configmap_create", r["cm_cpu_ms"], "ms")
        print(f"ratio: {r['pod_cpu_ms'] / r['cm_cpu_ms']:.2f}   (server CPU per pod create / "
              "per ConfigMap create)")
        emit("server_rss_per_realistic_pod", r["kb_per_pod"], "KB", "< 25 KB")
    finally:
        srv.stop()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
