"""Dashboard benchmark (issue 18): the page's first load (the overview, the landing view, until
every pod is counted: bytes gzipped, requests), the terminal page's bytes, its first
contentful paint and the time until every pod row is shown, in headless Chromium on loopback;
and the server's memory with N dashboard tabs open on all pods next to N `kubectl get pods -A
-w` watches, measured side by side in the same run (ratio).

Run: python3 bench/dashboard.py [--pods 500] [--tabs 10]. Prints `name: value unit` lines and
`ratio: x` lines. One server (--disable-agent, so the pods stay Pending and nothing is pulled);
every wait is bounded."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.api import emit, rss_mb  # noqa: E402
from k3py.webui.assets import load_assets  # noqa: E402
from tests.harness import KUBECTL, ServerProcess, wait_for  # noqa: E402
from tests.integration.browser import chromium  # noqa: E402

TARGETS = {"first_load_kb": 60.0, "terminal_kb": 180.0, "first_load_requests": 12, "fcp_ms": 300.0,
           "all_rows_ms": 800.0, "tabs_rss_mb": 15.0}
SETTLE = 3.0  # seconds for RSS to settle after a change


def create_pods(srv: ServerProcess, count: int) -> None:
    items = [{"apiVersion": "v1", "kind": "Pod",
              "metadata": {"name": f"bench-{i:04d}", "namespace": "default",
                           "labels": {"app": "bench"}},
              "spec": {"containers": [{"name": "c", "image": "busybox",
                                       "command": ["sleep", "3600"]}]}} for i in range(count)]
    srv.kubectl("create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                       "items": items}), timeout=300)


def admin_token(srv: ServerProcess) -> str:
    srv.kubectl("-n", "kube-system", "create", "serviceaccount", "bench-admin")
    srv.kubectl("create", "clusterrolebinding", "bench-admin", "--clusterrole=cluster-admin",
                "--serviceaccount=kube-system:bench-admin")
    return srv.kubectl("-n", "kube-system", "create", "token", "bench-admin").stdout.strip()


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
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
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
    xterm.js and its stylesheet), gzipped as served."""
    extra = sum(len(a.gzipped) for name, a in load_assets("k3py.server.dashboard").items()
                if name.startswith(("terminal.", "vendor/xterm.")))
    total = first_load_kb + extra / 1024
    emit("terminal_page_bytes", total, "KB", f"<= {TARGETS['terminal_kb']} KB")
    print(f"ratio: {total / TARGETS['terminal_kb']:.2f} (terminal page / target)")


def settled_rss(pid: int) -> float:
    time.sleep(SETTLE)
    return rss_mb(pid)


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


def seeded_server(tmp: Path, name: str, pods: int) -> tuple[ServerProcess, str]:
    """A started server with `pods` pods and an admin token."""
    srv = ServerProcess(tmp / name, extra_args=["--disable-agent"])
    srv.start()
    try:
        token = admin_token(srv)
        create_pods(srv, pods)
    except BaseException:
        srv.stop()
        raise
    return srv, token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=500)
    parser.add_argument("--tabs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="k3py-bench-dashboard-") as tmp:
        # tabs and kubectl watches each on a server of their own, seeded alike, so that
        # neither reuses memory the other freed
        srv, token = seeded_server(Path(tmp), "tabs", args.pods)
        driver = None
        try:
            driver = chromium()
            log_in(driver, srv.url, token)
            first_load(driver, srv.url, args.pods)
            tabs = tabs_rss(driver, srv, args.pods, args.tabs)
        finally:
            if driver is not None:
                driver.quit()
            srv.stop()
        emit(f"server_rss_added_{args.tabs}_tabs", tabs, "MB", f"<= {TARGETS['tabs_rss_mb']} MB")
        srv, _ = seeded_server(Path(tmp), "watches", args.pods)
        try:
            watches = watches_rss(srv, args.tabs)
        finally:
            srv.stop()
        emit(f"server_rss_added_{args.tabs}_kubectl_watches", watches, "MB")
        print(f"ratio: {tabs / watches:.2f} (tabs / kubectl watches)" if watches > 0 else
              "ratio: n/a (the watches added no measurable RSS)")


if __name__ == "__main__":
    main()
