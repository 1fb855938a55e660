"""The dashboard on a real server (--disable-agent): its page and assets with the CSP and
caching headers and no credential; login with a cluster-admin service account's token sets an
HttpOnly, SameSite=Strict, Secure session cookie; the API takes that cookie only with the
X-K3py-Dashboard marker header; the tunnel route is authorized and shows a real agent's
tunnel connected (since when, its round trip), pushed to the page's Nodes view, and then
offline within the heartbeat timeout + 1 s of the agent stopping; a wrong token gets 401;
logout ends the session; a node's credentials (its client certificate, its join token, `k3py
dashboard-url` on the node) get no login; `--disable dashboard` leaves no /dashboard/ at all. A real headless
Chromium (Debian's, driven by selenium with Debian's chromedriver) logs in, sees the node list,
sees a pod created with kubectl appear through the page's watch, and makes no request to any
origin but the server's.

The tab's live websocket: only from the page's own origin, subscriptions authorized as the
user, slim rows, and a reconnect that resumes from its resourceVersion gets just what changed
meanwhile. Devices: the page shows a twin's reported value moving (written with kubectl) on a
uPlot plot and sets a desired value, and with a real agent and `k3py mapper counter` on its
MQTT broker, ON set from the page makes the mapper's count move on the plot; buttons are
hidden from a user whose
SelfSubjectRulesReview lacks the verb; `--dashboard-read-only` refuses writes with the cookie,
and its page shows the read-only badge and no write button. Every browser (this module's
fixture, which the other dashboard modules use too) is checked at its end for any request
to another origin than its page's.

A Job's, a ReplicaSet's and a CronJob's rows in the Workloads view (the CronJob's schedule,
suspended from its page); a Job's and a ReplicaSet's pages list their pods. A pod's page,
opened from its row (or from a workload's page, whose Back goes back there), shows its
container, its event and its YAML (a dry run refuses an edit of an immutable
field); a device shows its state and the twin's delta (desired not yet reported); the
overview counts a node online while its tunnel is connected.

The overview (the landing view), events filtered by type, namespace and object, a Deployment scaled,
restarted, edited through a YAML dry-run and deleted from the page; a pod's logs followed,
searched, with timestamps and the previous container's answer, and a Deployment's two pods'
logs in one stream; `k3py dashboard-url`'s one-time link. The exec terminal fits its element:
after the window is made smaller, the pod's `stty size` answers the fewer rows and columns the
page sent as a resize. The Overview's cold first load makes at most 12 requests. With
K3PY_DASHBOARD_SCREENSHOTS set to a directory, each of those views is saved there at 1280x800
and 360x640 (docs/dashboard)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import ssl
import subprocess
import sys
import time
from http.cookies import SimpleCookie
from urllib.parse import urlsplit

import aiohttp
import pytest

from k3py.tunnel.protocol import HEARTBEAT
from tests.harness import ServerProcess, clean_env, free_port, wait_for
from tests.integration.agents import IMAGE, build_test_image, remove_podman_pods, stop_proc
from tests.integration.browser import chromium
from tests.integration.storeload import client_ssl

pytestmark = pytest.mark.integration

MARKER = {"X-K3py-Dashboard": "1"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("dashboard") / "srv")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module's browser tests; at its end, a check that no
    page it opened made a request to another origin than its own (the air-gapped rule),
    and that no dashboard page asked for /favicon.ico (each names its icon: the API's
    answer, 401, was a console error on every load; a page of the API itself still asks)."""
    driver = chromium()
    try:
        yield driver
        foreign = _foreign_requests(driver)
        assert not foreign, f"requests left their page's origin: {foreign}"
        asked = [m["params"]["documentURL"] for m in _performance_log(driver)
                 if m["method"] == "Network.requestWillBeSent"
                 and urlsplit(m["params"]["request"]["url"]).path == "/favicon.ico"
                 and urlsplit(m["params"]["documentURL"]).path.startswith("/dashboard")]
        assert not asked, f"these dashboard pages asked for /favicon.ico: {asked}"
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def admin_token(srv: ServerProcess) -> str:
    srv.kubectl("-n", "kube-system", "create", "serviceaccount", "dashboard-admin")
    srv.kubectl("create", "clusterrolebinding", "dashboard-admin", "--clusterrole=cluster-admin",
                "--serviceaccount=kube-system:dashboard-admin")
    return srv.kubectl("-n", "kube-system", "create", "token", "dashboard-admin").stdout.strip()


def _tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _session() -> aiohttp.ClientSession:
    # a dummy jar: the test sends the cookie itself, so that each request says what it carries
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=_tls()),
                                 cookie_jar=aiohttp.DummyCookieJar(),
                                 timeout=aiohttp.ClientTimeout(total=15))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_page_and_assets_need_no_credential_and_carry_csp(srv):
    async def check() -> None:
        async with await _session() as http:
            async with http.get(srv.url + "/dashboard/") as r:
                assert r.status == 200, await r.text()
                assert "default-src 'self'" in r.headers["Content-Security-Policy"]
                assert r.headers["Cache-Control"] == "no-cache"
                page = await r.text()
            names = re.findall(r'(?:src|href)="([^"]+)"', page)
            assert any(re.fullmatch(r"app\.[0-9a-f]{12}\.js", n) for n in names), page
            for name in names:
                async with http.get(srv.url + "/dashboard/" + name,
                                    headers={"Accept-Encoding": "gzip"}) as r:
                    assert r.status == 200, name
                    assert r.headers["Content-Encoding"] == "gzip"
                    assert "immutable" in r.headers["Cache-Control"]
                    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
            async with http.get(srv.url + "/dashboard/no-such.js") as r:
                assert r.status == 404
                assert (await r.json())["reason"] == "NotFound"
    run(check())


def test_login_cookie_marker_and_logout(srv, admin_token):
    async def check() -> None:
        async with await _session() as http:
            async with http.post(srv.url + "/dashboard/login", json={"token": "wrong"},
                                 headers=MARKER) as r:
                assert r.status == 401
                assert (await r.json())["reason"] == "Unauthorized"
            async with http.post(srv.url + "/dashboard/login", json={"token": admin_token}) as r:
                assert r.status == 400  # no marker header: a cross-site form cannot log in
            async with http.post(srv.url + "/dashboard/login", json={"token": admin_token},
                                 headers=MARKER) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["user"] == "system:serviceaccount:kube-system:dashboard-admin"
                raw = r.headers.getall("Set-Cookie")
            morsel = SimpleCookie(raw[0])["k3py-dashboard"]
            assert morsel["httponly"] and morsel["secure"]
            assert morsel["samesite"] == "Strict" and morsel["path"] == "/"
            cookie = {"Cookie": f"k3py-dashboard={morsel.value}"}
            async with http.get(srv.url + "/api/v1/nodes", headers=cookie) as r:
                assert r.status == 401  # the cookie alone, as a cross-site request sends it
            async with http.get(srv.url + "/api/v1/nodes", headers={**cookie, **MARKER}) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["kind"] == "NodeList"
            async with http.get(srv.url + "/dashboard/api/tunnels",
                                headers={**cookie, **MARKER}) as r:
                assert r.status == 200, await r.text()
                assert (await r.json()) == {"nodes": {}}  # --disable-agent: no node
            async with http.get(srv.url + "/dashboard/api/tunnels", headers=cookie) as r:
                assert r.status == 401
            async with http.post(srv.url + "/dashboard/logout", headers={**cookie, **MARKER}) as r:
                assert r.status == 200
                assert 'k3py-dashboard=""' in r.headers["Set-Cookie"]
            async with http.get(srv.url + "/api/v1/nodes", headers={**cookie, **MARKER}) as r:
                assert r.status == 401  # the session is gone on the server too
    run(check())


