"""The dashboard's metrics, on a real server with its embedded agent reporting usage every
second (--metrics-resolution 1s) and a real busybox pod of two containers:

- the live websocket's "metrics" feed answers with the history, then new points, and
  is authorized as the user (a service account without metrics.k8s.io is refused with 403);
- a real headless Chromium shows, in the Nodes view, the node's k3py version and CPU and memory
  sparklines that grow point by point; the node's *metrics* button opens the Metrics view's
  uPlot graphs of its CPU and memory, and the pod's (in the Pods view) the pod's, with a line
  and a row for each container; while the points come in, the page makes no request at all
  (they come on the one websocket: nothing is polled).

Screenshots (1280x800 and 360x640) go to $K3PY_DASHBOARD_SCREENSHOTS when it names a folder."""

from __future__ import annotations

import json

import pytest

from k3py import __version__
from tests.harness import wait_for
from tests.integration.agents import IMAGE, embedded_node
from tests.integration.test_dashboard import (  # noqa: F401 - browser, admin_token: fixtures
    _css_text,
    _log_in,
    _login,
    _next,
    _open,
    _requested_urls,
    _screenshots,
    _session,
    admin_token,
    browser,
    run,
)

pytestmark = pytest.mark.integration

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "usage", "namespace": "default"},
       "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
           "name": name, "image": IMAGE, "imagePullPolicy": "IfNotPresent",
           "command": ["sleep", "3600"]} for name in ("app", "sidecar")]}}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with embedded_node(tmp_path_factory.mktemp("dashboard-metrics"), "dash-metrics",
                       env={"K3PY_METRICS_RESOLUTION": "1s"}) as s:
        s.kubectl("apply", "-f", "-", input=json.dumps(POD))
        wait_for(lambda: s.kubectl_json("get", "pod", "usage")["status"].get("phase")
                 == "Running", 60, 0.3, "the usage pod Running")
        yield s


async def _metrics(srv, token: str, spec: dict, messages: int) -> list[dict]:
    """The first `messages` messages of a metrics subscription made with `token`."""
    async with await _session() as http:
        headers = await _login(http, srv.url, token)
        async with http.ws_connect(srv.url + "/dashboard/api/live",
                                   headers={"Cookie": headers["Cookie"], "Origin": srv.url}) as ws:
            await ws.send_json({"op": "metrics", "id": "m", **spec})
            return [await _next(ws, "m") for _ in range(messages)]


def _pod_metrics_listed(srv) -> bool:
    out = srv.kubectl("get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods",
                      check=False)
    return out.returncode == 0 and '"usage"' in out.stdout


def test_subscription_sends_history_then_points_as_the_user(srv, admin_token):  # noqa: F811
    wait_for(lambda: _pod_metrics_listed(srv), 30, 0.5, "the pod's metrics (kubectl top)")
    history, update = run(_metrics(srv, admin_token, {"kind": "pods", "namespace": "default",
                                                      "name": "usage"}, 2))
    assert history["type"] == "feed" and history["data"]["reset"], history
    series = history["data"]["series"]["default/usage"]
    assert series["times"] and series["memory"][-1] > 0, series
    new = update["data"]["series"]["default/usage"]
    assert "reset" not in update["data"] and new["times"][0] > series["times"][-1], (
        history, update)
    assert sorted(series["containers"]) == sorted(new["containers"]) == ["app", "sidecar"]
    assert all(len(c["memory"]) == len(series["times"]) for c in series["containers"].values())
    srv.kubectl("-n", "default", "create", "serviceaccount", "no-metrics")
    token = srv.kubectl("-n", "default", "create", "token", "no-metrics").stdout.strip()
    refused, = run(_metrics(srv, token, {"kind": "nodes"}, 1))
    assert refused["type"] == "error" and refused["code"] == 403, refused
    assert "metrics.k8s.io" in refused["message"], refused


def _points(driver, selector: str) -> int:
    from selenium.webdriver.common.by import By
    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return int(found[0].get_attribute("data-points") or 0) if found else 0


