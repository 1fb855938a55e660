"""Bad input against a live server: the hostile-body families of
tests/integration/test_hostile_bodies.py, each a step below and above its limit (status, time,
RSS growth and peak growth of the server per input), then slow connections (slowloris: half
never finish TLS, half send their headers a line at a time) held open against the API port
while a normal client's GET latency is measured, next to the same client on the idle server.

Run: python3 bench/security.py [--quick] [--slow N] [--only FAMILY]. Prints `name: value unit` and `ratio: x`
lines. Traffic goes only to 127.0.0.1; every loop is bounded in count and time."""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.api import client_ssl, emit, pct, rss_mb  # noqa: E402
from tests.harness import ServerProcess  # noqa: E402

CM = "/api/v1/namespaces/default/configmaps"
RSS_LIMIT_MB = 200.0  # the bound: no input grows the server by more


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)


# ---------------------------------------------------------------- the families

def _cm(name: str, **extra) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, **extra}


def alias_bomb(levels: int) -> tuple[str, str, bytes, str]:
    lines = ["apiVersion: v1", "kind: ConfigMap", f"metadata: {{name: bomb{levels}}}", "data:",
             '  a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"  a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "POST", CM, "\n".join(lines).encode(), "application/yaml"


def json_nesting(depth: int) -> tuple[str, str, bytes, str]:
    return "POST", CM, b"[" * depth + b"]" * depth, "application/json"


def yaml_nesting(depth: int) -> tuple[str, str, bytes, str]:
    return "POST", CM, b"[" * depth + b"]" * depth, "application/yaml"


def merge_patch_nesting(depth: int) -> tuple[str, str, bytes, str]:
    body = b'{"data":' * depth + b"{}" + b"}" * depth
    return "PATCH", CM + "/target", body, "application/merge-patch+json"


def json_patch_doubling(ops: int) -> tuple[str, str, bytes, str]:
    # each copy puts the whole of /x into /x: its size doubles with every op
    patch = [{"op": "add", "path": "/x", "value": {"v": "x" * 1024}}]
    patch += [{"op": "copy", "from": "/x", "path": f"/x/c{i}"} for i in range(ops)]
    return "PATCH", CM + "/target", json.dumps(patch).encode(), "application/json-patch+json"


def body_bytes(size: int) -> tuple[str, str, bytes, str]:
    head = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"big%d"},"data":{"a":"' \
        % size
    return "POST", CM, head + b"x" * max(0, size - len(head) - 3) + b'"}}', "application/json"


def stored_bytes(kib: int) -> tuple[str, str, bytes, str]:
    # control characters: 1 byte of data, 6 in the stored JSON ("\u0001")
    body = _cm(f"escaped{kib}", data={"a": "\x01" * (kib * 1024)})
    return "POST", CM, json.dumps(body).encode(), "application/json"


def configmap_keys(n: int) -> tuple[str, str, bytes, str]:
    body = _cm(f"keys{n}", data={f"k{i}": "" for i in range(n)})
    return "POST", CM, json.dumps(body).encode(), "application/json"


def labels(n: int) -> tuple[str, str, bytes, str]:
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": f"labels{n}", "labels": {f"l{i}": "v" for i in range(n)}}}
    return "POST", CM, json.dumps(body).encode(), "application/json"


def finalizers_strategic(n: int) -> tuple[str, str, bytes, str]:
    body = {"metadata": {"finalizers": [f"example.com/f{i}" for i in range(n)]}}
    return "PATCH", CM + "/target", json.dumps(body).encode(), \
        "application/strategic-merge-patch+json"


FAMILIES: list[tuple[str, Callable, list[int], list[int]]] = [
    # (name, body maker, sizes for --quick, sizes)
    ("yaml_alias_bomb", alias_bomb, [9], [6, 7, 8, 9]),
    ("json_nesting", json_nesting, [300], [100, 300, 2000, 20000]),
    ("yaml_nesting", yaml_nesting, [3000], [100, 3000, 20000]),
    ("merge_patch_nesting", merge_patch_nesting, [1000], [100, 1000, 10000]),
    ("json_patch_copy_doubling", json_patch_doubling, [24], [10, 22, 24, 30]),
    ("body_bytes", body_bytes, [3 * 1024 * 1024 + 1],
     [3 * 1024 * 1024 - 4096, 3 * 1024 * 1024 + 1]),
    ("stored_object_kib", stored_bytes, [300], [200, 300, 400]),
    ("configmap_keys", configmap_keys, [300000], [10000, 100000, 300000]),
    ("labels", labels, [250000], [10000, 250000]),
    ("finalizers_strategic_merge", finalizers_strategic, [60000],
     [1000, 60000, 70000, 80000]),
]


def hostile_bodies(srv: ServerProcess, ctx: ssl.SSLContext, quick: bool, only: str = "") -> None:
    pid = srv.proc.pid
    srv.kubectl("create", "configmap", "target")
    idle = rss_mb(pid)
    emit("server_rss_before_hostile_inputs", idle, "MB")
    count = fives = 0
    worst_peak = worst_growth = 0.0
    for name, make, quick_sizes, sizes in FAMILIES:
        if only and name != only:
            continue
        for size in quick_sizes if quick else sizes:
            method, path, body, ctype = make(size)
            reset_peak(pid)
            before = rss_mb(pid)
            req = urllib.request.Request(srv.url + path, data=body, method=method,
                                         headers={"Content-Type": ctype,
                                                  "Accept": "application/json"})
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(req, context=ctx, timeout=60) as r:
                    status = r.status
            except urllib.error.HTTPError as e:
                status = e.code
            except (TimeoutError, OSError):
                status = 0  # no answer within 60 s: a hang
            took = time.perf_counter() - t0
            growth, peak = rss_mb(pid) - before, rss_mb(pid, "VmHWM") - before
            tag = f"hostile_{name}_{size}"
            print(f"{tag}_status: {status}", flush=True)
            emit(f"{tag}_seconds", took, "s")
            emit(f"{tag}_rss_growth", growth, "MB")
            emit(f"{tag}_rss_peak_growth", peak, "MB")
            count += 1
            fives += status >= 500 or status == 0
            worst_peak, worst_growth = max(worst_peak, peak), max(worst_growth, growth)
    print(f"hostile_inputs: {count}\nhostile_5xx_or_hung: {fives}", flush=True)
    emit("hostile_worst_rss_growth", worst_growth, "MB")
    emit("hostile_worst_rss_peak_growth", worst_peak, "MB")
    emit("server_rss_after_hostile_inputs", rss_mb(pid), "MB")
    print(f"ratio: {worst_peak / RSS_LIMIT_MB:.3f}   (worst peak growth / the 200 MB bound)")


# ---------------------------------------------------------------- slow connections

async def get_latencies(url: str, ctx: ssl.SSLContext, n: int, seconds: float) -> list[float]:
    """A normal client: n GETs one after another on one keep-alive connection (bounded)."""
    out: list[float] = []
    deadline = time.perf_counter() + seconds
    conn = aiohttp.TCPConnector(ssl=ctx, limit=1)
    async with aiohttp.ClientSession(connector=conn) as s:
        for _ in range(n):
            if time.perf_counter() > deadline:
                break
            t0 = time.perf_counter()
            try:
                async with s.get(url + "/api/v1/namespaces/default",
                                 timeout=aiohttp.ClientTimeout(total=10)) as r:
                    await r.read()
                    ok = r.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            out.append((time.perf_counter() - t0) * 1000 if ok else 10000.0)
    return out


async def slowloris(port: int, count: int, hold: float, url: str, ctx: ssl.SSLContext,
                    gets: int) -> tuple[int, int, list[float]]:
    """Open `count` slow connections (half silent TCP, half TLS sending a header line every
    2 s), measure the normal client's GETs meanwhile; (opened, still open at the end,
    latencies)."""
    raw_ctx = ssl.create_default_context()
    raw_ctx.check_hostname = False
    raw_ctx.verify_mode = ssl.CERT_NONE
    writers: list[asyncio.StreamWriter] = []
    stop = time.perf_counter() + hold

    async def one(i: int) -> None:
        try:
            _, w = await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", port, ssl=raw_ctx if i % 2 else None), 15)
        except (OSError, TimeoutError, ssl.SSLError):
            return
        writers.append(w)
        if not i % 2:
            return  # silent: never starts TLS
        try:
            w.write(b"GET /api/v1/namespaces HTTP/1.1\r\nHost: x\r\n")
            while time.perf_counter() < stop:
                await asyncio.sleep(2)
                w.write(b"X-Slow: %d\r\n" % i)
                await w.drain()
        except (OSError, ConnectionError):
            pass

    tasks = []
    for start in range(0, count, 100):  # in batches: the server's backlog is 1024
        tasks += [asyncio.create_task(one(i)) for i in range(start, min(count, start + 100))]
        await asyncio.sleep(0.05)
    await asyncio.sleep(3)  # let the handshakes finish
    lat = await get_latencies(url, ctx, gets, max(5.0, stop - time.perf_counter()))
    still = sum(1 for w in writers if not w.is_closing() and not w.transport.is_closing())
    opened = len(writers)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for w in writers:
        w.close()
    return opened, still, lat


def slow_connections(srv: ServerProcess, ctx: ssl.SSLContext, count: int, gets: int,
                     hold: float) -> None:
    idle = asyncio.run(get_latencies(srv.url, ctx, gets, 30))
    before = rss_mb(srv.proc.pid)
    opened, still, loaded = asyncio.run(slowloris(srv.port, count, hold, srv.url, ctx, gets))
    print(f"slow_connections_opened: {opened}\n"
          f"slow_connections_still_open_after_measuring: {still}", flush=True)
    emit("slow_connections_rss_growth", rss_mb(srv.proc.pid) - before, "MB")
    emit("get_p50_idle", pct(idle, 50), "ms")
    emit("get_p95_idle", pct(idle, 95), "ms")
    emit("get_p50_under_slow_connections", pct(loaded, 50), "ms")
    emit("get_p95_under_slow_connections", pct(loaded, 95), "ms")
    emit("get_max_under_slow_connections", max(loaded or [float("nan")]), "ms")
    print(f"get_failed_under_slow_connections: {sum(1 for v in loaded if v >= 10000.0)}",
          flush=True)
    print(f"ratio: {pct(loaded, 50) / pct(idle, 50):.2f}   (GET p50 with {opened} slow "
          f"connections open / idle)")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one size per family, 200 slow "
                    "connections")
    ap.add_argument("--slow", type=int, default=0, help="slow connections (default 2000)")
    ap.add_argument("--only", default="", choices=[f[0] for f in FAMILIES],
                    help="this hostile-body family alone, no slow connections")
    args = ap.parse_args()
    count = args.slow or (200 if args.quick else 2000)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        srv = ServerProcess(tmp / "srv").start()
        try:
            ctx = client_ssl(srv.kubeconfig, tmp)
            hostile_bodies(srv, ctx, args.quick, args.only)
            if args.only:
                return 0
            slow_connections(srv, ctx, count, 50 if args.quick else 200,
                             8.0 if args.quick else 25.0)
        finally:
            srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