async def _login(http: aiohttp.ClientSession, url: str, token: str) -> dict[str, str]:
    """The headers the page sends after logging in with `token`."""
    async with http.post(url + "/dashboard/login", json={"token": token}, headers=MARKER) as r:
        assert r.status == 200, await r.text()
        return {"Cookie": f"k3py-dashboard={SimpleCookie(r.headers['Set-Cookie'])['k3py-dashboard'].value}",
                **MARKER}


def test_agent_tunnel_and_a_shell_in_its_pod(srv, admin_token, browser, tmp_path):
    """A real agent: its tunnel shows connected (since when); its credentials get no login;
    the page's terminal runs `echo hi` in its pod over the API's exec websocket
    (v4.channel.k8s.io); a logout closes the session's exec and followed logs; a desired value set from the page reaches a real mapper on its MQTT
    broker, whose reported count moves on the plot; once the agent stops, its tunnel shows
    offline."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    node = "dash-edge"
    build_test_image(tmp_path / "busybox.tar")
    before = time.time()
    mqtt_port = free_port()
    with open(tmp_path / "agent.log", "wb") as log:
        proc = subprocess.Popen(srv.agent_command(tmp_path / "agent", node, "--mqtt-port",
                                                  str(mqtt_port)), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, env=clean_env())
    mapper = None

    async def tunnel() -> dict:
        async with await _session() as http:
            headers = await _login(http, srv.url, admin_token)
            async with http.get(srv.url + "/dashboard/api/tunnels", headers=headers) as r:
                assert r.status == 200, await r.text()
                return (await r.json())["nodes"].get(node, {})
    try:
        wait_for(lambda: run(tunnel()).get("connected"), 30, 0.3, f"{node}'s tunnel connected")
        assert before <= run(tunnel())["connectedSince"] <= time.time()
        _node_credential_refused(srv, tmp_path / "agent")
        srv.kubectl("apply", "-f", "-", input=json.dumps(_shell_pod(node)))
        srv.kubectl("apply", "-f", "-", input=json.dumps(_ticker(node)))
        wait_for(lambda: srv.kubectl_json("get", "pod", "shell")["status"].get("phase")
                 == "Running", 60, 0.3, "the shell pod Running on the agent")
        browser.get(srv.url + "/dashboard/")
        _log_in(browser, admin_token)
        online = "#overview-nodes [data-count='online']"
        wait_for(lambda: _css_text(browser, online) == "1", 15,
                 what=f"{node} online (its tunnel) on the overview (it shows "
                      f"{_css_text(browser, '#overview-nodes')!r})")
        _open(browser, "Pods", "pods")
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "[data-shell='shell']"), 15,
                 what="the shell button (SelfSubjectRulesReview: create pods/exec)")
        _screenshots(browser, "pods")
        browser.find_element(By.CSS_SELECTOR, "[data-shell='shell']").click()
        try:
            wait_for(lambda: any(line.rstrip().endswith("#") for line in _terminal(browser)),
                     30, what="the shell's prompt in the terminal")
        except TimeoutError as e:
            raise AssertionError(f"{e}; the page shows: {_css_text(browser, 'main')!r}; "
                                 f"console: {browser.get_log('browser')}") from None
        browser.find_element(By.CSS_SELECTOR, "#terminal .xterm-helper-textarea").send_keys(
            "echo hi", Keys.ENTER)
        wait_for(lambda: "hi" in [line.strip() for line in _terminal(browser)], 15,
                 what=f"echo's answer in the terminal (it shows {_terminal(browser)})")
        _terminal_follows_the_window(browser)
        _screenshots(browser, "terminal")
        run(_logout_closes_exec_and_logs(srv, admin_token))
        _follow_logs(browser, srv)
        mapper = _counter_mapper(srv, node, mqtt_port, tmp_path)
        _desired_moves_the_mapper(browser)
        _open(browser, "Nodes", "nodes")
        cell = f"td.tunnel[data-node='{node}']"
        wait_for(lambda: "rtt" in _css_text(browser, cell), 15,
                 what=f"{node}'s tunnel connected with its round trip (it shows "
                      f"{_css_text(browser, cell)!r})")
        assert _css_text(browser, cell).startswith("connected since")
        stop_proc(proc)
        # pushed on the tab's live socket, no reload: within the heartbeat timeout + 1 s
        wait_for(lambda: _css_text(browser, cell).startswith("offline last seen"),
                 HEARTBEAT + 1, what=f"{node} offline in the page once its agent stopped "
                                     f"(it shows {_css_text(browser, cell)!r})")
        figures = run(tunnel())
        assert figures["connected"] is False and figures["connectedSince"] is None, figures
        assert figures["lastSeen"] >= before and figures["reconnects"] == 0, figures
        browser.find_element(By.ID, "logout").click()
        wait_for(lambda: browser.find_elements(By.ID, "token"), 15, what="the login form")
    finally:
        if mapper is not None:
            stop_proc(mapper)
        stop_proc(proc)
        remove_podman_pods(node)
        srv.kubectl("delete", "device", _EDGE_DEVICE, "--wait=false", check=False)
        srv.kubectl("delete", "pod", "shell", "--force", "--grace-period=0", check=False)
        srv.kubectl("delete", "deployment", "ticker", "--wait=false", check=False)
        srv.kubectl("delete", "pods", "-l", "app=ticker", "--force", "--grace-period=0",
                    check=False)
        srv.kubectl("delete", "node", node, "--wait=false", check=False)


async def _logout_closes_exec_and_logs(srv: ServerProcess, token: str) -> None:
    """A session's exec terminal (over the tunnel to the agent) and its followed logs are
    closed by a logout made with another request."""
    async with await _session() as http:
        headers = await _login(http, srv.url, token)
        pod = srv.url + "/api/v1/namespaces/default/pods/shell"
        async with http.ws_connect(pod + "/exec?command=sh&stdin=true&stdout=true&tty=true",
                                   protocols=["v4.channel.k8s.io"],
                                   headers={"Cookie": headers["Cookie"], "Origin": srv.url}) as ws, \
                http.get(pod + "/log?follow=true", headers=headers) as logs:
            assert logs.status == 200, await logs.text()
            await logs.content.readline()  # a tick: the stream is flowing
            async with http.post(srv.url + "/dashboard/logout", headers=headers) as r:
                assert r.status == 200, await r.text()
            while (await ws.receive()).type not in (aiohttp.WSMsgType.CLOSE,
                                                    aiohttp.WSMsgType.CLOSED,
                                                    aiohttp.WSMsgType.ERROR):
                pass  # the shell's output until the terminal is closed (bounded by run())
            with contextlib.suppress(aiohttp.ClientPayloadError):
                while await logs.content.readline():  # ticks until the stream is cut
                    pass


def _node_credential_refused(srv: ServerProcess, agent_dir) -> None:
    """A node's credentials get no dashboard session: its client certificate is refused a
    login link and the dashboard's own routes by the server, `k3py dashboard-url` on the node
    has no admin certificate to ask with, and its join token is no login token."""
    out = subprocess.run([sys.executable, "-m", "k3py", "dashboard-url", "--data-dir",
                          str(agent_dir), "--server", srv.url], capture_output=True, text=True,
                         timeout=30, env=clean_env())
    assert out.returncode != 0 and "no admin certificate" in out.stderr, out
    tls = _tls()
    tls.load_cert_chain(agent_dir / "agent" / "client-node.crt",
                        agent_dir / "agent" / "client-node.key")

    async def refused() -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls),
                                         timeout=aiohttp.ClientTimeout(total=15)) as http:
            async with http.get(srv.url + "/api/v1/nodes/dash-edge") as r:
                assert r.status == 200, await r.text()  # the certificate is the node's own
            async with http.post(srv.url + "/dashboard/api/login-links") as r:
                assert r.status == 403, await r.text()
                assert "node's credential" in (await r.json())["message"]
            async with http.post(srv.url + "/dashboard/login", headers=MARKER,
                                 json={"token": srv.join_token()}) as r:
                assert r.status == 401, await r.text()
            for route in ("session", "tunnels"):  # nor are the dashboard's own routes
                async with http.get(srv.url + f"/dashboard/api/{route}") as r:
                    assert r.status == 403, await r.text()
    run(refused())


_EDGE_DEVICE = "edge-counter"


def _counter_mapper(srv: ServerProcess, node: str, mqtt_port: int,
                    tmp_path) -> subprocess.Popen:
    """The counter demo's Device on the real agent and `k3py mapper counter` on its broker."""
    srv.kubectl("apply", "-f", "-", input=json.dumps(_MODEL))
    device = json.loads(json.dumps(_DEVICE))
    device["metadata"]["name"] = _EDGE_DEVICE
    device["spec"]["nodeSelector"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] = [
        node]
    srv.kubectl("apply", "-f", "-", input=json.dumps(device))
    with open(tmp_path / "mapper.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "k3py", "mapper", "counter", "--device", _EDGE_DEVICE,
             "--broker", f"tcp://127.0.0.1:{mqtt_port}", "--interval", "500ms"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=clean_env())


