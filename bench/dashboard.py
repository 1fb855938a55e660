"""Dashboard benchmark (issue 18), in headless Chromium on loopback, in two phases.

Live phase, the issue's setup: one server with its embedded (real) agent, 19 hollow nodes
(bench/hollow.py, in this process) that run the 500 pods (nodeSelector k3py.io/hollow), and 50
devices on the real agent whose mappers (paho clients here, bench/devices.py's Mappers) publish
a reading each report cycle on its MQTT broker. Figures: the first load of the overview (bytes
gzipped, requests), the terminal page's bytes, first contentful paint, all pod rows shown; a
pod created through the API until its row is in the page (a MutationObserver's timestamp),
p95, next to an API watch of pods seeing the same creates; a mapper's publish until the
point is on the device's plot, p95, next to an API watch of Devices seeing the same reading;
the requests an idle tab makes (the first --idle-seconds of the heap run); the tab's JS heap
(after a garbage collection) every 30 s over --heap-minutes of updates (the Devices view with a
plot open).

RSS phase: three servers (--disable-agent), seeded alike with --tab-pods pods (1,000, the
target's) and the Devices, each Device's twin reported --twin-points times: `dash` next to
`nodash` (--disable dashboard), both without a tab, gives the RSS the dashboard adds; then
--tabs tabs on `dash` (overview, then all pods) next to as many `kubectl get pods -A -w` on
`watches`.

Run (a quiet machine; it takes the real agent's DNS address, so under the integration lock):
  flock /tmp/k3py-integration.lock python3 bench/dashboard.py [--heap-minutes 30]
Prints `name: value unit   (target ...)` lines and `ratio: x` lines; exits 1 with a one-line
reason when a figure cannot be measured. Every wait is bounded; everything started is stopped,
the real agent's podman pods removed, even on failure."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import devices  # noqa: E402
from bench.api import client_ssl, emit, pct, rss_mb  # noqa: E402
from bench.hollow import HollowFleet  # noqa: E402
from bench.pods import Unmeasurable, guarded_run  # noqa: E402
from k3py.webui.assets import load_assets  # noqa: E402
from tests.harness import KUBECTL, ServerProcess, free_port, wait_for  # noqa: E402
from tests.integration.agents import EmbeddedServer, remove_podman_pods  # noqa: E402
from tests.integration.browser import chromium  # noqa: E402

TARGETS = {"first_load_kb": 60.0, "terminal_kb": 180.0, "first_load_requests": 12, "fcp_ms": 300.0,
           "all_rows_ms": 800.0, "write_p95_ms": 250.0,
           "publish_p95_ms": devices.REPORT_CYCLE * 1000 + 300.0, "idle_rss_mib": 2.0,
           "heap_mb": 40.0, "tabs_rss_mb": 15.0}
SETTLE = 3.0  # seconds for RSS to settle after a change
REAL_NODE = "bench-real"
HOLLOW = {"k3py.io/hollow": "true"}  # bench/hollow.py's node label
PLOTTED = 0  # the device whose `seq` twin is plotted


# -- seeding -----------------------------------------------------------------------------------

def create_pods(srv: ServerProcess, count: int, node_selector: dict | None = None) -> None:
    spec: dict = {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}
    if node_selector:
        spec["nodeSelector"] = node_selector
    items = [{"apiVersion": "v1", "kind": "Pod",
              "metadata": {"name": f"bench-{i:04d}", "namespace": "default",
                           "labels": {"app": "bench"}}, "spec": spec} for i in range(count)]
    srv.kubectl("create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                       "items": items}), timeout=300)


def admin_token(srv: ServerProcess) -> str:
    srv.kubectl("-n", "kube-system", "create", "serviceaccount", "bench-admin")
    srv.kubectl("create", "clusterrolebinding", "bench-admin", "--clusterrole=cluster-admin",
                "--serviceaccount=kube-system:bench-admin")
    return srv.kubectl("-n", "kube-system", "create", "token", "bench-admin").stdout.strip()


class Loop:
    """An asyncio loop on a thread of its own, for what runs beside the browser: the hollow
    nodes and the API watches (the peers)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="bench-loop")
        self.thread.start()

    def run(self, coro, timeout: float = 120.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def watch_pods(s: aiohttp.ClientSession, base: str, seen: dict[str, float],
                     ready: asyncio.Event) -> None:
    """An API watch of pods (the peer of the page's pod list): when each pod was first seen
    (epoch seconds), into `seen`."""
    async with s.get(f"{base}/api/v1/pods", params={"watch": "true", "timeoutSeconds": "1800"},
                     timeout=aiohttp.ClientTimeout(total=None)) as r:
        ready.set()
        async for line in r.content:
            now = time.time()
            if line.strip():
                name = (orjson.loads(line).get("object") or {}).get("metadata", {}).get("name")
                seen.setdefault(name, now)


async def _session(srv: ServerProcess, tmp: Path) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl(srv.kubeconfig,
                                                                               tmp)))


