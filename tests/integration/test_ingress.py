"""The built-in ingress on a one-machine `k3py server` (free ingress ports, never 80/443): a
backend pod of the offline Python image serves two directories with Python's http.server (on
8080 files that say "a", on 8081 the same files saying "b"), Services `a` and `b` in front;
Ingresses, Secrets and the Deployment are created with the `kubernetes` Python client, and
curl asks the node's proxy.

Host rules, a `*.` wildcard, Exact vs element-wise Prefix, TLS chosen by SNI with a real
`kubernetes.io/tls` secret (verified against its CA; another name gets the default
certificate; a renewed secret served at the next handshake), status.loadBalancer.ingress, an
Event for a missing service (answered 503), an Ingress update seen on a keep-alive connection kept open across it; through a backend on the
host (aiohttp, a Service without selector and its EndpointSlice): a websocket echo, a 100 MB
streamed upload and download that do not grow the proxy's process by their size, 502 once
that backend process is gone; 503 once the backend pod is down, and `--disable traefik`
turning it off."""

from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import pytest

from tests.harness import free_port, rss_kib, wait_for
from tests.integration.agents import (
    PY_IMAGE,
    build_python_image,
    curl_host,
    embedded_node,
    stop_proc,
    tls_secret,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BACKEND = """
import functools, http.server, os, threading
for name in ("a", "b"):
    os.makedirs(f"/tmp/{name}/api", exist_ok=True)
    for f in ("index.html", "exact", "exactly", "api/v1", "apix"):
        with open(f"/tmp/{name}/{f}", "w") as out:
            out.write(name)
def serve(name, port):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory="/tmp/" + name)
    http.server.ThreadingHTTPServer(("", port), handler).serve_forever()
threading.Thread(target=serve, args=("b", 8081), daemon=True).start()
serve("a", 8080)
"""


def _path(path: str, svc: str, ptype: str = "Prefix") -> dict:
    return {"path": path, "pathType": ptype,
            "backend": {"service": {"name": svc, "port": {"number": 80}}}}


def _rule(host: str, *paths: dict) -> dict:
    return {"host": host, "http": {"paths": list(paths)}}


ROUTES = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
          "metadata": {"name": "routes"},
          "spec": {"tls": [{"hosts": ["secure.example.test"], "secretName": "secure-tls"}],
                   "rules": [
                       _rule("app.example.test", _path("/", "a"), _path("/api", "b"),
                             _path("/exact", "b", "Exact")),
                       _rule("other.example.test", _path("/", "b")),
                       _rule("*.wild.example.test", _path("/", "b")),
                       _rule("secure.example.test", _path("/", "a")),
                       _rule("gone.example.test", _path("/", "gone"))]}}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The server, its node's proxy ports, the CA of the TLS secret, the kubernetes client."""
    from kubernetes import client
    build_python_image()
    tmp = tmp_path_factory.mktemp("ingress")
    ports = {"http": free_port(), "https": free_port()}
    args = ("--ingress-http-port", str(ports["http"]),
            "--ingress-https-port", str(ports["https"]))
    with embedded_node(tmp, "ing", args=args) as srv:
        api = srv.client()
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        net = client.NetworkingV1Api(api)
        apps.create_namespaced_deployment("default", {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                         "terminationGracePeriodSeconds": 1,
                         "containers": [{
                             "name": "web", "image": PY_IMAGE, "imagePullPolicy": "Never",
                             "command": ["python3", "-c", BACKEND],
                             "readinessProbe": {"tcpSocket": {"port": 8081},
                                                "periodSeconds": 1}}]}}}})
        for name, port in (("a", 8080), ("b", 8081)):
            core.create_namespaced_service("default", {
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                "spec": {"selector": {"app": "web"},
                         "ports": [{"name": "http", "port": 80, "targetPort": port}]}})
        core.create_namespaced_secret("default", tls_secret("secure-tls", "secure.example.test",
                                                            tmp / "ca.crt"))
        net.create_namespaced_ingress("default", ROUTES)
        wait_for(lambda: (apps.read_namespaced_deployment("web", "default").status
                          .ready_replicas == 1), 90, 0.5, "the backend pod ready")
        yield srv, ports, tmp / "ca.crt", api
        api.close()


def curl(ports: dict, host: str, path: str = "/", *extra: str,
         scheme: str = "http") -> tuple[int, str]:
    """(status, body) of `curl` to the node's proxy with `host` as Host (and SNI)."""
    return curl_host("127.0.0.1", ports[scheme], host, path, *extra, scheme=scheme)


def _served(ports: dict, host: str, path: str, want: str) -> bool:
    return curl(ports, host, path) == (200, want)