def _desired_moves_the_mapper(driver) -> None:
    """ON set from the page goes down the tunnel to the real mapper, whose count comes back
    up as the reported value, moving on the plot."""
    from selenium.webdriver.common.by import By
    _open(driver, "Devices", "devices")
    reported = f"td.reported[data-device='{_EDGE_DEVICE}']"
    wait_for(lambda: _css_text(driver, reported) == "0", 15, what="the counter's reported 0")
    driver.find_element(By.XPATH, f"//tr[td[@data-device='{_EDGE_DEVICE}']]"
                                  "//button[text()='plot']").click()
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#plot canvas"), 15,
             what="the uPlot plot")
    desired = driver.find_element(By.CSS_SELECTOR, f"input[data-device='{_EDGE_DEVICE}']")
    desired.clear()
    desired.send_keys("ON")
    desired.submit()
    wait_for(lambda: int(_css_text(driver, reported) or 0) >= 3, 30,
             what=f"the mapper counting after ON (reported {_css_text(driver, reported)!r})")
    wait_for(lambda: _points(driver) >= 3, 15, what="the count's points on the plot")
    _screenshots(driver, "devices")


_TICK = ["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.5; done"]


def _pod_spec(node: str, command: list[str]) -> dict:
    return {"nodeName": node, "terminationGracePeriodSeconds": 0, "containers": [{
        "name": "c", "image": IMAGE, "imagePullPolicy": "IfNotPresent", "command": command}]}


def _shell_pod(node: str) -> dict:
    """A pod that logs a line every half second: the shell's and the followed logs'."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "shell", "namespace": "default"},
            "spec": _pod_spec(node, _TICK)}


def _ticker(node: str) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "ticker", "namespace": "default"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "ticker"}},
                     "template": {"metadata": {"labels": {"app": "ticker"}},
                                  "spec": _pod_spec(node, _TICK)}}}


def _log_lines(driver) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#logs .line')].map((l) => l.textContent)")


def _follow_logs(driver, srv: ServerProcess) -> None:
    """A pod's logs follow (new lines arrive), search, timestamps and the previous
    container's; then a Deployment's two pods in one stream, each line marked by its pod."""
    from selenium.webdriver.common.by import By
    driver.find_element(By.XPATH, "//button[text()='Back to pods']").click()
    wait_for(lambda: driver.find_elements(By.ID, "pods"), 15, what="the pods table")
    driver.find_element(By.XPATH, "//tr[td/button[@data-pod='shell']]//button[text()='logs']").click()
    wait_for(lambda: any("tick" in line for line in _log_lines(driver)), 15,
             what="the shell pod's lines in the log view")
    seen = len(_log_lines(driver))
    wait_for(lambda: len(_log_lines(driver)) >= seen + 2, 15,
             what="new lines while following (a followed stream)")
    driver.find_element(By.ID, "log-search").send_keys("tick 1")
    shown = _log_lines(driver)
    assert shown and all("tick 1" in line for line in shown), shown
    driver.find_element(By.ID, "timestamps").click()
    wait_for(lambda: re.match(r"\d{4}-\d\d-\d\dT", (_log_lines(driver) or [""])[0]), 15,
             what="timestamps before the lines")
    _screenshots(driver, "logs")
    driver.find_element(By.ID, "previous").click()  # no run before this one: the API says so
    wait_for(lambda: "previous" in _css_text(driver, "main .error"), 15,
             what="the API's answer for a previous container that never ran")
    wait_for(lambda: len(srv.kubectl_json("get", "pods", "-l", "app=ticker")["items"]) == 2
             and all(p["status"].get("phase") == "Running"
                     for p in srv.kubectl_json("get", "pods", "-l", "app=ticker")["items"]),
             60, 0.5, "the ticker Deployment's two pods Running")
    driver.find_element(By.XPATH, "//nav/button[text()='Workloads']").click()
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "[data-workload='ticker']"), 15,
             what="the ticker Deployment in the workloads")[0].click()
    wait_for(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#workload-pods tbody tr")) == 2,
             15, what="the Deployment's two pods (a labelSelector subscription)")
    driver.find_element(By.ID, "workload-logs").click()
    wait_for(lambda: len({e.get_attribute("data-pod") for e in
                          driver.find_elements(By.CSS_SELECTOR, "#logs .line")}) == 2, 15,
             what="lines of both pods in one stream")
    assert driver.find_elements(By.CSS_SELECTOR, "#logs .pod.c0") and \
        driver.find_elements(By.CSS_SELECTOR, "#logs .pod.c1"), "each pod in its own colour"
    _screenshots(driver, "workload-logs")


def _terminal(driver) -> list[str]:
    """The lines xterm.js shows."""
    return driver.execute_script(
        "return [...document.querySelectorAll('#terminal .xterm-rows > div')]"
        ".map((row) => row.textContent)")


def _stty_size(driver, mark: str) -> tuple[int, int]:
    """(rows, columns) the shell's terminal has, as `stty size` in the pod answers."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    driver.find_element(By.CSS_SELECTOR, "#terminal .xterm-helper-textarea").send_keys(
        f"echo {mark} $(stty size)", Keys.ENTER)
    answer = re.compile(rf"{mark} (\d+) (\d+)")

    def answered() -> tuple[int, int] | None:
        found = [answer.fullmatch(line.strip()) for line in _terminal(driver)]
        return next(((int(m[1]), int(m[2])) for m in found if m), None)
    return wait_for(answered, 15, what=f"stty's answer in the terminal ({_terminal(driver)})")