# -- the page ----------------------------------------------------------------------------------

def log_in(driver, url: str, token: str) -> None:
    from selenium.webdriver.common.by import By
    driver.get(url + "/dashboard/")
    wait_for(lambda: driver.find_elements(By.ID, "token"), 30, what="the login form")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    wait_for(lambda: driver.find_elements(By.ID, "overview-pods"), 30, what="the overview")


def pod_rows(driver) -> int:
    return driver.execute_script("return document.querySelectorAll('#pods tbody tr').length")


def overview_pods(driver) -> int:
    """The pods the overview counts (by phase)."""
    return driver.execute_script(
        "return [...document.querySelectorAll('#overview-pods dd')]"
        ".reduce((n, dd) => n + Number(dd.textContent), 0)")


def show_pods(driver, count: int) -> float:
    """Seconds from the Pods button's click until `count` rows are shown."""
    from selenium.webdriver.common.by import By
    start = time.monotonic()
    driver.find_element(By.XPATH, "//nav/button[text()='Pods']").click()
    wait_for(lambda: pod_rows(driver) >= count, 60, 0.01, what=f"{count} pod rows")
    return time.monotonic() - start


def performance_log(driver) -> list[dict]:
    return [json.loads(e["message"])["message"] for e in driver.get_log("performance")]


def first_load(driver, url: str, pods: int) -> None:
    """A cold load of the logged-in page: cache cleared, the session cookie kept."""
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.clearBrowserCache", {})
    driver.get_log("performance")  # drop what came before
    driver.get(url + "/dashboard/")
    wait_for(lambda: overview_pods(driver) >= pods, 30, 0.01, what=f"{pods} pods counted on "
             "the overview")
    fcp = driver.execute_script(
        "const e = performance.getEntriesByName('first-contentful-paint')[0];"
        "return e ? e.startTime : null;")
    wait_for(lambda: driver.execute_script(
        "return performance.getEntriesByType('resource').length > 0"), 10, what="resources")
    requests, size = set(), 0
    for message in performance_log(driver):
        params = message["params"]
        if message["method"] == "Network.requestWillBeSent":
            requests.add(params["requestId"])
        elif message["method"] == "Network.loadingFinished" and params["requestId"] in requests:
            size += params["encodedDataLength"]
    emit("first_load_bytes", size / 1024, "KB", f"<= {TARGETS['first_load_kb']} KB")
    emit("first_load_requests", len(requests), "", f"<= {TARGETS['first_load_requests']}")
    print(f"ratio: {size / 1024 / TARGETS['first_load_kb']:.2f} (first load / target)")
    terminal_bytes(size / 1024)
    if fcp is not None:
        emit("first_contentful_paint", fcp, "ms", f"<= {TARGETS['fcp_ms']} ms")
        print(f"ratio: {fcp / TARGETS['fcp_ms']:.2f} (first contentful paint / target)")
    rows = show_pods(driver, pods) * 1000
    emit("all_pod_rows_shown", rows, "ms", f"<= {TARGETS['all_rows_ms']} ms")
    print(f"ratio: {rows / TARGETS['all_rows_ms']:.2f} (all rows shown / target)")


