"""The dashboard on a real server (--disable-agent): its page and assets with the CSP and
caching headers and no credential; login with a cluster-admin service account's token sets an
HttpOnly, SameSite=Strict, Secure session cookie; the API takes that cookie only with the
X-K3py-Dashboard marker header; the tunnel route is authorized and shows a real agent's
tunnel connected (since when) and then offline; a wrong token gets 401;
logout ends the session; `--disable dashboard` leaves no /dashboard/ at all. A real headless
Chromium (Debian's, driven by selenium with Debian's chromedriver) logs in, sees the node list,
sees a pod created with kubectl appear through the page's watch, and makes no request to any
origin but the server's."""

from __future__ import annotations

import asyncio
import json
import os
import re
import ssl
import subprocess
import time
from http.cookies import SimpleCookie

import aiohttp
import pytest

from tests.harness import ServerProcess, clean_env, wait_for
from tests.integration.agents import remove_podman_pods, stop_proc
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


def test_tunnels_show_an_agent_connected_then_offline(srv, admin_token, tmp_path):
    node = "dash-edge"
    before = time.time()
    with open(tmp_path / "agent.log", "wb") as log:
        proc = subprocess.Popen(srv.agent_command(tmp_path / "agent", node), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, env=clean_env())

    async def tunnel() -> dict:
        async with await _session() as http:
            headers = await _login(http, srv.url, admin_token)
            async with http.get(srv.url + "/dashboard/api/tunnels", headers=headers) as r:
                assert r.status == 200, await r.text()
                return (await r.json())["nodes"].get(node, {})
    try:
        wait_for(lambda: run(tunnel()).get("connected"), 30, 0.3, f"{node}'s tunnel connected")
        assert before <= run(tunnel())["connectedSince"] <= time.time()
        stop_proc(proc)
        wait_for(lambda: run(tunnel()) == {"connected": False, "connectedSince": None}, 15, 0.3,
                 f"{node}'s tunnel offline once its agent stopped")
    finally:
        stop_proc(proc)
        remove_podman_pods(node)
        srv.kubectl("delete", "node", node, "--wait=false", check=False)

def test_a_user_without_node_access_is_refused_the_tunnels(srv):
    srv.kubectl("-n", "default", "create", "serviceaccount", "nobody")
    token = srv.kubectl("-n", "default", "create", "token", "nobody").stdout.strip()

    async def check() -> None:
        async with await _session() as http:
            headers = await _login(http, srv.url, token)
            for path in ("/dashboard/api/tunnels", "/api/v1/nodes"):
                async with http.get(srv.url + path, headers=headers) as r:
                    assert r.status == 403, path
    run(check())


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


def _chromium():
    os.environ["SE_OFFLINE"] = "true"  # selenium must never fetch a browser or a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--ignore-certificate-errors", "--window-size=1280,800"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def _requested_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def test_browser_logs_in_sees_nodes_and_a_pod_appear(srv, admin_token):
    from selenium.webdriver.common.by import By
    srv.kubectl("apply", "-f", "-", input=json.dumps(_NODE))
    driver = _chromium()
    try:
        driver.get(srv.url + "/dashboard/")
        wait_for(lambda: driver.find_elements(By.ID, "token"), 15, what="the login form")
        driver.find_element(By.ID, "token").send_keys(admin_token)
        driver.find_element(By.CSS_SELECTOR, "form.login button").click()
        wait_for(lambda: "browser-node" in _text(driver, "nodes"), 15,
                 what="browser-node in the page's node list")
        assert "no tunnel" in _text(driver, "nodes")
        driver.find_element(By.XPATH, "//nav/button[text()='Pods']").click()
        wait_for(lambda: driver.find_elements(By.ID, "pods"), 15, what="the pod table")
        srv.kubectl("apply", "-f", "-", input=json.dumps(_POD))
        wait_for(lambda: "seen-live" in _text(driver, "pods"), 15,
                 what="the pod created with kubectl in the page (from its watch)")
        driver.find_element(By.ID, "logout").click()
        wait_for(lambda: driver.find_elements(By.ID, "token"), 15, what="the login form again")
        urls = _requested_urls(driver)
        assert urls and all(u.startswith(srv.url + "/") for u in urls), \
            f"requests left the server's origin: {[u for u in urls if not u.startswith(srv.url)]}"
    finally:
        driver.quit()
        srv.kubectl("delete", "pod", "seen-live", "--wait=false", check=False)


def _text(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By
    found = driver.find_elements(By.ID, element_id)
    return found[0].text if found else ""