def _terminal_size(driver) -> tuple[int, int]:
    """(rows, columns) of the page's terminal, and a check that they fit its element: the
    screen is within the element and less than two cells (and the scrollbar) short of it."""
    width, screen, rows, cols = driver.execute_script(
        "const t = document.getElementById('terminal');"
        "return [t.querySelector('.terminal-fit').clientWidth,"
        " t.querySelector('.xterm-screen').getBoundingClientRect().width,"
        " Number(t.dataset.rows), Number(t.dataset.cols)]")
    assert rows and cols and screen <= width < screen + 2 * screen / cols + 14, \
        f"a terminal of {cols} columns ({screen} px) in an element {width} px wide"
    return rows, cols


def _terminal_follows_the_window(driver) -> None:
    """The terminal fits its element: the shell in the pod has the terminal's rows and
    columns; after the window is made smaller, the terminal's fewer ones (the page sends the
    new size on the exec stream's resize channel, as kubectl does)."""
    before = _terminal_size(driver)
    assert _stty_size(driver, "size-1") == before
    window = driver.get_window_size()
    driver.set_window_size(640, 560)
    try:
        wait_for(lambda: all(a < b for a, b in zip(_terminal_size(driver), before, strict=True)),
                 15, what=f"fewer rows and columns than {before} in a smaller window")
        after = _terminal_size(driver)
        assert _stty_size(driver, "size-2") == after
    finally:
        driver.set_window_size(window["width"], window["height"])


def test_a_user_without_node_access_is_refused_the_tunnels(srv):
    srv.kubectl("-n", "default", "create", "serviceaccount", "nobody")
    token = srv.kubectl("-n", "default", "create", "token", "nobody").stdout.strip()

    async def check() -> None:
        async with await _session() as http:
            headers = await _login(http, srv.url, token)
            for path in ("/dashboard/api/tunnels", "/api/v1/nodes"):
                async with http.get(srv.url + path, headers=headers) as r:
                    assert r.status == 403, path
            async with http.ws_connect(srv.url + "/dashboard/api/live",
                                       headers={"Cookie": headers["Cookie"],
                                                "Origin": srv.url}) as ws:
                await ws.send_json({"op": "watch", "id": "n", "group": "",
                                    "resource": "nodes"})
                refused = await _next(ws, "n")  # each subscription is authorized
            assert refused["type"] == "error" and refused["code"] == 403, refused
    run(check())


def _pod(name: str, namespace: str = "default") -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": name, "namespace": namespace},
                       "spec": {"containers": [{"name": "c", "image": "busybox"}]}})


async def _next(ws: aiohttp.ClientWebSocketResponse, sid: str) -> dict:
    """The next message for subscription `sid` (bounded by run()'s deadline)."""
    while True:
        msg = json.loads(await ws.receive_str())
        if msg["id"] == sid:
            return msg


def test_live_socket_lists_watches_and_resumes(srv, admin_token):
    origin = {"Origin": srv.url}

    async def check() -> None:
        async with await _session() as http:
            headers = await _login(http, srv.url, admin_token)
            cookie = {"Cookie": headers["Cookie"]}
            async with http.get(srv.url + "/dashboard/api/live", headers=cookie) as r:
                assert r.status == 403  # no Origin: not the page (cross-site websocket hijack)
            async with http.ws_connect(srv.url + "/dashboard/api/live", headers=origin) as ws:
                closed = await ws.receive()  # no session cookie: told to log in again
                assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 4401
            spec = {"op": "watch", "group": "", "resource": "pods", "namespace": "default"}
            async with http.ws_connect(srv.url + "/dashboard/api/live",
                                       headers={**cookie, **origin}) as ws:
                await ws.send_json({**spec, "id": "p"})
                listed = await _next(ws, "p")
                assert listed["type"] == "list", listed
                await ws.send_json({"op": "watch", "id": "x", "group": "", "resource": "nope"})
                assert (await _next(ws, "x"))["code"] == 404
                await asyncio.to_thread(srv.kubectl, "apply", "-f", "-", input=_pod("live-a"))
                event = await _next(ws, "p")
            assert event["type"] == "events", event
            (etype, row), = event["events"]
            assert etype == "ADDED" and row["name"] == "live-a" and row["containers"] == ["c"]
            assert "spec" not in row and "metadata" not in row  # a slim row, not the object
            rv = event["resourceVersion"]
            await asyncio.to_thread(srv.kubectl, "apply", "-f", "-", input=_pod("live-b"))
            async with http.ws_connect(srv.url + "/dashboard/api/live",
                                       headers={**cookie, **origin}) as ws:
                await ws.send_json({**spec, "id": "p", "resourceVersion": rv})
                resumed = await _next(ws, "p")
            assert resumed["type"] == "events", resumed  # no list: resumed from rv
            seen = {r["name"]: t for t, r in resumed["events"]}
            assert seen.get("live-b") == "ADDED", resumed  # created while away
            assert seen.get("live-a") != "ADDED", resumed  # seen before: not sent again as new
    try:
        run(check())
    finally:
        srv.kubectl("delete", "pod", "live-a", "live-b", "--wait=false", check=False)


def test_read_only_dashboard_refuses_writes(tmp_path, browser):
    server = ServerProcess(tmp_path / "ro", extra_args=["--dashboard-read-only"])
    try:
        server.start()
        server.kubectl("-n", "kube-system", "create", "serviceaccount", "admin")
        server.kubectl("create", "clusterrolebinding", "ro-admin", "--clusterrole=cluster-admin",
                       "--serviceaccount=kube-system:admin")
        token = server.kubectl("-n", "kube-system", "create", "token", "admin").stdout.strip()

        async def check() -> None:
            async with await _session() as http:
                headers = await _login(http, server.url, token)
                async with http.get(server.url + "/dashboard/api/session", headers=headers) as r:
                    assert (await r.json())["readOnly"] is True
                async with http.get(server.url + "/api/v1/pods", headers=headers) as r:
                    assert r.status == 200
                async with http.post(server.url + "/api/v1/namespaces/default/configmaps",
                                     headers=headers, json={"metadata": {"name": "x"}}) as r:
                    assert r.status == 403, await r.text()
                    assert "read-only" in (await r.json())["message"]
                async with http.get(server.url + "/api/v1/namespaces/default/pods/p/exec"
                                    "?command=sh&stdin=true", headers=headers) as r:
                    assert r.status == 403, await r.text()  # a GET, yet no read
                review = {"apiVersion": "authorization.k8s.io/v1",
                          "kind": "SelfSubjectRulesReview", "spec": {"namespace": "default"}}
                async with http.post(
                        server.url + "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
                        headers=headers, json=review) as r:
                    assert r.status == 201, await r.text()  # a review is not a write
        run(check())
        # the same user's token itself still writes: only the dashboard is read-only
        server.kubectl("create", "configmap", "by-kubectl", f"--token={token}")
        _read_only_page(browser, server, token)
    finally:
        server.stop()