def terminal_bytes(first_load_kb: float) -> None:
    """The terminal page: the first load plus what opening a shell fetches (terminal.js,
    xterm.js, its stylesheet and its fit addon), gzipped as served."""
    extra = sum(len(a.gzipped) for name, a in load_assets("k3py.server.dashboard").items()
                if name.startswith(("terminal.", "vendor/xterm.", "vendor/addon-fit.")))
    total = first_load_kb + extra / 1024
    emit("terminal_page_bytes", total, "KB", f"<= {TARGETS['terminal_kb']} KB")
    print(f"ratio: {total / TARGETS['terminal_kb']:.2f} (terminal page / target)")


# When each new pod row was added to the Pods view (epoch ms, the page's clock)
_ROW_OBSERVER = """
window.benchRows = {};
new MutationObserver((records) => {
  const now = Date.now();
  for (const r of records) for (const n of r.addedNodes) {
    const name = n.nodeName === 'TR' && n.children[1] ? n.children[1].textContent : '';
    if (name && !(name in window.benchRows)) window.benchRows[name] = now;
  }
}).observe(document.querySelector('#pods tbody'), {childList: true});
"""


def write_to_page(driver, srv: ServerProcess, loop: Loop, tmp: Path, count: int) -> None:
    """`count` pods created through the API, 0.4 to 0.8 s apart, each timed from just before
    its POST until its row is in the page, and until an API watch of pods sees it."""
    driver.execute_script(_ROW_OBSERVER)
    session = loop.run(_session(srv, tmp))
    watched: dict[str, float] = {}
    ready = asyncio.Event()
    watch = asyncio.run_coroutine_threadsafe(watch_pods(session, srv.url, watched, ready),
                                             loop.loop)
    loop.run(asyncio.wait_for(ready.wait(), 30))
    conn = http.client.HTTPSConnection(srv.host, srv.port, context=client_ssl(srv.kubeconfig, tmp),
                                       timeout=30)
    sent: dict[str, float] = {}
    rnd = random.Random(18)
    try:
        for k in range(count):
            name = f"write-{k:03d}"
            body = json.dumps({"apiVersion": "v1", "kind": "Pod",
                               "metadata": {"name": name, "namespace": "default"},
                               "spec": {"nodeSelector": HOLLOW, "containers": [
                                   {"name": "c", "image": "busybox"}]}})
            sent[name] = time.time() * 1000
            conn.request("POST", "/api/v1/namespaces/default/pods", body,
                         {"Content-Type": "application/json"})
            answer = conn.getresponse()
            answer.read()
            if answer.status != 201:
                raise Unmeasurable(f"creating pod {name}: HTTP {answer.status}")
            time.sleep(0.4 + 0.4 * rnd.random())
        wait_for(lambda: len(driver.execute_script("return window.benchRows")
                             .keys() & sent.keys()) == count, 30, 0.1,
                 what=f"the {count} created pods in the page")
        wait_for(lambda: len(watched.keys() & sent.keys()) == count, 30, 0.1,
                 what=f"the {count} created pods in the API watch")
    finally:
        conn.close()
        watch.cancel()
        loop.run(session.close())
    seen = driver.execute_script("return window.benchRows")
    page = [seen[n] - t for n, t in sent.items()]
    api = [watched[n] * 1000 - t for n, t in sent.items()]
    emit("write_to_page_p50", pct(page, 50), "ms")
    emit("write_to_page_p95", pct(page, 95), "ms", f"<= {TARGETS['write_p95_ms']} ms")
    emit("write_to_api_watch_p95", pct(api, 95), "ms")
    print(f"ratio: {pct(page, 95) / TARGETS['write_p95_ms']:.2f} (write to page p95 / target)")
    print(f"ratio: {pct(page, 95) / pct(api, 95):.2f} (write to page p95 / to an API watch p95)")


# Each new point of the plot (epoch ms, the page's clock) with the plotted twin's value then
_PLOT_OBSERVER = """
const device = arguments[0];
window.benchPoints = [];
new MutationObserver(() => {
  const now = Date.now();
  const values = [...document.querySelectorAll(`td.reported[data-device='${device}']`)]
    .map((td) => Number(td.textContent)).filter((v) => Number.isFinite(v));
  if (values.length) window.benchPoints.push([now, values[0]]);
}).observe(document.getElementById('plot'), {attributes: true, attributeFilter: ['data-points']});
"""


