"""Network benchmark, one run on one machine: a `k3py server` and one `k3py agent` with real
podman pods.

- HTTP from a pod to a Service's ClusterIP (the agent's nftables DNAT) next to the same
  backend pod's IP directly: req/s and p99 of small keep-alive requests at a fixed
  concurrency, the two interleaved round by round (target ratio >= 0.9).
- DNS from a pod: A queries for the cluster's Service names against the node's DNS (the
  agent's server on the cluster DNS IP) next to Debian's dnsmasq serving the same records
  (one hosts line per name) on this machine: queries/s and p99 at a fixed number of queries
  in flight, interleaved (target >= 0.5 x dnsmasq).
- The agent's extra RSS for N Services with M endpoints in all (default 500 / 2,000: selector-
  less Services with their own EndpointSlices), measured once the agent has their DNS
  records and nftables rules (target < 10 MB).
- The tunnel path to a node without a route: a second cluster, a server and two agents in
  network namespaces with a direct link (tests/integration/twonodes.py); HTTP from a pod on
  one node to a pod on the other by pod IP, over the host-gw route (link up) and through the
  tunnel (link down: agent -> server -> agent), round by round: req/s and p99, and the ratio;
  then one bulk upload each way of --tunnel-mib MiB (MB/s, and through the tunnel the peak
  RSS growth of the server and both agents: flow control keeps it to a few windows).

Run: python3 bench/network.py [--services 500] [--endpoints 2000] [--seconds 5] [--rounds 2]
[--concurrency 16] [--in-flight 8] [--settle 3] [--tunnel-concurrency 4] [--tunnel-mib 200].
Needs podman, nft, dnsmasq (scripts/setup.sh) and root (`ip netns` for the tunnel part). Prints `name: value unit` lines and
`ratio: x` lines; exits 1 with a one-line reason when a figure cannot be measured. Traffic
stays on this machine (the pods' bridge, 127.0.0.1, the node's own address); every loop is
bounded in count and time; the server, the agent, dnsmasq and the pods are removed at the end,
even on failure. The cluster DNS IP is 10.43.0.53, not the default, so that a cluster left
running on this host does not answer for this one."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rdatatype

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.api import emit, pct, rss_mb  # noqa: E402
from bench.pods import (  # noqa: E402
    NODE_LABEL,
    Unmeasurable,
    guarded_run,
    node_ready,
    remove_podman_pods,
    start_agent,
)
from tests.harness import ServerProcess, free_port, sampling_rss, wait_for  # noqa: E402
from tests.integration.agents import PY_IMAGE, build_python_image  # noqa: E402
from tests.integration.twonodes import Cluster, two_agent_cluster  # noqa: E402

DNS_IP = "10.43.0.53"
DOMAIN = "cluster.local"
DNSPYTHON = os.path.dirname(dns.__file__)  # mounted into the client pod (pure Python)
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nContent-Type: text/plain\r\n\r\nhello\n"

# the backend: answers every request on a kept-alive connection with RESPONSE
BACKEND = textwrap.dedent("""
    import asyncio
    RESPONSE = %r
    async def serve(r, w):
        try:
            while True:
                await r.readuntil(b"\\r\\n\\r\\n")
                w.write(RESPONSE)
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()
    async def main():
        srv = await asyncio.start_server(serve, "0.0.0.0", 8080, backlog=1024)
        print("ready", flush=True)
        await srv.serve_forever()
    asyncio.run(main())
""") % RESPONSE

# the bulk sink: reads each connection to its end, then answers the byte count
SINK = textwrap.dedent("""
    import socket
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 9000))
    s.listen(8)
    while True:
        c, _ = s.accept()
        n = 0
        while data := c.recv(1 << 20):
            n += len(data)
        c.sendall(str(n).encode())
        c.close()
""")

# the bulk client: argv[2] MiB to argv[1]:9000, the bytes the sink counted and the seconds
BULK = textwrap.dedent("""
    import json, os, socket, sys, time
    block, deadline = os.urandom(1 << 20), time.monotonic() + 20
    while True:  # the path may be switching (the route gone, the node's rules not yet loaded)
        try:
            s = socket.create_connection((sys.argv[1], 9000), timeout=60)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    t0 = time.monotonic()
    with s:
        for _ in range(int(sys.argv[2])):
            s.sendall(block)
        s.shutdown(socket.SHUT_WR)
        got = int(s.recv(64) or 0)
    print("RESULT " + json.dumps({"bytes": got, "took": time.monotonic() - t0}), flush=True)