def _read_only_page(driver, server: ServerProcess, token: str) -> None:
    """The page of a read-only dashboard, logged in as a cluster admin, shows its read-only
    badge and no write: no delete or shell for a pod, no Set for a device, no scale, restart,
    delete or YAML save for a Deployment."""
    from selenium.webdriver.common.by import By
    for obj in (_POD, _MODEL, _DEVICE, _WEB):
        server.kubectl("apply", "-f", "-", input=json.dumps(obj))
    _logged_out(driver, server)
    _log_in(driver, token)
    wait_for(lambda: _css_text(driver, "#read-only") == "read-only", 15,
             what="the read-only badge")
    _open(driver, "Pods", "pods")
    wait_for(lambda: "seen-live" in _text(driver, "pods"), 15, what="the pod in the page")
    _open(driver, "Devices", "devices")
    wait_for(lambda: "counter" in _text(driver, "devices"), 15, what="the device in the page")
    assert not driver.find_elements(By.CSS_SELECTOR, "input[data-device]"), "a desired input"
    _open(driver, "Workloads", "workloads")
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "[data-workload='web']"), 15,
             what="the Deployment in the list")[0].click()
    wait_for(lambda: driver.find_elements(By.ID, "workload-pods"), 15, what="its details")
    writes = "#scale, #replicas, #restart, #delete, [data-delete], [data-shell]"
    assert not driver.find_elements(By.CSS_SELECTOR, writes), \
        [e.get_attribute("outerHTML") for e in driver.find_elements(By.CSS_SELECTOR, writes)]
    driver.find_element(By.ID, "yaml").click()
    wait_for(lambda: "kind: Deployment" in (driver.find_element(By.ID, "yaml-text")
                                             .get_attribute("value") or ""), 15,
             what="the Deployment's YAML, to read")
    assert not driver.find_elements(By.ID, "yaml-save"), "a save button"
    _open(driver, "Pods", "pods")
    wait_for(lambda: "seen-live" in _text(driver, "pods"), 15, what="the pod in the page")
    assert not driver.find_elements(By.CSS_SELECTOR, "[data-delete], [data-shell]"), \
        "a delete or shell button on a read-only dashboard"
    _screenshots(driver, "read-only")


def test_disable_dashboard_serves_no_dashboard(tmp_path):
    server = ServerProcess(tmp_path / "off", extra_args=["--disable", "dashboard"])
    try:
        server.start()

        async def check() -> None:
            async with await _session() as http:
                # the admin's client certificate, so that the answer is a 404, not a 401
                for path in ("/dashboard/", "/dashboard/login"):
                    async with http.get(server.url + path, ssl=client_ssl(server)) as r:
                        assert r.status == 404, path
        run(check())
    finally:
        server.stop()


_NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "browser-node"}}
_POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "seen-live", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


# each browser's performance log read so far (reading it drains it), by its session: the
# modules that import these helpers run their own browsers in the same process
_SEEN: dict[str, list[dict]] = {}


def _performance_log(driver) -> list[dict]:
    seen = _SEEN.setdefault(driver.session_id, [])
    seen.extend(json.loads(e["message"])["message"] for e in driver.get_log("performance"))
    return seen


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _foreign_requests(driver) -> list[str]:
    """Each request (its URL, and the page's) made to an origin other than the page's that
    made it: the server's pages and the edge's each have their own."""
    return [f"{m['params']['request']['url']} from {m['params']['documentURL']}"
            for m in _performance_log(driver) if m["method"] == "Network.requestWillBeSent"
            and not m["params"]["request"]["url"].startswith(("data:", "blob:"))
            and _origin(m["params"]["request"]["url"]) != _origin(m["params"]["documentURL"])]


def _requested_urls(driver) -> list[str]:
    return [m["params"]["request"]["url"] for m in _performance_log(driver)
            if m["method"] == "Network.requestWillBeSent"]


_MODEL = {"apiVersion": "devices.kubeedge.io/v1alpha1", "kind": "DeviceModel",
          "metadata": {"name": "counter-model", "namespace": "default"},
          "spec": {"properties": [{"name": "status", "type": {"string": {
              "accessMode": "ReadWrite", "defaultValue": ""}}}]}}
_DEVICE = {"apiVersion": "devices.kubeedge.io/v1alpha2", "kind": "Device",
           "metadata": {"name": "counter", "namespace": "default"},
           "spec": {"deviceModelRef": {"name": "counter-model"}, "nodeSelector": {
               "nodeSelectorTerms": [{"matchExpressions": [
                   {"key": "", "operator": "In", "values": ["browser-node"]}]}]}},
           "status": {"twins": [{"propertyName": "status",
                                 "desired": {"metadata": {"type": "string"}, "value": "OFF"},
                                 "reported": {"metadata": {"type": "string"}, "value": "0"}}]}}


def _report(srv: ServerProcess, value: str) -> None:
    """What the server writes when the node reports the twin (here written with kubectl)."""
    srv.kubectl("patch", "device", "counter", "--type=json", "-p", json.dumps(
        [{"op": "replace", "path": "/status/twins/0/reported/value", "value": value}]))


# a page's first load in a fresh Chromium can take long on a loaded 2-core machine: generous
# deadlines (not figures: a passing test waits only as long as the page takes); a page still
# not there by then is reported with what it was doing (_page_state)
PAGE_LOAD = 45


def _page_wait(driver, predicate, what: str):
    """wait_for(predicate) for up to PAGE_LOAD; on a timeout, what the page was doing: its
    state and text, its console, and each of its requests that failed or got no answer."""
    try:
        return wait_for(predicate, PAGE_LOAD, what=what)
    except TimeoutError as e:
        raise AssertionError(f"{e}; {_page_state(driver)}") from None


def _page_state(driver) -> str:
    url, ready, text = driver.execute_script(
        "return [document.URL, document.readyState, document.body?.innerText]")
    log = _performance_log(driver)
    urls = {m["params"]["requestId"]: m["params"]["request"]["url"] for m in log
            if m["method"] == "Network.requestWillBeSent"}
    answered = {m["params"]["requestId"] for m in log
                if m["method"] in ("Network.responseReceived", "Network.loadingFailed")}
    failed = [f"{urls.get(m['params']['requestId'])}: {m['params'].get('errorText')}"
              for m in log if m["method"] == "Network.loadingFailed"]
    pending = [url for rid, url in urls.items() if rid not in answered]
    return (f"the page {url} ({ready}) shows {text!r}; console: {driver.get_log('browser')}; "
            f"failed requests: {failed}; unanswered requests: {pending}")


def _log_in(driver, token: str) -> None:
    from selenium.webdriver.common.by import By
    _page_wait(driver, lambda: driver.find_elements(By.ID, "token"), "the login form")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    _page_wait(driver, lambda: driver.find_elements(By.ID, "logout"), "the page after login")


def _open(driver, view: str, table: str) -> None:
    from selenium.webdriver.common.by import By
    driver.find_element(By.XPATH, f"//nav/button[text()='{view}']").click()
    wait_for(lambda: driver.find_elements(By.ID, table), 15, what=f"the {table} table")