def open_plot(driver, device: str) -> None:
    from selenium.webdriver.common.by import By
    driver.find_element(By.XPATH, "//nav/button[text()='Devices']").click()
    numeric = f"td[@data-device='{device}' and number(text()) = number(text())]"  # not NaN
    wait_for(lambda: driver.find_elements(By.XPATH, f"//tr[{numeric}]//button[text()='plot']"),
             30, what=f"{device}'s plot button on a numeric twin")[0].click()
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#plot canvas"), 30,
             what="the uPlot plot")


def publish_to_plot(driver, mappers: devices.Mappers, dwatch: devices.DeviceWatch, seconds: float) -> None:
    """The plotted device's readings published over `seconds`, each timed until a point with it
    (or a newer one) is on the plot, and until the API watch of Devices shows it."""
    driver.execute_script(_PLOT_OBSERVER, devices.device_name(PLOTTED))
    offset = time.time() - time.perf_counter()  # the mappers stamp with perf_counter
    w0 = time.perf_counter()
    time.sleep(seconds)
    w1 = time.perf_counter()
    time.sleep(devices.REPORT_CYCLE + 3)  # the last ones in the window arrive
    points = driver.execute_script("return window.benchPoints")
    page, api = [], []
    for seq, at in mappers.sent[PLOTTED]:
        if not w0 <= at < w1:
            continue
        shown = next((t for t, v in points if v >= seq), None)
        if shown is not None:
            page.append(shown - (at + offset) * 1000)
        watched = [t for s, t in dwatch.first_shown[PLOTTED].items() if s >= seq]
        if watched:
            api.append((min(watched) - at) * 1000)
    if not page or not api:
        raise Unmeasurable(f"no reading reached the plot ({len(page)}) or the API watch "
                           f"({len(api)}) in {seconds:.0f} s")
    emit("publish_to_plot_readings", len(page), "readings")
    emit("publish_to_plot_p50", pct(page, 50), "ms")
    emit("publish_to_plot_p95", pct(page, 95), "ms",
         f"<= report cycle + 300 = {TARGETS['publish_p95_ms']:.0f} ms")
    emit("publish_to_api_watch_p95", pct(api, 95), "ms")
    print(f"ratio: {pct(page, 95) / TARGETS['publish_p95_ms']:.2f} (publish to plot p95 / "
          "target)")
    print(f"ratio: {pct(page, 95) / pct(api, 95):.2f} (publish to plot p95 / to an API watch of "
          "Devices p95)")


def heap_mb(driver) -> float:
    """The tab's JS heap in use after a full garbage collection, MB."""
    driver.execute_cdp_cmd("HeapProfiler.collectGarbage", {})
    return driver.execute_cdp_cmd("Runtime.getHeapUsage", {})["usedSize"] / 1e6


def idle_and_heap(driver, minutes: float, idle_seconds: float) -> None:
    """The tab left alone on the Devices view with a plot while the readings flow: the
    requests (HTTP, or a websocket opened again) and websocket frames it sends in the first
    `idle_seconds` (the live websocket's own ping/pong are not frames a page sends), then
    its heap every 30 s for `minutes`."""
    driver.get_log("performance")
    start = time.monotonic()
    emit("tab_js_heap_start", heap_mb(driver), "MB")
    driver.get_log("performance")  # the heap calls are the bench's, not the page's
    time.sleep(idle_seconds)
    log = performance_log(driver)
    requests = [m["params"]["request"]["url"] if "request" in m["params"] else m["params"]["url"]
                for m in log if m["method"] in ("Network.requestWillBeSent",
                                                "Network.webSocketCreated")]
    sent = [m["params"]["response"]["payloadData"][:160] for m in log
            if m["method"] == "Network.webSocketFrameSent"]
    received = sum(m["method"] == "Network.webSocketFrameReceived" for m in log)
    emit(f"idle_tab_requests_in_{idle_seconds:.0f}s", len(requests), "requests",
         "0 besides the websocket heartbeat")
    emit(f"idle_tab_websocket_frames_sent_in_{idle_seconds:.0f}s", len(sent), "frames", "0")
    for payload in sent[:5]:
        print(f"idle_tab_frame_sent: {payload}")
    emit(f"idle_tab_websocket_frames_received_in_{idle_seconds:.0f}s", received,
         "frames (the live updates)")
    if requests:
        print(f"idle_tab_request_urls: {sorted(set(requests))[:5]}")
    heap = 0.0
    while (elapsed := time.monotonic() - start) < minutes * 60:
        time.sleep(min(30.0, minutes * 60 - elapsed))
        heap = heap_mb(driver)
        emit(f"tab_js_heap_after_{(time.monotonic() - start) / 60:.1f}_min", heap, "MB")
        driver.get_log("performance")  # keep chromedriver's log from growing
    emit(f"tab_js_heap_after_{minutes:g}_min_of_updates", heap, "MB",
         f"<= {TARGETS['heap_mb']} MB after 30 min")
    print(f"ratio: {heap / TARGETS['heap_mb']:.2f} (JS heap / target; {minutes:g} min run)")