""")

# the client: the rounds of every target, HTTP then DNS, one JSON line at the end
CLIENT = textwrap.dedent("""
    import asyncio, json, random, sys, time
    sys.path.insert(0, "/opt/py")
    import dns.message, dns.rcode
    p = json.loads(sys.argv[1])
    REQUEST = b"GET / HTTP/1.1\\r\\nHost: bench\\r\\n\\r\\n"
    RESPONSE = p["response"].encode()

    async def http(ip, port):
        lat, errors = [], 0
        end, left = time.monotonic() + p["seconds"], p["max_requests"]
        async def worker():
            nonlocal errors, left
            r, w = await asyncio.wait_for(asyncio.open_connection(ip, port), 5)
            try:
                while time.monotonic() < end and left > 0:
                    left -= 1
                    t0 = time.perf_counter()
                    w.write(REQUEST)
                    got = await asyncio.wait_for(r.readexactly(len(RESPONSE)), 5)
                    lat.append(time.perf_counter() - t0)
                    errors += got != RESPONSE
            finally:
                w.close()
        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(p["concurrency"])))
        return lat, errors, time.monotonic() - t0

    class Answers(asyncio.DatagramProtocol):
        def __init__(self):
            self.waiting = None
        def datagram_received(self, data, addr):
            if self.waiting is not None and not self.waiting.done():
                self.waiting.set_result(data)

    async def dns_round(ip, port):
        loop = asyncio.get_running_loop()
        lat, errors = [], 0
        end, left = time.monotonic() + p["seconds"], p["max_queries"]
        async def worker(k):
            nonlocal errors, left
            tr, proto = await loop.create_datagram_endpoint(Answers, remote_addr=(ip, port))
            names = p["names"][k::p["in_flight"]] or p["names"]
            queries = []
            for name in names:
                q = dns.message.make_query(name, "A")
                queries.append((q.id, q.to_wire()))
            i = 0
            try:
                while time.monotonic() < end and left > 0:
                    left -= 1
                    qid, wire = queries[i % len(queries)]
                    i += 1
                    proto.waiting = loop.create_future()
                    t0 = time.perf_counter()
                    tr.sendto(wire)
                    try:
                        data = await asyncio.wait_for(proto.waiting, 1.0)
                    except asyncio.TimeoutError:
                        errors += 1
                        continue
                    lat.append(time.perf_counter() - t0)
                    m = dns.message.from_wire(data)
                    errors += m.id != qid or m.rcode() != dns.rcode.NOERROR or not m.answer
            finally:
                tr.close()
        t0 = time.monotonic()
        await asyncio.gather(*(worker(k) for k in range(p["in_flight"])))
        return lat, errors, time.monotonic() - t0

    async def main():
        out = {}
        for kind, run, targets in (("http", http, p["http"]), ("dns", dns_round, p["dns"])):
            for _ in range(p["rounds"]):
                for name, ip, port in targets:
                    lat, errors, took = await run(ip, port)
                    r = out.setdefault(name, {"lat": [], "errors": 0, "took": 0.0})
                    r["lat"] += [x * 1000 for x in lat]
                    r["errors"] += errors
                    r["took"] += took
        print("RESULT " + json.dumps(out), flush=True)
    asyncio.run(main())