def test_host_wildcard_exact_and_prefix(world):
    _, ports, _, _ = world
    wait_for(lambda: _served(ports, "app.example.test", "/index.html", "a"), 30, 0.2,
             "the routes served")
    cases = [  # (host, path, the backend that answers)
        ("app.example.test", "/api/v1", "b"),     # Prefix /api, element-wise
        ("app.example.test", "/apix", "a"),       # not under /api: the / rule
        ("app.example.test", "/exact", "b"),      # Exact
        ("app.example.test", "/exactly", "a"),    # Exact is not a prefix
        ("other.example.test", "/index.html", "b"),
        ("x.wild.example.test", "/index.html", "b")]
    got = [(host, path, curl(ports, host, path)) for host, path, _ in cases]
    assert got == [(h, p, (200, want)) for h, p, want in cases], got
    for host in ("unknown.test", "wild.example.test", "a.b.wild.example.test"):
        assert curl(ports, host, "/index.html")[0] == 404, host


def test_tls_certificate_chosen_by_sni(world):
    _, ports, ca, api = world
    wait_for(lambda: curl(ports, "secure.example.test", "/index.html", "--cacert", str(ca),
                          scheme="https") == (200, "a"), 30, 0.2,
             "secure.example.test served with the secret's certificate")
    # another name gets the generated default certificate, which that CA did not sign
    code, err = curl(ports, "other.example.test", "/index.html", "--cacert", str(ca),
                     scheme="https")
    assert code < 0 and "certificate" in err.lower(), (code, err)
    assert curl(ports, "other.example.test", "/index.html", "-k", scheme="https") == (200, "b")

    # the secret renewed (another CA): the next handshake presents the new certificate
    from kubernetes import client
    new_ca = ca.parent / "renewed-ca.crt"
    client.CoreV1Api(api).replace_namespaced_secret(
        "secure-tls", "default", tls_secret("secure-tls", "secure.example.test", new_ca))
    wait_for(lambda: curl(ports, "secure.example.test", "/index.html", "--cacert", str(new_ca),
                          scheme="https") == (200, "a"), 30, 0.2,
             "the renewed certificate served")


def test_status_and_an_event_for_a_missing_service(world):
    srv, ports, _, _ = world
    node_ip = next(a["address"] for a in srv.kubectl_json("get", "node", srv.node)
                   ["status"]["addresses"] if a["type"] == "InternalIP")
    wait_for(lambda: srv.kubectl_json("get", "ingress", "routes")["status"]["loadBalancer"]
             .get("ingress") == [{"ip": node_ip}], 30, 0.3, "status.loadBalancer.ingress")
    code, body = curl(ports, "gone.example.test")
    assert code == 503 and "service default/gone not found" in body, (code, body)

    def event() -> list[dict]:
        return [e for e in srv.kubectl_json(
            "get", "events", "--field-selector", "involvedObject.name=routes")["items"]
            if e["reason"] == "ServiceNotFound"]
    ev = wait_for(event, 30, 0.3, "a ServiceNotFound Event on the Ingress")[0]
    assert ev["type"] == "Warning" and "default/gone" in ev["message"], ev
    assert ev["involvedObject"]["kind"] == "Ingress", ev


def test_update_seen_on_an_open_keepalive_connection(world):
    srv, ports, _, api = world
    from kubernetes import client
    conn = http.client.HTTPConnection("127.0.0.1", ports["http"], timeout=10)

    def get() -> str:
        conn.request("GET", "/index.html", headers={"Host": "app.example.test"})
        resp = conn.getresponse()
        return resp.read().decode()
    try:
        assert get() == "a"
        sock = conn.sock
        rules = [_rule("app.example.test", _path("/", "b")), *ROUTES["spec"]["rules"][1:]]
        patch = {"spec": {"rules": rules}}
        client.NetworkingV1Api(api).patch_namespaced_ingress("routes", "default", patch)
        written = time.monotonic()
        wait_for(lambda: get() == "b", 30, 0.02, "the updated route on the open connection")
        print(f"ingress update seen after {time.monotonic() - written:.3f} s")
        assert conn.sock is sock, "the keep-alive connection was dropped by the update"
    finally:
        conn.close()


HOST_BACKEND = """
import sys
from aiohttp import web
async def ws(request):
    sock = web.WebSocketResponse()
    await sock.prepare(request)
    async for msg in sock:
        await sock.send_str("echo:" + msg.data)
    return sock
async def upload(request):
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
    return web.Response(text=str(size))
async def download(request):
    left = int(request.match_info["size"])
    resp = web.StreamResponse()
    resp.content_length = left
    await resp.prepare(request)
    block = bytes(1 << 20)
    while left > 0:
        await resp.write(block[:left])
        left -= len(block)
    return resp
app = web.Application(client_max_size=0)
app.router.add_get("/ws", ws)
app.router.add_get("/download/{size}", download)
app.router.add_put("/upload", upload)
web.run_app(app, host="0.0.0.0", port=int(sys.argv[1]), access_log=None, print=None)
"""