# -- the live phase ----------------------------------------------------------------------------

def wait_pods_running(srv: ServerProcess, count: int) -> None:
    def running() -> bool:
        out = srv.kubectl("get", "pods", "-l", "app=bench", "-o",
                          "jsonpath={.items[*].status.phase}", check=False, timeout=60)
        return out.stdout.split().count("Running") >= count
    wait_for(running, 180, 1.0, f"{count} pods Running on the hollow nodes")


def live_phase(args: argparse.Namespace, tmp: Path, started: dict) -> None:
    mqtt_port = free_port()
    srv = started["live"] = EmbeddedServer(tmp / "live", extra_args=[
        "--node-name", REAL_NODE, "--mqtt-port", str(mqtt_port)])
    srv.start(timeout=90)
    loop = started["loop"] = Loop()
    fleet = started["fleet"] = HollowFleet(args.nodes - 1, srv.url, srv.join_token(),
                                           tmp / "hollow")
    loop.run(fleet.start())
    wait_for(lambda: len(srv.kubectl("get", "nodes", "-o", "name").stdout.split()) >= args.nodes,
             120, 1.0, f"{args.nodes} nodes registered")
    token = admin_token(srv)
    create_pods(srv, args.pods, HOLLOW)
    wait_pods_running(srv, args.pods)
    out = srv.kubectl("apply", "-f", "-", input=devices.manifests(args.devices, REAL_NODE), timeout=120,
                      check=False)
    if out.returncode != 0:
        raise Unmeasurable(f"kubectl apply of the Devices failed: {out.stderr.strip()[-200:]}")
    clients = started["clients"]
    loop.run(devices.wait_twins_know(mqtt_port, args.devices, clients), 180)
    session = loop.run(_session(srv, tmp))
    started["sessions"].append(session)
    dwatch = devices.DeviceWatch(session, srv.url, args.devices)
    loop.run(dwatch.start())
    started["watches"].append(dwatch)
    mappers = started["mappers"] = devices.Mappers(mqtt_port, args.devices, 10, 1 / devices.REPORT_CYCLE,
                                           clients)
    mappers.start()
    print(f"setup: {args.nodes} nodes ({args.nodes - 1} hollow, 1 real), {args.pods} pods, "
          f"{args.devices} devices publishing every {devices.REPORT_CYCLE:g} s", flush=True)
    driver = started["driver"] = chromium()
    log_in(driver, srv.url, token)
    first_load(driver, srv.url, args.pods)
    write_to_page(driver, srv, loop, tmp, args.writes)
    open_plot(driver, devices.device_name(PLOTTED))
    publish_to_plot(driver, mappers, dwatch, args.plot_seconds)
    idle_and_heap(driver, args.heap_minutes, args.idle_seconds)


# -- the RSS phase -----------------------------------------------------------------------------