def test_browser_sees_nodes_pods_devices_live_on_one_socket(srv, admin_token, browser):
    from selenium.webdriver.common.by import By
    srv.kubectl("apply", "-f", "-", input=json.dumps(_NODE))
    srv.kubectl("apply", "-f", "-", input=json.dumps(_MODEL))
    srv.kubectl("apply", "-f", "-", input=json.dumps(_DEVICE))
    srv.kubectl("-n", "default", "create", "serviceaccount", "viewer")
    srv.kubectl("create", "clusterrolebinding", "viewer", "--clusterrole=view",
                "--serviceaccount=default:viewer")
    viewer = srv.kubectl("-n", "default", "create", "token", "viewer").stdout.strip()
    driver = browser
    driver.get("about:blank")  # an earlier test's page must not reconnect meanwhile
    opened = len(_live_sockets(driver))  # by the module's earlier tests
    try:
        driver.get(srv.url + "/dashboard/")
        _log_in(driver, admin_token)
        _open(driver, "Nodes", "nodes")
        wait_for(lambda: "browser-node" in _text(driver, "nodes"), 15,
                 what="browser-node in the page's node list")
        assert "no tunnel" in _text(driver, "nodes")
        _open(driver, "Pods", "pods")
        srv.kubectl("apply", "-f", "-", input=json.dumps(_POD))
        wait_for(lambda: "seen-live" in _text(driver, "pods"), 15,
                 what="the pod created with kubectl in the page (from its subscription)")
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "[data-delete='seen-live']"), 15,
                 what="a delete button for the admin (SelfSubjectRulesReview)")
        _pod_detail(driver, srv)
        _job_detail(driver, srv)
        _replicaset_detail(driver, srv)
        _cronjob_suspended(driver, srv)

        _open(driver, "Devices", "devices")
        reported = "td.reported[data-device='counter']"
        wait_for(lambda: _css_text(driver, reported) == "0", 15, what="the twin's reported 0")
        driver.find_element(By.XPATH, "//table[@id='devices']//button[text()='plot']").click()
        plot = "#plot canvas"
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, plot), 15, what="the uPlot plot")
        for value in ("5", "7"):
            _report(srv, value)
            wait_for(lambda v=value: _css_text(driver, reported) == v, 15,
                     what=f"the twin's reported {value} in the page")
        assert _css_text(driver, "td.state[data-device='counter']") == "unknown"  # no mapper
        delta = "td.delta[data-device='counter']"
        assert _css_text(driver, delta) == "OFF", "desired OFF, reported 7: the delta is OFF"
        wait_for(lambda: _points(driver) >= 3, 15, what="three points on the plot")
        desired = driver.find_element(By.CSS_SELECTOR, "input[data-device='counter']")
        desired.clear()
        desired.send_keys("ON")
        desired.submit()
        wait_for(lambda: srv.kubectl_json("get", "device", "counter")["status"]["twins"][0]
                 ["desired"]["value"] == "ON", 15, what="the desired value set from the page")
        wait_for(lambda: _css_text(driver, delta) == "ON", 15,
                 what=f"the delta ON, not reported yet (it shows {_css_text(driver, delta)!r})")

        _open(driver, "Device models", "devicemodels")
        wait_for(lambda: "status (string, ReadWrite)" in _text(driver, "devicemodels"), 15,
                 what="the DeviceModel's property")
        _screenshots(driver, "devicemodels")
        here = _origin(srv.url)[1]
        sockets = [url for url in _live_sockets(driver)[opened:] if _origin(url)[1] == here]
        assert len(sockets) == 1, f"one live websocket per tab, saw {sockets}"

        driver.find_element(By.ID, "logout").click()
        _log_in(driver, viewer)
        _open(driver, "Pods", "pods")
        wait_for(lambda: "seen-live" in _text(driver, "pods"), 15, what="the pods as a viewer")
        assert not driver.find_elements(By.CSS_SELECTOR, "[data-delete]"), \
            "a viewer is shown a delete button"
    finally:
        srv.kubectl("delete", "pod", "seen-live", "--wait=false", check=False)
        srv.kubectl("delete", "event", "seen-live.dashboard-test", check=False)
        srv.kubectl("delete", "job", "seen-job", "--wait=false", check=False)
        srv.kubectl("delete", "pods", "-l", "job-name=seen-job", "--force", "--grace-period=0",
                    check=False)
        srv.kubectl("delete", "deployment", "seen-deploy", "--wait=false", check=False)
        srv.kubectl("delete", "cronjob", "seen-cron", "--wait=false", check=False)


def _workload_row(driver, prefix: str) -> list[str]:
    """The cells of the Workloads list's row whose name starts with `prefix`."""
    from selenium.webdriver.common.by import By
    return [td.text for td in driver.find_elements(
        By.XPATH, f"//table[@id='workloads']//tr[.//button[starts-with(@data-workload, "
                  f"'{prefix}')]]/td")]


def _replicaset_detail(driver, srv: ServerProcess) -> None:
    """A Deployment's ReplicaSet in the Workloads view's ReplicaSets with its desired and
    current replicas and its Deployment; its page has its two pods, which open the pod's
    page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    srv.kubectl("create", "deployment", "seen-deploy", "--image=busybox", "--replicas=2")
    _open(driver, "Workloads", "workloads")
    Select(driver.find_element(By.ID, "workload-kind")).select_by_value("replicasets")
    # Namespace, Name, Desired, Current, Ready, Deployment, Images (no agent: none ready)
    wait_for(lambda: _workload_row(driver, "seen-deploy-")[2:7] ==
             ["2", "2", "0/2", "seen-deploy", "busybox"], 15,
             what=f"the ReplicaSet with 2 desired and current replicas (it shows "
                  f"{_workload_row(driver, 'seen-deploy-')!r})")
    driver.find_element(By.CSS_SELECTOR, "[data-workload^='seen-deploy-']").click()
    pods = wait_for(lambda: len(found := driver.find_elements(
        By.CSS_SELECTOR, "#workload-pods [data-pod^='seen-deploy-']")) == 2 and found, 15,
        what="the ReplicaSet's two pods on its page")
    assert _text(driver, "workload-title").startswith("ReplicaSet default/seen-deploy-")
    pods[0].click()
    wait_for(lambda: "busybox" in _text(driver, "pod-containers"), 15,
             what="the ReplicaSet's pod's page, opened from the ReplicaSet's page")


def _cronjob_suspended(driver, srv: ServerProcess) -> None:
    """A CronJob in the Workloads view's CronJobs with its schedule, suspended from its page
    (its summary and the list say so)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    srv.kubectl("create", "cronjob", "seen-cron", "--image=busybox", "--schedule=*/1 * * * *",
                "--", "true")
    _open(driver, "Workloads", "workloads")
    Select(driver.find_element(By.ID, "workload-kind")).select_by_value("cronjobs")
    # Namespace, Name, Schedule, Suspend
    wait_for(lambda: _workload_row(driver, "seen-cron")[2:4] == ["*/1 * * * *", "no"], 15,
             what=f"the CronJob with its schedule (it shows {_workload_row(driver, 'seen-cron')!r})")
    driver.find_element(By.CSS_SELECTOR, "[data-workload='seen-cron']").click()
    wait_for(lambda: _text(driver, "workload-ready") == "*/1 * * * *", 15,
             what="the CronJob's schedule on its page")
    assert _text(driver, "workload-title") == "CronJob default/seen-cron"
    driver.find_element(By.ID, "suspend").click()
    wait_for(lambda: srv.kubectl_json("get", "cronjob", "seen-cron")["spec"].get("suspend"), 15,
             what="the CronJob suspended from its page")
    wait_for(lambda: _text(driver, "workload-ready") == "*/1 * * * *, suspended", 15,
             what="its page saying it is suspended")
    driver.find_element(By.XPATH, "//button[text()='Back']").click()
    wait_for(lambda: _workload_row(driver, "seen-cron")[3:4] == ["yes"], 15,
             what="the list saying it is suspended")


