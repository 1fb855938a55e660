"""Dashboard benchmark (issue 18): a node's link cut until the Nodes view says so. A real
server on the host, one real `k3py agent` in a network namespace joined over its veth link
(tests/integration/offline.py), and the server's Nodes view in headless Chromium.

--cuts times, at a random moment of the keepalive cycle (the node connected for 2 to 2 +
HEARTBEAT s), the link is cut (the host's veth end down: no FIN, no RST, the node just goes
silent) and restored once both views below show the node offline. Figures: from the cut until
the page's tunnel cell says *offline* (a MutationObserver's timestamp, the page's clock, which
is this host's), max and p50, next to the target: the tunnel's heartbeat timeout
(k3py.tunnel.protocol.HEARTBEAT_TIMEOUT) + 1 s; its peer, from the cut until the server itself
holds the tunnel closed (/dashboard/api/tunnels, which reads the node's session, polled every
20 ms), the same cuts; and what the page adds to it (page minus server, per cut; the poll
sees the server's change up to 20 ms and a request late, so near 0 it can come out negative).

Run (root, for `ip netns`; under the integration lock):
  flock /tmp/k3py-integration.lock python3 bench/dashboard_cut.py [--cuts 5] [--seed 18]
Prints `name: value unit   (target ...)` lines and `ratio: x` lines; exits 1 with a one-line
reason when a figure cannot be measured. Every wait is bounded; the agent, the server, the
browser and the namespace are removed, even on failure."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import ssl
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.api import emit, pct  # noqa: E402
from bench.dashboard import admin_token, log_in  # noqa: E402
from bench.pods import Unmeasurable, guarded_run  # noqa: E402
from k3py.tunnel.protocol import HEARTBEAT, HEARTBEAT_TIMEOUT  # noqa: E402
from tests.harness import wait_for  # noqa: E402
from tests.integration.browser import chromium  # noqa: E402
from tests.integration.netns import NetNS, netns_available  # noqa: E402
from tests.integration.offline import OfflineNode  # noqa: E402

NODE = "bench-cut"
TARGET_S = HEARTBEAT_TIMEOUT + 1.0
BOUND = HEARTBEAT_TIMEOUT + 30.0  # a deadline for each wait, not a figure
CELL = f"td.tunnel[data-node='{NODE}']"

# window.benchOffline: when (epoch ms) the node's tunnel cell first said offline since it was
# last set to null
_OFFLINE_OBSERVER = """
const cell = arguments[0];
window.benchOffline = null;
new MutationObserver(() => {
  const td = document.querySelector(cell);
  if (window.benchOffline === null && td && td.textContent.startsWith('offline'))
    window.benchOffline = Date.now();
}).observe(document.getElementById('nodes'), {subtree: true, childList: true,
                                               characterData: true});
"""


class TunnelPoller:
    """GET /dashboard/api/tunnels on one kept-alive connection, as the admin's bearer token."""

    def __init__(self, node: OfflineNode, token: str) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.conn = http.client.HTTPSConnection(node.srv.host, node.srv.port, context=ctx,
                                                timeout=10)
        self.headers = {"Authorization": f"Bearer {token}"}

    def connected(self) -> bool:
        self.conn.request("GET", "/dashboard/api/tunnels", headers=self.headers)
        answer = self.conn.getresponse()
        body = answer.read()
        if answer.status != 200:
            raise Unmeasurable(f"/dashboard/api/tunnels: HTTP {answer.status}")
        return bool(json.loads(body)["nodes"].get(NODE, {}).get("connected"))

    def close(self) -> None:
        self.conn.close()


def cell_text(driver) -> str:
    return driver.execute_script(
        "const td = document.querySelector(arguments[0]); return td ? td.textContent : ''", CELL)