@pytest.fixture(scope="module")
def host_backend(world):
    """An aiohttp backend on the host (websocket echo at /ws, PUT /upload answers the size it
    read, GET /download/<size> streams that many bytes), behind a Service without selector whose EndpointSlice names the node's address,
    served as stream.example.test; yields the backend process."""
    srv, _, _, _ = world
    port = free_port()
    node_ip = next(a["address"] for a in srv.kubectl_json("get", "node", srv.node)
                   ["status"]["addresses"] if a["type"] == "InternalIP")
    proc = subprocess.Popen([sys.executable, "-c", HOST_BACKEND, str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    objects = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "host"},
         "spec": {"ports": [{"name": "http", "port": 80, "targetPort": port}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "host-1", "labels": {"kubernetes.io/service-name": "host"}},
         "addressType": "IPv4", "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
         "endpoints": [{"addresses": [node_ip], "conditions": {"ready": True}}]},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
         "metadata": {"name": "stream"},
         "spec": {"rules": [_rule("stream.example.test", _path("/", "host"))]}}]
    try:
        srv.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                          "items": objects}))
        yield proc
    finally:
        stop_proc(proc)


def test_websocket_echo_through_the_ingress(world, host_backend):
    _, ports, _, _ = world
    import aiohttp

    async def echo() -> list[str]:
        url = f"http://127.0.0.1:{ports['http']}/ws"
        async with aiohttp.ClientSession() as s, \
                s.ws_connect(url, headers={"Host": "stream.example.test"}) as ws:
            out = []
            for text in ("one", "two"):
                await ws.send_str(text)
                out.append((await ws.receive(timeout=10)).data)
            return out
    wait_for(lambda: curl(ports, "stream.example.test", "/ws")[0] == 400, 30, 0.2,
             "the host backend served (a plain GET of /ws: 400 from aiohttp)")
    assert asyncio.run(echo()) == ["echo:one", "echo:two"]


def _peak_rss_growth_mb(pid: int, run):
    """(what `run()` returned, the growth of `pid`'s RSS at its peak while it ran, in MB)."""
    before = rss_kib(pid)
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], rss_kib(pid))
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out = run()
    finally:
        done.set()
        sampler.join(5)
    return out, (peak[0] - before) / 1024


def test_100mb_streamed_both_ways_then_502_when_the_backend_dies(world, host_backend,
                                                                  tmp_path):
    """The proxy (inside the server process: its embedded node) streams a 100 MB upload and a
    100 MB download: the process's RSS does not grow by anything like the body's size. Then
    the backend process dies while its endpoint stays ready: 502."""
    srv, ports, _, _ = world
    size = 100 * 1024 * 1024
    body = tmp_path / "body"
    with open(body, "wb") as f:
        f.truncate(size)
    (code, answer), grew = _peak_rss_growth_mb(srv.proc.pid, lambda: curl(
        ports, "stream.example.test", "/upload", "-T", str(body)))
    print(f"server RSS peak during the upload +{grew:.1f} MB")
    assert (code, answer) == (200, str(size)), (code, answer[-500:])
    assert grew < 40, f"the server grew by {grew:.1f} MB during a 100 MB upload"

    (code, answer), grew = _peak_rss_growth_mb(srv.proc.pid, lambda: curl(
        ports, "stream.example.test", f"/download/{size}", "-o", "/dev/null",
        "-w", "%{size_download}\n%{http_code}"))  # (the last -w wins: the size as the body)
    print(f"server RSS peak during the download +{grew:.1f} MB")
    assert (code, answer) == (200, str(size)), (code, answer[-500:])
    assert grew < 40, f"the server grew by {grew:.1f} MB during a 100 MB download"

    stop_proc(host_backend)
    code, answer = curl(ports, "stream.example.test", "/ws")
    assert code == 502 and "default/host" in answer, (code, answer)


def test_backend_down_is_503(world):
    srv, ports, _, _ = world
    srv.kubectl("scale", "deployment", "web", "--replicas", "0")
    last: list[tuple[int, str]] = []

    def down() -> bool:
        last[:] = [curl(ports, "other.example.test", "/index.html")]
        return last[0][0] == 503
    try:
        wait_for(down, 60, 0.3, "503 once the backend is down")
    except TimeoutError as e:
        raise AssertionError(f"{e}; last answer {last}; slices: " + srv.kubectl(
            "get", "endpointslices", "-o", "yaml").stdout[-2000:]) from None
    assert "no ready endpoint for default/b" in last[0][1], last


def test_disable_traefik_turns_the_ingress_off(world):
    """K3s's `--disable traefik`: the k3py IngressClass goes at the restart, and the node's
    proxy, which came back from its cache first, stops when the class leaves the cache."""
    srv, ports, _, _ = world
    srv.stop()
    restarted = datetime.now(UTC).replace(microsecond=0)
    srv.extra_args = [*srv.extra_args, "--disable", "traefik"]
    srv.start()
    out = srv.kubectl("get", "ingressclass", "k3py", check=False)
    assert out.returncode != 0 and "NotFound" in out.stderr, out.stderr

    def reported_since_restart() -> bool:
        ready = next(c for c in srv.kubectl_json("get", "node", srv.node)["status"]
                     ["conditions"] if c["type"] == "Ready")
        return ready["status"] == "True" and datetime.fromisoformat(
            ready["lastHeartbeatTime"].replace("Z", "+00:00")) >= restarted
    # the agent is back and synced (it reports after its snapshot): the proxy is off
    wait_for(reported_since_restart, 60, 0.3, "the node reporting after the restart")
    wait_for(lambda: curl(ports, "other.example.test")[0] < 0, 30, 0.3,
             "the proxy closed its ports")