def _job_detail(driver, srv: ServerProcess) -> None:
    """A Job created with kubectl, in the Workloads view's Jobs with its status; its page has
    its pod (by the Job's selector), which opens the pod's page, and no scale or restart."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    srv.kubectl("create", "job", "seen-job", "--image=busybox", "--", "true")
    _open(driver, "Workloads", "workloads")
    Select(driver.find_element(By.ID, "workload-kind")).select_by_value("jobs")
    wait_for(lambda: "seen-job" in _text(driver, "workloads")
             and "Running" in _text(driver, "workloads"), 15,
             what=f"the Job Running in the Jobs list (it shows {_text(driver, 'workloads')!r})")
    driver.find_element(By.CSS_SELECTOR, "[data-workload='seen-job']").click()
    pod = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR,
                                                "#workload-pods [data-pod^='seen-job-']"), 15,
                   what="the Job's pod on its page")
    assert _text(driver, "workload-title") == "Job default/seen-job"
    assert not driver.find_elements(By.CSS_SELECTOR, "#scale, #restart"), "scale or restart a Job"
    pod[0].click()
    wait_for(lambda: "busybox" in _text(driver, "pod-containers"), 15,
             what="the Job's pod's page, opened from the Job's page")


def _pod_detail(driver, srv: ServerProcess) -> None:
    """seen-live's page, opened from its row: its container, its event (live) and its YAML,
    whose edit of an immutable field the server's dry run refuses."""
    from selenium.webdriver.common.by import By
    driver.find_element(By.CSS_SELECTOR, "button[data-pod='seen-live']").click()
    wait_for(lambda: "busybox" in _text(driver, "pod-containers"), 15,
             what="the pod's container and its image on its page")
    srv.kubectl("apply", "-f", "-", input=json.dumps(_event(
        "seen-live.dashboard-test", "Pod", "seen-live", "Normal", "PodDetailTest")))
    wait_for(lambda: "PodDetailTest" in _text(driver, "pod-events"), 15,
             what="the pod's event on its page")
    _screenshots(driver, "pod")
    driver.find_element(By.ID, "yaml").click()
    wait_for(lambda: "kind: Pod" in (driver.find_element(By.ID, "yaml-text")
                                      .get_attribute("value") or ""), 15, what="the pod's YAML")
    _set_yaml(driver, "^(.*)name: c$", "$1name: renamed")
    driver.find_element(By.ID, "yaml-check").click()
    wait_for(lambda: "pod updates may not change" in _css_text(driver, "#yaml-error"), 15,
             what=f"the dry run's refusal of a renamed container (it shows "
                  f"{_css_text(driver, 'main')!r})")
    driver.find_element(By.XPATH, "//button[text()='Back']").click()
    driver.find_element(By.XPATH, "//button[text()='Back to pods']").click()
    wait_for(lambda: driver.find_elements(By.ID, "pods"), 15, what="the pods list again")


def _css_text(driver, selector: str) -> str:
    from selenium.webdriver.common.by import By
    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0].text if found else ""


def _points(driver) -> int:
    from selenium.webdriver.common.by import By
    found = driver.find_elements(By.ID, "plot")
    return int(found[0].get_attribute("data-points") or 0) if found else 0


def _live_sockets(driver) -> list[str]:
    """The live websockets the browser opened so far (Chrome's performance log)."""
    return [m["params"]["url"] for m in _performance_log(driver)
            if m["method"] == "Network.webSocketCreated"
            and m["params"]["url"].endswith("/dashboard/api/live")]


def _text(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By
    found = driver.find_elements(By.ID, element_id)
    return found[0].text if found else ""


_SHOTS = os.environ.get("K3PY_DASHBOARD_SCREENSHOTS", "")  # a directory, e.g. docs/dashboard
_SIZES = ((1280, 800), (360, 640))


def _screenshots(driver, view: str) -> None:
    """With K3PY_DASHBOARD_SCREENSHOTS set: the page now, at 1280x800 and 360x640."""
    if not _SHOTS:
        return
    for width, height in _SIZES:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
        driver.execute_async_script(  # two frames: laid out and painted at the new size
            "requestAnimationFrame(() => requestAnimationFrame(arguments[0]))")
        driver.save_screenshot(os.path.join(_SHOTS, f"{view}-{width}x{height}.png"))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def _logged_out(driver, srv: ServerProcess) -> None:
    """The page's login form (whoever was logged in before logged out)."""
    from selenium.webdriver.common.by import By
    driver.get(srv.url + "/dashboard/")
    _page_wait(driver, lambda: driver.find_elements(By.ID, "token")
               or driver.find_elements(By.ID, "logout"), "the page")
    if driver.find_elements(By.ID, "logout"):
        driver.find_element(By.ID, "logout").click()
        wait_for(lambda: driver.find_elements(By.ID, "token"), 15, what="the login form")


FIRST_LOAD_REQUESTS = 12  # issue 18's bound (bench/dashboard.py measures the bytes too)


def test_the_overviews_first_load_stays_within_its_requests(srv, admin_token, browser):
    """A cold load of the Overview, logged in, makes at most FIRST_LOAD_REQUESTS requests
    (the live websocket aside): a module more on the first load must merge another."""
    from selenium.webdriver.common.by import By
    _logged_out(browser, srv)
    _log_in(browser, admin_token)
    browser.execute_cdp_cmd("Network.clearBrowserCache", {})
    before = len(_requested_urls(browser))
    browser.get(srv.url + "/dashboard/")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#overview-mqtt dl")
             and browser.find_elements(By.CSS_SELECTOR, "#overview-pods dl, #overview-pods p"),
             15, what="the Overview's cards filled")
    made = _requested_urls(browser)[before:]
    assert made and len(made) <= FIRST_LOAD_REQUESTS, \
        f"the Overview's first load made {len(made)} requests: {made}"


def test_dashboard_url_prints_a_one_time_login_link(srv, browser):
    from selenium.webdriver.common.by import By
    out = subprocess.run([sys.executable, "-m", "k3py", "dashboard-url", "--data-dir",
                          str(srv.data_dir), "--server", srv.url], capture_output=True,
                         text=True, timeout=30, env=clean_env())
    assert out.returncode == 0, out.stderr
    link = out.stdout.split()[0]
    assert re.fullmatch(re.escape(srv.url) + r"/dashboard/#login=[\w-]{40,}", link), out.stdout
    _logged_out(browser, srv)
    browser.get(link)
    wait_for(lambda: _css_text(browser, "#user").startswith("system:admin"), 15,
             what="logged in as the admin by the link")
    assert "#login" not in browser.current_url  # the code is taken out of the address
    browser.find_element(By.ID, "logout").click()
    wait_for(lambda: browser.find_elements(By.ID, "token"), 15, what="the login form")
    browser.get(srv.url + "/")  # leave, then follow the same link again
    browser.get(link)
    wait_for(lambda: "already used" in _css_text(browser, "#login-error"), 15,
             what="a used link refused")

    async def anonymous() -> None:
        async with await _session() as http:
            async with http.post(srv.url + "/dashboard/api/login-links") as r:
                assert r.status == 401, await r.text()
    run(anonymous())