async def report_twins(srv: ServerProcess, tmp: Path, count: int, points: int) -> None:
    """Each Device's `seq` twin reported `points` times, as the agent's status writes do."""
    async with await _session(srv, tmp) as s:
        async def one(i: int, k: int) -> None:
            body = {"status": {"twins": [{"propertyName": "seq", "reported": {
                "value": str(k), "metadata": {"timestamp": str(int(time.time() * 1000)),
                                              "type": "int"}}}]}}
            path = f"{devices.GROUP_URL}/namespaces/{devices.NS}/devices/{devices.device_name(i)}"
            async with s.patch(srv.url + path, data=orjson.dumps(body),
                               headers={"Content-Type": "application/merge-patch+json"}) as r:
                if r.status != 200:
                    raise Unmeasurable(f"reporting a twin: HTTP {r.status} {await r.text()}")
        for k in range(points):
            await asyncio.gather(*(one(i, k) for i in range(count)))


def seeded_server(tmp: Path, name: str, args: argparse.Namespace,
                  extra: tuple[str, ...] = ()) -> tuple[ServerProcess, str]:
    """A started server (no agent) with the pods, the Devices and their reported twins, and an
    admin token."""
    srv = ServerProcess(tmp / name, extra_args=["--disable-agent", *extra])
    srv.start()
    try:
        token = admin_token(srv)
        create_pods(srv, args.pods)
        srv.kubectl("apply", "-f", "-", input=devices.manifests(args.devices, "bench-none"), timeout=120)
        asyncio.run(report_twins(srv, tmp, args.devices, args.twin_points))
    except BaseException:
        srv.stop()
        raise
    return srv, token


def settled_rss(pid: int) -> float:
    time.sleep(SETTLE)
    return rss_mb(pid)


def median_rss(pids: list[int], samples: int = 5) -> list[float]:
    """Each process's RSS, the median of `samples` taken side by side 1 s apart."""
    time.sleep(SETTLE)
    seen: list[list[float]] = [[] for _ in pids]
    for _ in range(samples):
        for got, pid in zip(seen, pids, strict=True):
            got.append(rss_mb(pid))
        time.sleep(1.0)
    return [statistics.median(got) for got in seen]


def tabs_rss(driver, srv: ServerProcess, pods: int, tabs: int) -> float:
    """The server's RSS added by `tabs` tabs each showing all pods (the first tab is open)."""
    base = settled_rss(srv.proc.pid)
    for _ in range(tabs - 1):
        driver.switch_to.new_window("tab")
        driver.get(srv.url + "/dashboard/")
        wait_for(lambda: overview_pods(driver) >= pods, 30, what="a tab's overview")
        show_pods(driver, pods)
    return settled_rss(srv.proc.pid) - base