def one_cut(node: OfflineNode, driver, poller: TunnelPoller, rnd: random.Random
            ) -> tuple[float, float]:
    """(seconds from the cut until the page shows the node offline, until the server holds
    its tunnel closed); the link is back and the node connected again when it returns."""
    wait_for(lambda: poller.connected() and cell_text(driver).startswith("connected"), BOUND,
             0.1, f"{NODE} connected in the page (it shows {cell_text(driver)!r})")
    time.sleep(2.0 + rnd.uniform(0, HEARTBEAT))  # a random phase of the keepalive cycle
    driver.execute_script("window.benchOffline = null")
    node.cut()
    cut_at = time.time()
    try:
        wait_for(lambda: not poller.connected(), BOUND, 0.02,
                 f"the server to hold {NODE}'s tunnel closed")
        server_at = time.time()
        wait_for(lambda: driver.execute_script("return window.benchOffline") is not None, BOUND,
                 0.05, f"{NODE} offline in the page (it shows {cell_text(driver)!r})")
        page_at = driver.execute_script("return window.benchOffline") / 1000
    finally:
        node.restore()
    return page_at - cut_at, server_at - cut_at


def measure(args: argparse.Namespace, tmp: Path, started: dict) -> None:
    ok, why = netns_available()
    if not ok:
        raise Unmeasurable(why)
    ns = started["ns"] = NetNS().create()
    node = started["node"] = OfflineNode(ns, tmp, NODE)
    node.start()
    token = admin_token(node.srv)
    driver = started["driver"] = chromium()
    log_in(driver, node.srv.url, token)
    from selenium.webdriver.common.by import By
    driver.find_element(By.XPATH, "//nav/button[text()='Nodes']").click()
    wait_for(lambda: cell_text(driver), 30, 0.1, f"{NODE}'s tunnel cell")
    driver.execute_script(_OFFLINE_OBSERVER, CELL)
    poller = started["poller"] = TunnelPoller(node, token)
    rnd = random.Random(args.seed)
    page: list[float] = []
    server: list[float] = []
    for k in range(args.cuts):
        p, s = one_cut(node, driver, poller, rnd)
        print(f"# cut {k + 1}: page {p:.2f} s, server {s:.2f} s", file=sys.stderr, flush=True)
        page.append(p)
        server.append(s)
    added = [(p - s) * 1000 for p, s in zip(page, server, strict=True)]
    print(f"setup: 1 agent in a network namespace, {args.cuts} cuts, heartbeat {HEARTBEAT:g} s, "
          f"heartbeat timeout {HEARTBEAT_TIMEOUT:g} s", flush=True)
    emit("cut_to_page_offline_max", max(page), "s", f"<= {TARGET_S:g} s: heartbeat timeout + 1 s")
    emit("cut_to_page_offline_p50", pct(page, 50), "s")
    emit("cut_to_server_offline_max", max(server), "s")
    emit("cut_to_server_offline_p50", pct(server, 50), "s")
    emit("page_added_max", max(added), "ms")
    print(f"ratio: {max(page) / TARGET_S:.2f} (cut to page offline max / target)")
    print(f"ratio: {max(page) / max(server):.3f} (cut to page offline max / to server max)")


def teardown(started: dict) -> None:
    if started.get("poller") is not None:
        started.pop("poller").close()
    if started.get("driver") is not None:
        started.pop("driver").quit()
    if started.get("node") is not None:
        started.pop("node").stop()
    if started.get("ns") is not None:
        started.pop("ns").destroy()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cuts", type=int, default=5, help="link cuts timed, 1 to 50 (5)")
    ap.add_argument("--seed", type=int, default=18, help="of the cuts' moments (18)")
    args = ap.parse_args()
    if not 1 <= args.cuts <= 50:
        ap.error(f"--cuts {args.cuts}: give 1 to 50 cuts (each takes about 20 s)")
    started: dict = {}
    return guarded_run("k3py-bench-dashboard-cut-", lambda tmp: measure(args, tmp, started),
                       lambda tmp: teardown(started))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