_WEB = {"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}


def _event(name: str, kind: str, about: str, kind_of_event: str, reason: str,
           namespace: str = "default") -> dict:
    """An Event in `namespace` about `kind`/`about`, as a component would record it."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {"kind": kind, "name": about, "namespace": namespace},
            "type": kind_of_event, "reason": reason, "message": f"{reason} from the test",
            "count": 1, "firstTimestamp": now, "lastTimestamp": now,
            "source": {"component": "test"}}


def _warning(namespace: str = "default") -> dict:
    return _event("web.dashboard-test", "Deployment", "web", "Warning", "DashboardTest",
                  namespace)


def _event_column(driver, column: int) -> list[str]:
    from selenium.webdriver.common.by import By
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR,
                                                  f"#events td:nth-child({column})")]


def _set_yaml(driver, pattern: str, replacement: str) -> None:
    """Edit the YAML text area as typing would (the input event the page listens to)."""
    driver.execute_script(
        "const t = document.getElementById('yaml-text');"
        "t.value = t.value.replace(new RegExp(arguments[0], 'm'), arguments[1]);"
        "t.dispatchEvent(new Event('input', {bubbles: true}));", pattern, replacement)


def _replicas(srv: ServerProcess) -> int:
    return srv.kubectl_json("get", "deployment", "web")["spec"]["replicas"]


def _workload_pod_page(driver) -> None:
    """A pod's name on the workload's page opens the pod's page (as in the Pods view), whose
    Back goes back to the workload's page."""
    from selenium.webdriver.common.by import By
    link = driver.find_element(By.CSS_SELECTOR, "#workload-pods button[data-pod]")
    name = link.get_attribute("data-pod")
    link.click()
    wait_for(lambda: _text(driver, "pod-title") == f"Pod default/{name}", 15,
             what=f"{name}'s page, opened from the Deployment's (it shows "
                  f"{_css_text(driver, 'main')!r})")
    wait_for(lambda: "busybox" in _text(driver, "pod-containers"), 15, what="its container")
    driver.find_element(By.XPATH, "//button[text()='Back to web']").click()
    wait_for(lambda: _text(driver, "workload-title") == "Deployment default/web", 15,
             what="the Deployment's page again")
    wait_for(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#workload-pods tbody tr"))
             == 2, 15, what="its two pods again")


def test_overview_events_and_a_workload_scaled_restarted_edited_deleted(srv, admin_token,
                                                                         browser):
    """The overview (landing) counts pods by phase and shows the newest warning; the events
    view filters by type and object; a Deployment is scaled (a pod's name on its page opens
    the pod's page, and back), restarted (the annotation kubectl rollout restart sets), its YAML checked by a server dry-run (an invalid edit is
    refused, a valid one saved) and deleted, all from the page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    srv.kubectl("apply", "-f", "-", input=json.dumps(_WEB))
    srv.kubectl("apply", "-f", "-", input=json.dumps(_warning()))
    srv.kubectl("apply", "-f", "-", input=json.dumps(_warning("kube-system")))
    driver = browser
    try:
        _logged_out(driver, srv)
        _screenshots(driver, "login")
        _log_in(driver, admin_token)
        wait_for(lambda: _css_text(driver, "#overview-pods [data-count='Pending']"), 15,
                 what="Pending pods counted on the overview")
        wait_for(lambda: "DashboardTest" in _text(driver, "events"), 15,
                 what="the warning on the overview")
        _screenshots(driver, "overview")

        _open(driver, "Events", "events")
        Select(driver.find_element(By.ID, "event-type")).select_by_visible_text("Warning")
        wait_for(lambda: "DashboardTest" in _text(driver, "events"), 15, what="the warning")
        types = _event_column(driver, 2)
        assert types and set(types) == {"Warning"}, types
        wait_for(lambda: set(_event_column(driver, 3)) == {"default", "kube-system"}, 15,
                 what="the warnings of both namespaces")
        Select(driver.find_element(By.XPATH, "//label[starts-with(normalize-space(), "
                                             "'Namespace')]/select")).select_by_visible_text(
            "default")
        wait_for(lambda: set(_event_column(driver, 3)) == {"default"}, 15,
                 what=f"only default's events (it shows {_event_column(driver, 3)})")
        driver.find_element(By.ID, "event-object").send_keys("deployment/web")
        objects = _event_column(driver, 4)
        assert objects == ["Deployment/web"], objects
        _screenshots(driver, "events")

        _open(driver, "Workloads", "workloads")
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "[data-workload='web']"), 15,
                 what="the Deployment in the list")
        _screenshots(driver, "workloads")
        driver.find_element(By.CSS_SELECTOR, "[data-workload='web']").click()
        replicas = wait_for(lambda: driver.find_elements(By.ID, "replicas"), 15,
                            what="the scale field (SelfSubjectRulesReview: patch scale)")[0]
        replicas.clear()
        replicas.send_keys("2")
        driver.find_element(By.ID, "scale").click()
        wait_for(lambda: _replicas(srv) == 2, 15, what="the Deployment scaled to 2")
        wait_for(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#workload-pods tbody tr"))
                 == 2, 15, what="its two pods in the page")
        _workload_pod_page(driver)
        driver.find_element(By.ID, "restart").click()
        wait_for(lambda: "kubectl.kubernetes.io/restartedAt" in (srv.kubectl_json(
            "get", "deployment", "web")["spec"]["template"]["metadata"].get("annotations") or {}),
            15, what="the restart annotation on the pod template")
        wait_for(lambda: "DashboardTest" in _text(driver, "workload-events"), 15,
                 what="the Deployment's event in its details")
        _screenshots(driver, "workload")

        driver.find_element(By.ID, "yaml").click()
        wait_for(lambda: "kind: Deployment" in (driver.find_element(By.ID, "yaml-text")
                                                 .get_attribute("value") or ""), 15,
                 what="the Deployment's YAML")
        _set_yaml(driver, "^  replicas: 2$", "  replicas: -1")
        driver.find_element(By.ID, "yaml-check").click()
        wait_for(lambda: "422" in _css_text(driver, "#yaml-error"), 15,
                 what="the dry run's refusal of replicas: -1")
        assert _replicas(srv) == 2  # a dry run writes nothing
        _set_yaml(driver, "^  replicas: -1$", "  replicas: 3")
        driver.find_element(By.ID, "yaml-save").click()
        wait_for(lambda: _replicas(srv) == 3, 15, what="the edited YAML saved")
        wait_for(lambda: "saved" in _css_text(driver, "#yaml-notice"), 15, what="saved")
        _screenshots(driver, "yaml")

        driver.find_element(By.XPATH, "//button[text()='Back']").click()
        driver.find_element(By.ID, "delete").click()
        driver.find_element(By.ID, "confirm-delete").click()
        wait_for(lambda: srv.kubectl("get", "deployment", "web", check=False).returncode != 0,
                 15, what="the Deployment deleted")
        wait_for(lambda: not driver.find_elements(By.CSS_SELECTOR, "[data-workload='web']"), 15,
                 what="the Deployment gone from the list")
    finally:
        srv.kubectl("delete", "deployment", "web", "--wait=false", check=False)
        srv.kubectl("delete", "event", "web.dashboard-test", check=False)
        srv.kubectl("-n", "kube-system", "delete", "event", "web.dashboard-test", check=False)