def watches_rss(srv: ServerProcess, watches: int) -> float:
    """The server's RSS added by `watches` kubectl watches of all pods."""
    base = settled_rss(srv.proc.pid)
    procs = [subprocess.Popen([KUBECTL, "--kubeconfig", str(srv.kubeconfig), "get", "pods", "-A",
                               "-w", "-o", "name"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(watches)]
    try:
        wait_for(lambda: srv.proc.poll() is None and all(p.poll() is None for p in procs), 10,
                 what="the kubectl watches running")
        return settled_rss(srv.proc.pid) - base
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


def rss_phase(args: argparse.Namespace, tmp: Path, started: dict) -> None:
    # each measurement on servers of its own, seeded alike, so that none reuses memory another
    # freed; `dash` and `nodash` are measured side by side; their pods: --tab-pods
    args = argparse.Namespace(**{**vars(args), "pods": args.tab_pods})
    print(f"RSS phase: {args.pods} pods, {args.devices} devices, {args.tabs} tabs")
    dash, token = seeded_server(tmp, "dash", args)
    started["servers"].append(dash)
    nodash, _ = seeded_server(tmp, "nodash", args, ("--disable", "dashboard"))
    started["servers"].append(nodash)
    with_dash, without = median_rss([dash.proc.pid, nodash.proc.pid])
    nodash.stop()
    added = with_dash - without  # rss_mb's MB are MiB (KiB / 1024)
    emit("server_rss_dashboard_no_tab", with_dash, "MB")
    emit("server_rss_disable_dashboard", without, "MB")
    emit("server_rss_added_by_the_dashboard_no_tab", added, "MiB",
         f"<= {TARGETS['idle_rss_mib']} MiB")
    print(f"ratio: {with_dash / without:.3f} (server RSS with the dashboard, no tab / with "
          f"--disable dashboard; {args.twin_points} reported points per twin, at most "
          f"{args.devices * 600 * 16 / 2**20:.2f} MiB more when every twin's 10 minutes are full)")
    driver = chromium()
    try:
        log_in(driver, dash.url, token)
        wait_for(lambda: overview_pods(driver) >= args.pods, 30, what="the overview")
        show_pods(driver, args.pods)
        tabs = tabs_rss(driver, dash, args.pods, args.tabs)
    finally:
        driver.quit()
        dash.stop()
    emit(f"server_rss_added_{args.tabs}_tabs", tabs, "MB", f"<= {TARGETS['tabs_rss_mb']} MB")
    watching, _ = seeded_server(tmp, "watches", args)
    started["servers"].append(watching)
    try:
        watches = watches_rss(watching, args.tabs)
    finally:
        watching.stop()
    emit(f"server_rss_added_{args.tabs}_kubectl_watches", watches, "MB")
    print(f"ratio: {tabs / watches:.2f} (tabs / kubectl watches)" if watches > 0 else
          "ratio: n/a (the watches added no measurable RSS)")


def run(args: argparse.Namespace, tmp: Path, started: dict) -> None:
    try:
        live_phase(args, tmp, started)
    finally:
        teardown_live(started)
    rss_phase(args, tmp, started)


def teardown_live(started: dict) -> None:
    if started.get("driver") is not None:
        started.pop("driver").quit()
    if started.get("mappers") is not None:
        started.pop("mappers").stop()
    for c in started["clients"]:
        devices.stop_client(c)
    started["clients"].clear()
    loop = started.pop("loop", None)
    if loop is not None:
        for w in started["watches"]:
            loop.run(w.stop())
        for s in started["sessions"]:
            loop.run(s.close())
        if started.get("fleet") is not None:
            loop.run(started.pop("fleet").stop())
        loop.close()
    started["watches"].clear()
    started["sessions"].clear()
    if started.get("live") is not None:
        started.pop("live").stop()
        remove_podman_pods(REAL_NODE)


def teardown(started: dict) -> None:
    teardown_live(started)
    for srv in started["servers"]:
        srv.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=20, help="nodes, one real (20)")
    ap.add_argument("--pods", type=int, default=500)
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--tabs", type=int, default=10)
    ap.add_argument("--tab-pods", type=int, default=1000,
                    help="pods on the RSS phase's servers (1000: the target's '10 tabs on "
                         "1,000 pods')")
    ap.add_argument("--writes", type=int, default=50, help="pods created for write-to-page (50)")
    ap.add_argument("--plot-seconds", type=float, default=40.0,
                    help="readings timed to the plot over this long (40)")
    ap.add_argument("--idle-seconds", type=float, default=60.0)
    ap.add_argument("--heap-minutes", type=float, default=2.0,
                    help="minutes of updates before the heap figure (2; the target is for 30)")
    ap.add_argument("--twin-points", type=int, default=20,
                    help="reported values per twin on the RSS phase's servers (20)")
    args = ap.parse_args()
    args.nodes = max(1, min(args.nodes, 200))
    args.pods = max(1, min(args.pods, 5000))
    args.tab_pods = max(1, min(args.tab_pods, 5000))
    args.devices = max(PLOTTED + 1, min(args.devices, 500))
    args.tabs = max(1, min(args.tabs, 20))
    args.writes = max(1, min(args.writes, 500))
    args.plot_seconds = max(5.0, min(args.plot_seconds, 600.0))
    args.heap_minutes = max(args.idle_seconds / 60, min(args.heap_minutes, 120.0))
    args.twin_points = max(1, min(args.twin_points, 600))
    started: dict = {"clients": [], "watches": [], "sessions": [], "servers": []}
    return guarded_run("k3py-bench-dashboard-", lambda tmp: run(args, tmp, started),
                       lambda tmp: teardown(started))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