def _grows_without_requests(driver, selector: str, what: str) -> None:
    """`selector`'s points grow by two while the page makes no request (points come on the
    websocket, which Chrome logs as no request)."""
    before = len(_requested_urls(driver))
    start = _points(driver, selector)
    wait_for(lambda: _points(driver, selector) >= start + 2, 15, 0.2,
             f"two more points on {what} (it has {_points(driver, selector)})")
    made = _requested_urls(driver)[before:]
    assert not made, f"the page made requests while {what} streamed: {made}"


def test_nodes_sparklines_and_metrics_graphs_stream_without_polling(srv, admin_token,  # noqa: F811
                                                                    browser):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    node = srv.node
    browser.get(srv.url + "/dashboard/")
    _log_in(browser, admin_token)
    _open(browser, "Nodes", "nodes")
    wait_for(lambda: _css_text(browser, f"td.version[data-node='{node}']")
             == f"k3py/v{__version__}", 15, what="the node's k3py version")
    cpu = f"td.cpu[data-node='{node}'] svg.spark"
    wait_for(lambda: _points(browser, cpu) >= 2, 20, 0.2, "a CPU sparkline of two points")
    assert _points(browser, f"td.memory[data-node='{node}'] svg.spark") >= 2
    assert _css_text(browser, f"td.memory[data-node='{node}']").endswith(("Mi", "Gi"))
    _grows_without_requests(browser, cpu, "the node's CPU sparkline")
    _screenshots(browser, "nodes-metrics")

    browser.find_element(By.CSS_SELECTOR, f"#nodes [data-metrics='{node}']").click()
    wait_for(lambda: _css_text(browser, "#metrics-name") == node, 15,
             what="the node's graphs, opened from its row")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#graph-memory canvas"), 15,
             what="the uPlot memory graph")
    _grows_without_requests(browser, "#graph-cpu", "the node's CPU graph")
    _screenshots(browser, "metrics-node")

    _open(browser, "Pods", "pods")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#pods [data-metrics='usage']"), 15,
             what="the pod's metrics button")[0].click()
    wait_for(lambda: _css_text(browser, "#metrics-name") == "default/usage", 15,
             what="the pod's graphs, opened from its row")
    lines = "#graph-cpu[data-lines='2'] canvas"
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, lines), 15,
             what="the pod's CPU graph with a line per container")
    assert browser.find_elements(By.CSS_SELECTOR, "#graph-memory[data-lines='2']")
    rows = "#pod-containers tr[data-container]"
    wait_for(lambda: [e.get_attribute("data-container")
                      for e in browser.find_elements(By.CSS_SELECTOR, rows)]
             == ["app", "sidecar"], 15, what="a row for each of the pod's containers")
    assert _css_text(browser, "#pod-containers tr[data-container='app'] td:nth-child(3)") \
        .endswith(("Ki", "Mi")), "the container's memory now"
    _grows_without_requests(browser, "#graph-memory", "the pod's memory graph")
    _screenshots(browser, "metrics-pod")

    Select(browser.find_element(By.ID, "metrics-kind")).select_by_value("nodes")
    Select(browser.find_element(By.ID, "metrics-kind")).select_by_value("pods")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "[data-series='default/usage']"),
             15, what="the pod in the Metrics view's list")[0].click()
    wait_for(lambda: _css_text(browser, "#metrics-name") == "default/usage", 15,
             what="the pod's graphs, picked in the Metrics view")
    urls = _requested_urls(browser)
    assert all(u.startswith(srv.url + "/") for u in urls), \
        f"requests left the server's origin: {[u for u in urls if not u.startswith(srv.url)]}"
    _follows_the_systems_colour_scheme(browser)


def _follows_the_systems_colour_scheme(driver) -> None:
    """Dark mode follows the system (prefers-color-scheme), emulated through Chrome's
    DevTools protocol: the page's background turns to the dark theme's and back."""
    def background() -> str:
        return driver.execute_script("return getComputedStyle(document.body).backgroundColor")
    assert background() == "rgb(255, 255, 255)"
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [
        {"name": "prefers-color-scheme", "value": "dark"}]})
    try:
        wait_for(lambda: background() == "rgb(13, 17, 23)", 5,
                 what=f"the dark theme's background (it is {background()})")
    finally:
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    wait_for(lambda: background() == "rgb(255, 255, 255)", 5, what="the light theme again")