""")


def pod(name: str, node: str, command: list[str], labels: dict | None = None,
        dnspython: bool = False) -> dict:
    spec: dict = {"nodeName": node, "restartPolicy": "Never",
                  "terminationGracePeriodSeconds": 0, "containers": [{
                      "name": "c", "image": PY_IMAGE, "imagePullPolicy": "Never",
                      "command": command}]}
    if dnspython:
        spec["volumes"] = [{"name": "dnspython", "hostPath": {"path": DNSPYTHON,
                                                              "type": "Directory"}}]
        spec["containers"][0]["volumeMounts"] = [{"name": "dnspython",
                                                  "mountPath": "/opt/py/dns",
                                                  "readOnly": True}]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def service_objects(services: int, endpoints: int) -> list[dict]:
    """Selector-less Services, each with an EndpointSlice of its share of the endpoints."""
    objs: list[dict] = []
    for i in range(services):
        n = endpoints // services + (1 if i < endpoints % services else 0)
        name = f"bench-svc-{i}"
        objs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                     "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
        objs.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-1", "labels": {
                "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": "bench.k3py.io"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [f"10.42.{200 + (i * 8 + j) // 250}."
                                         f"{(i * 8 + j) % 250 + 1}"],
                           "conditions": {"ready": True}} for j in range(n)]})
    return objs


def create_all(srv: ServerProcess, objs: list[dict], tmp: Path) -> None:
    path = tmp / "objects.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}))
    out = srv.kubectl("create", "--validate=false", "-f", str(path), check=False,
                      timeout=600)
    if out.returncode != 0:
        raise Unmeasurable(f"creating the bench objects failed: {out.stderr.strip()[-300:]}")


def resolve(name: str, server: str, port: int = 53) -> str | None:
    try:
        answer = dns.query.udp(dns.message.make_query(name, "A"), server, timeout=1, port=port)
    except (OSError, dns.exception.DNSException):
        return None
    for rrset in answer.answer:
        if rrset.rdtype == dns.rdatatype.A:
            return rrset[0].address
    return None


def rss_settled(pid: int, seconds: float) -> float:
    """The median of a few RSS samples over `seconds` (MB)."""
    samples = []
    for _ in range(5):
        samples.append(rss_mb(pid))
        time.sleep(seconds / 5)
    return pct(samples, 50)


def start_dnsmasq(tmp: Path, records: dict[str, str], ip: str, port: int) -> subprocess.Popen:
    hosts = tmp / "dnsmasq.hosts"
    hosts.write_text("".join(f"{addr} {name}\n" for name, addr in records.items()))
    return subprocess.Popen(
        ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
         "--no-hosts", f"--addn-hosts={hosts}", f"--listen-address={ip}", "--bind-interfaces",
         f"--port={port}", "--pid-file=", "--user=root", "--cache-size=10000",
         "--log-facility=-"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def on_loopback(ip: str) -> bool:
    out = subprocess.run(["ip", "-o", "addr", "show", "dev", "lo"], capture_output=True,
                         text=True, timeout=10)
    return f" {ip}/" in out.stdout


def run(args: argparse.Namespace, tmp: Path, node: str, started: dict) -> None:
    build_python_image()
    started["dns_ip_added"] = not on_loopback(DNS_IP)  # the agent adds it; removed at the end
    srv = ServerProcess(tmp / "srv", extra_args=["--cluster-dns", DNS_IP])
    started["server"] = srv
    srv.start()
    agent = start_agent(srv, tmp, node)
    started["agent"] = agent
    wait_for(lambda: node_ready(srv, node, agent), 90, 0.5, f"node {node} Ready")
    node_ip = next(a["address"] for a in srv.kubectl_json("get", "node", node)["status"]
                   ["addresses"] if a["type"] == "InternalIP")
    wait_for(lambda: resolve(f"kubernetes.default.svc.{DOMAIN}", DNS_IP), 60, 0.5,
             f"the agent's DNS answering on {DNS_IP}")

    # -- the agent's extra RSS for the Services and endpoints
    before = rss_settled(agent.pid, args.settle)
    create_all(srv, service_objects(args.services, args.endpoints), tmp)
    last = f"bench-svc-{args.services - 1}"
    last_ip = srv.kubectl_json("get", "service", last)["spec"]["clusterIP"]
    wait_for(lambda: resolve(f"{last}.default.svc.{DOMAIN}", DNS_IP) == last_ip, 120, 0.5,
             f"the agent's DNS answering for {last}")
    wait_for(lambda: last_ip in subprocess.run(["nft", "list", "ruleset"], capture_output=True,
                                               text=True, timeout=30).stdout,
             60, 0.5, f"the agent's nftables rules for {last}")
    after = rss_settled(agent.pid, args.settle)
    emit("services", args.services)
    emit("endpoints", args.endpoints)
    emit("agent_rss_before", before, "MB")
    emit("agent_rss_with_services", after, "MB")
    emit("agent_extra_rss", after - before, "MB", "< 10 MB")
    print(f"ratio: {(after - before) / 10:.2f}   (the agent's extra RSS for {args.services} "
          f"Services / {args.endpoints} endpoints / the 10 MB target, target < 1)", flush=True)

    # -- pods: the backend behind a Service, the client
    srv.kubectl("apply", "-f", "-", input=json.dumps(pod(
        "bench-web", node, ["python3", "-c", BACKEND], labels={"app": "bench-web"})))
    srv.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "bench-web"},
        "spec": {"selector": {"app": "bench-web"},
                 "ports": [{"port": 80, "targetPort": 8080}]}}))
    wait_for(lambda: srv.kubectl_json("get", "pod", "bench-web")["status"].get("phase")
             == "Running", 90, 0.5, "bench-web Running")
    web_ip = srv.kubectl_json("get", "pod", "bench-web")["status"]["podIP"]
    svc_ip = srv.kubectl_json("get", "service", "bench-web")["spec"]["clusterIP"]

    records = {f"bench-svc-{i}.default.svc.{DOMAIN}": "" for i in range(args.services)}
    for svc in srv.kubectl_json("get", "services", "-A")["items"]:
        key = f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc.{DOMAIN}"
        if key in records:
            records[key] = svc["spec"]["clusterIP"]
    dnsmasq_port = free_port()
    dnsmasq = start_dnsmasq(tmp, records, node_ip, dnsmasq_port)
    started["dnsmasq"] = dnsmasq
    first = next(iter(records))
    wait_for(lambda: resolve(first, node_ip, dnsmasq_port) == records[first], 30, 0.3,
             "dnsmasq answering")
    if resolve(first, DNS_IP) != records[first]:
        raise Unmeasurable(f"the node DNS does not answer {first} as dnsmasq does")

    params = {"response": RESPONSE.decode(), "seconds": args.seconds, "rounds": args.rounds,
              "concurrency": args.concurrency, "in_flight": args.in_flight,
              "max_requests": 2_000_000, "max_queries": 2_000_000, "names": list(records),
              "http": [["pod_ip", web_ip, 8080], ["cluster_ip", svc_ip, 80]],
              "dns": [["dnsmasq", node_ip, dnsmasq_port], ["node_dns", DNS_IP, 53]]}
    srv.kubectl("apply", "-f", "-", input=json.dumps(pod(
        "bench-client", node, ["python3", "-c", CLIENT, json.dumps(params)],
        dnspython=True)))
    budget = 4 * args.rounds * args.seconds + 120

    phase = wait_for(lambda: srv.kubectl_json("get", "pod", "bench-client")["status"]
                     .get("phase") in ("Succeeded", "Failed") and
                     srv.kubectl_json("get", "pod", "bench-client")["status"]["phase"],
                     budget, 1.0, "the client pod's end")
    logs = srv.kubectl("logs", "bench-client", check=False).stdout
    results = [json.loads(line[7:]) for line in logs.splitlines() if line.startswith("RESULT ")]
    if phase != "Succeeded" or not results:
        raise Unmeasurable(f"the client pod {phase.lower()} without a result: "
                           f"{logs.strip()[-300:]}")
    report(results[0], args)
    teardown(started, node)  # one cluster at a time: the tunnel part makes its own
    started.clear()
    tunnel_report(tunnel_run(args, tmp), args)


def tunnel_run(args: argparse.Namespace, tmp: Path) -> dict:
    """HTTP rounds from a pod on node a to a pod on node b: "route" over the nodes' link,
    "tunnel" with that link down (each node still reaches the server)."""
    try:
        cm = two_agent_cluster(tmp / "tunnel", {}, link=True, images=(build_python_image(),))
        c = cm.__enter__()
    except BaseException as e:  # pytest.skip's exception when `ip netns` is not permitted
        raise Unmeasurable(f"the two-node cluster cannot start: {e}") from None
    try:
        return _tunnel_rounds(c, args)
    finally:
        c.a.ns.set_link(True)
        cm.__exit__(None, None, None)


def _routed(c: Cluster, cidr: str) -> bool:
    return cidr in c.a.ns.run(["ip", "-4", "route", "show", "proto", "201"]).stdout


def _tunnel_rounds(c: Cluster, args: argparse.Namespace) -> dict:
    srv = c.srv
    srv.kubectl("apply", "-f", "-", input=json.dumps(pod(
        "bench-far", c.b.name, ["python3", "-c", BACKEND])))
    srv.kubectl("apply", "-f", "-", input=json.dumps(pod(
        "bench-sink", c.b.name, ["python3", "-c", SINK])))
    srv.kubectl("apply", "-f", "-", input=json.dumps(pod(
        "bench-near", c.a.name, ["python3", "-c", "import time; time.sleep(3600)"],
        dnspython=True)))
    for name in ("bench-far", "bench-sink", "bench-near"):
        c.wait(lambda name=name: c.running(name), 120, f"{name} Running")
    far_ip = c.pod("bench-far")["status"]["podIP"]
    far_cidr = srv.kubectl_json("get", "node", c.b.name)["spec"]["podCIDR"]
    c.wait(lambda: _routed(c, far_cidr), 20, "the host-gw route to b's pods")
    params = {"response": RESPONSE.decode(), "seconds": args.seconds, "rounds": 1,
              "concurrency": args.tunnel_concurrency, "in_flight": 1,
              "max_requests": 1_000_000, "max_queries": 0, "names": [], "dns": []}
    out: dict = {}
    for _ in range(args.rounds):
        for name, link_up in (("route", True), ("tunnel", False)):
            c.a.ns.set_link(link_up)
            c.wait(lambda up=link_up: _routed(c, far_cidr) == up, 20,
                   f"the route {'back' if link_up else 'gone'}")
            run = srv.kubectl("exec", "bench-near", "--", "python3", "-c", CLIENT, json.dumps(
                {**params, "http": [[name, far_ip, 8080]]}), check=False,
                timeout=4 * args.seconds + 60)
            lines = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
            if not lines:
                raise Unmeasurable(f"the {name} round gave no result: "
                                   f"{(run.stderr or run.stdout).strip()[-300:]}")
            r = json.loads(lines[0][7:])[name]
            acc = out.setdefault(name, {"lat": [], "errors": 0, "took": 0.0})
            acc["lat"] += r["lat"]
            acc["errors"] += r["errors"]
            acc["took"] += r["took"]
    sink_ip = c.pod("bench-sink")["status"]["podIP"]
    for name, link_up in (("route", True), ("tunnel", False)):
        c.a.ns.set_link(link_up)
        c.wait(lambda up=link_up: _routed(c, far_cidr) == up, 20,
               f"the route {'back' if link_up else 'gone'}")
        pids = {"server": srv.proc.pid, "near_agent": c.a.proc.pid, "far_agent": c.b.proc.pid}
        before = {k: rss_mb(pid) for k, pid in pids.items()}
        with sampling_rss(pids) as peak:
            run = srv.kubectl("exec", "bench-near", "--", "python3", "-c", BULK, sink_ip,
                              str(args.tunnel_mib), check=False, timeout=600)
        lines = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
        if not lines:
            raise Unmeasurable(f"the {name} upload gave no result: "
                               f"{(run.stderr or run.stdout).strip()[-300:]}")
        r = json.loads(lines[0][7:])
        if r["bytes"] != args.tunnel_mib << 20:
            raise Unmeasurable(f"the {name} upload: {r['bytes']} of "
                               f"{args.tunnel_mib << 20} bytes arrived")
        out[f"bulk_{name}"] = {"rate": r["bytes"] / 1e6 / r["took"], "growth": {
            k: peak[k] / 1024 - before[k] for k in pids}}
    return out


def tunnel_report(res: dict, args: argparse.Namespace) -> None:
    figures = {}
    for name in ("route", "tunnel"):
        r = res[name]
        rate = len(r["lat"]) / r["took"] if r["took"] else float("nan")
        figures[name] = (rate, pct(r["lat"], 99))
        emit(f"http_{name}_rate", rate, "req/s")
        emit(f"http_{name}_p99", pct(r["lat"], 99), "ms")
        emit(f"http_{name}_errors", r["errors"])
    (tun, tun_p99), (route, route_p99) = figures["tunnel"], figures["route"]
    print(f"ratio: {tun / route:.2f}   (HTTP req/s pod -> pod on a node without a route, "
          f"through the tunnel / over the host-gw route, {args.tunnel_concurrency} "
          "connections)", flush=True)
    print(f"ratio: {tun_p99 / route_p99:.2f}   (HTTP p99 through the tunnel / over the route)",
          flush=True)
    for name in ("route", "tunnel"):
        emit(f"bulk_{name}_rate", res[f"bulk_{name}"]["rate"], "MB/s")
    for proc, growth in res["bulk_tunnel"]["growth"].items():
        emit(f"bulk_tunnel_rss_growth_{proc}", growth, "MB")
    print(f"ratio: {res['bulk_tunnel']['rate'] / res['bulk_route']['rate']:.2f}   (a "
          f"{args.tunnel_mib} MiB upload through the tunnel / over the route)", flush=True)


def report(res: dict, args: argparse.Namespace) -> None:
    figures = {}
    for name, unit in (("pod_ip", "req/s"), ("cluster_ip", "req/s"), ("dnsmasq", "queries/s"),
                       ("node_dns", "queries/s")):
        r = res[name]
        rate = len(r["lat"]) / r["took"] if r["took"] else float("nan")
        figures[name] = (rate, pct(r["lat"], 99))
        prefix = "http" if unit == "req/s" else "dns"
        emit(f"{prefix}_{name}_rate", rate, unit)
        emit(f"{prefix}_{name}_p99", pct(r["lat"], 99), "ms")
        emit(f"{prefix}_{name}_errors", r["errors"])
    (svc, svc_p99), (direct, direct_p99) = figures["cluster_ip"], figures["pod_ip"]
    print(f"ratio: {svc / direct:.2f}   (HTTP req/s pod -> ClusterIP / pod -> pod IP, "
          f"{args.concurrency} connections, target >= 0.9)", flush=True)
    print(f"ratio: {svc_p99 / direct_p99:.2f}   (HTTP p99 pod -> ClusterIP / pod -> pod IP)",
          flush=True)
    (node, node_p99), (peer, peer_p99) = figures["node_dns"], figures["dnsmasq"]
    print(f"ratio: {node / peer:.2f}   (DNS queries/s node DNS / dnsmasq, {args.in_flight} "
          "in flight, target >= 0.5)", flush=True)
    print(f"ratio: {node_p99 / peer_p99:.2f}   (DNS p99 node DNS / dnsmasq)", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=500)
    ap.add_argument("--endpoints", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=5.0, help="per round and target")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=16, help="HTTP connections")
    ap.add_argument("--in-flight", type=int, default=8, help="DNS queries in flight")
    ap.add_argument("--settle", type=float, default=3.0, help="RSS sampling seconds")
    ap.add_argument("--tunnel-concurrency", type=int, default=4,
                    help="HTTP connections through the tunnel and over the route")
    ap.add_argument("--tunnel-mib", type=int, default=200,
                    help="MiB of the bulk upload through the tunnel and over the route")
    ap.add_argument("--node-name", default="bench-net")
    args = ap.parse_args()
    args.services = max(1, min(args.services, 5000))
    args.endpoints = max(args.services, min(args.endpoints, 20000))
    args.seconds = max(0.5, min(args.seconds, 60.0))
    args.rounds = max(1, min(args.rounds, 10))
    args.concurrency = max(1, min(args.concurrency, 256))
    args.in_flight = max(1, min(args.in_flight, 256))
    args.tunnel_concurrency = max(1, min(args.tunnel_concurrency, 64))
    args.tunnel_mib = max(1, min(args.tunnel_mib, 4096))
    args.settle = max(0.5, min(args.settle, 60.0))
    if shutil.which("dnsmasq") is None:
        print("error: dnsmasq not found (scripts/setup.sh installs dnsmasq-base)", flush=True)
        return 1

    node = f"{args.node_name}-{uuid.uuid4().hex[:6]}"
    started: dict = {}
    return guarded_run("k3py-bench-network-", lambda tmp: run(args, tmp, node, started),
                       lambda tmp: teardown(started, node))


def teardown(started: dict, node: str) -> None:
    """Stop what this run started; the pods go with podman (nothing here waits on them)."""
    for name in ("dnsmasq", "agent"):
        proc = started.get(name)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if started.get("server") is not None:
        started["server"].stop()
    remove_podman_pods(f"{NODE_LABEL}={node}")
    if started.get("dns_ip_added") and on_loopback(DNS_IP):
        subprocess.run(["ip", "addr", "del", f"{DNS_IP}/32", "dev", "lo"], capture_output=True,
                       timeout=10)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
