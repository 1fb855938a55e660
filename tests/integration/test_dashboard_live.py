"""The dashboard's live websocket and its login session on a real server (--disable-agent),
compacting its store every half second down to its last 20 revisions:

- a logout made with another request closes the session's open connections at once: its
  live websocket with 4401 (the page's "log in again") and a watch it streams with the cookie
  (exec terminals and followed logs are held the same way);
- a subscription resumed from a resourceVersion the store has compacted meanwhile is
  answered 410, and the tab's relist (a subscription without one) lists what is there now;
- the page itself (live.js, in a real Chromium): a tab kept offline while pods change and the
  store compacts past its resume point is answered 410 when it reconnects, subscribes again
  without a resourceVersion and shows the pods as they are now, with no reload;
- a burst of 50 creates reaches the tab coalesced: no more flushes than MAX_FLUSHES_PER_SECOND
  per second from the burst's first create to the last message, plus one;
- in the browser, a list sent in several frames (more events than LIST_CHUNK) is shown whole
  in the Events view, and an event made afterwards joins it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import aiohttp
import pytest

from k3py.server.dashboard.live import CLOSE_UNAUTHORIZED, LIST_CHUNK, MAX_FLUSHES_PER_SECOND
from tests.harness import ServerProcess, wait_for
from tests.integration.storeload import client_ssl
from tests.integration.test_dashboard import (  # noqa: F401 - admin_token, browser: fixtures
    MARKER,
    _event,
    _event_column,
    _log_in,
    _login,
    _next,
    _open,
    _performance_log,
    _pod,
    _session,
    _text,
    admin_token,
    browser,
    run,
)

pytestmark = pytest.mark.integration

RETAIN = 20  # --compact-min-retain: revisions the store keeps
BURST = 50


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("dashboard-live") / "srv", extra_args=[
        "--compact-interval", "0.5", "--compact-min-retain", str(RETAIN)])
    try:
        yield server.start()
    finally:
        server.stop()


def _configmap(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": {"k": "v"}}


async def _create(srv: ServerProcess, namespace: str, names: list[str]) -> None:
    """Create the namespace's ConfigMaps one after the other, as fast as the server takes
    them, as the admin (its client certificate): each its own write and watch event."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl(srv)),
                                     timeout=aiohttp.ClientTimeout(total=20)) as http:
        for name in names:
            async with http.post(f"{srv.url}/api/v1/namespaces/{namespace}/configmaps",
                                 json=_configmap(name)) as r:
                assert r.status == 201, await r.text()


def _live(http: aiohttp.ClientSession, srv: ServerProcess, headers: dict[str, str]):
    return http.ws_connect(srv.url + "/dashboard/api/live",
                           headers={"Cookie": headers["Cookie"], "Origin": srv.url})


def _watch(namespace: str, sid: str, rv: str = "", resource: str = "configmaps") -> dict:
    return {"op": "watch", "id": sid, "group": "", "resource": resource,
            "namespace": namespace, "resourceVersion": rv or None}


async def _compacted(ws: aiohttp.ClientWebSocketResponse, watch: dict) -> dict:
    """Resume `watch` (from its resourceVersion, with changes after it) until the store's
    compaction has passed that resourceVersion: the answer then, a 410 (run()'s deadline)."""
    answer = {"type": "events"}
    while answer["type"] == "events":
        await ws.send_json(watch)
        answer = await _next(ws, watch["id"])
        if answer["type"] == "events":
            await asyncio.sleep(0.2)  # the store compacts every 0.5 s
    return answer


def test_logout_closes_the_sessions_live_socket_and_streams(srv, admin_token):  # noqa: F811
    async def check() -> None:
        async with await _session() as http:
            headers = await _login(http, srv.url, admin_token)
            async with _live(http, srv, headers) as ws, \
                    http.get(srv.url + "/api/v1/namespaces/default/configmaps?watch=true",
                             headers=headers) as stream:
                assert stream.status == 200, await stream.text()
                await ws.send_json(_watch("default", "c"))
                assert (await _next(ws, "c"))["type"] == "list"
                async with http.post(srv.url + "/dashboard/logout", headers=headers) as r:
                    assert r.status == 200, await r.text()
                closed = await ws.receive()
                assert closed.type == aiohttp.WSMsgType.CLOSE, closed
                assert closed.data == CLOSE_UNAUTHORIZED, closed
                with contextlib.suppress(aiohttp.ClientPayloadError):  # cut, or ended
                    await stream.content.read()  # the end, long before the watch's own
            async with _live(http, srv, headers) as ws:  # and no new one
                again = await ws.receive()
                assert again.type == aiohttp.WSMsgType.CLOSE and again.data == CLOSE_UNAUTHORIZED
    run(check())


def test_a_compacted_resume_is_answered_410_and_the_tab_relists(srv, admin_token):  # noqa: F811
    srv.kubectl("create", "namespace", "relist")

    async def check() -> None:
        async with await _session() as http:
            headers = await _login(http, srv.url, admin_token)
            async with _live(http, srv, headers) as ws:
                await ws.send_json(_watch("relist", "r"))
                listed = await _next(ws, "r")
            assert listed["type"] == "list", listed
            rv = listed["resourceVersion"]
            # while the tab is away: more writes than the store keeps, then its compaction
            await _create(srv, "relist", [f"away-{i}" for i in range(RETAIN + 10)])
            async with _live(http, srv, headers) as ws:
                answer = await _compacted(ws, _watch("relist", "r", rv))
                assert answer["type"] == "error" and answer["code"] == 410, answer
                await ws.send_json(_watch("relist", "r"))  # what the page does on a 410
                relisted = await _next(ws, "r")
            assert relisted["type"] == "list", relisted
            assert {row["name"] for row in relisted["rows"]} >= {
                f"away-{i}" for i in range(RETAIN + 10)}, relisted
    run(check())


_OFFLINE = {"latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}


@contextlib.contextmanager
def _tab_offline(driver):
    """The browser offline (DevTools' network emulation, which refuses new connections) and
    the tab's open websocket closed, as a dropped link would: the page keeps reconnecting, and
    cannot until the block ends."""
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": True, **_OFFLINE})
    try:
        prototype = driver.execute_cdp_cmd("Runtime.evaluate", {
            "expression": "WebSocket.prototype"})["result"]["objectId"]
        sockets = driver.execute_cdp_cmd("Runtime.queryObjects", {
            "prototypeObjectId": prototype})["objects"]["objectId"]
        driver.execute_cdp_cmd("Runtime.callFunctionOn", {
            "objectId": sockets, "functionDeclaration":
            "function () { this.forEach((ws) => ws.close()); }"})
        yield
    finally:
        driver.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": False,
                                                                    **_OFFLINE})


def _frames(driver, method: str) -> list[dict]:
    """The live websocket's messages the page sent or received so far (Chrome's log)."""
    return [json.loads(m["params"]["response"]["payloadData"])
            for m in _performance_log(driver) if m["method"] == method]


def test_the_page_relists_on_410_and_shows_the_pods_now(srv, admin_token, browser):  # noqa: F811
    srv.kubectl("create", "namespace", "gap")
    srv.kubectl("apply", "-f", "-", input=_pod("before-gap", "gap"))
    browser.get(srv.url + "/dashboard/")
    _log_in(browser, admin_token)
    _open(browser, "Pods", "pods")
    wait_for(lambda: "before-gap" in _text(browser, "pods"), 15, what="before-gap in the page")
    # the store's revision now: the page's resume point is at most this
    rv = json.loads(srv.kubectl("get", "--raw", "/api/v1/namespaces/gap/pods").stdout)[
        "metadata"]["resourceVersion"]
    documents = len([m for m in _performance_log(browser) if m["method"] ==
                     "Network.requestWillBeSent" and m["params"]["type"] == "Document"])
    received = len(_frames(browser, "Network.webSocketFrameReceived"))

    async def away() -> None:  # while the tab is offline: the pods change, the store compacts
        await _create(srv, "gap", [f"away-{i}" for i in range(RETAIN + 10)])
        async with await _session() as http:
            headers = await _login(http, srv.url, admin_token)
            async with _live(http, srv, headers) as ws:
                answer = await _compacted(ws, _watch("gap", "g", rv, "pods"))
        assert answer["type"] == "error" and answer["code"] == 410, answer

    with _tab_offline(browser):
        srv.kubectl("delete", "pod", "-n", "gap", "before-gap", "--wait=false")
        srv.kubectl("apply", "-f", "-", input=_pod("after-gap", "gap"))
        run(away())
    wait_for(lambda: "after-gap" in _text(browser, "pods")
             and "before-gap" not in _text(browser, "pods"), 20,
             what=f"the pods as they are now in the page (it shows {_text(browser, 'pods')!r})")
    gone = [f for f in _frames(browser, "Network.webSocketFrameReceived")[received:]
            if f.get("type") == "error"]
    assert gone and all(f["code"] == 410 for f in gone), gone  # its resume point, refused
    relists = [f for f in _frames(browser, "Network.webSocketFrameSent")
               if f.get("id") == gone[0]["id"] and f.get("op") == "watch"]
    assert "resourceVersion" not in relists[-1], relists  # listed again, from now
    assert documents == len([m for m in _performance_log(browser) if m["method"] ==
                             "Network.requestWillBeSent" and m["params"]["type"] == "Document"])


def test_a_burst_of_creates_is_coalesced_to_four_flushes_a_second(srv, admin_token):  # noqa: F811
    srv.kubectl("create", "namespace", "burst")
    names = {f"burst-{i}" for i in range(BURST)}

    async def check() -> None:
        async with await _session() as http:
            headers = await _login(http, srv.url, admin_token)
            async with _live(http, srv, headers) as ws:
                await ws.send_json(_watch("burst", "b"))
                assert (await _next(ws, "b"))["type"] == "list"
                started = time.monotonic()
                creating = asyncio.create_task(_create(srv, "burst", sorted(names)))
                seen: dict[str, str] = {}
                flushes = 0
                while not names <= set(seen):  # (the namespace's kube-root-ca.crt aside)
                    message = await _next(ws, "b")
                    assert message["type"] == "events", message
                    flushes += 1
                    seen.update((row["name"], etype) for etype, row in message["events"])
                last = time.monotonic()
                await creating
        assert {seen[name] for name in names} == {"ADDED"}, seen
        bound = MAX_FLUSHES_PER_SECOND * (last - started) + 1
        assert flushes <= bound, \
            f"{flushes} flushes for {BURST} creates in {last - started:.2f} s (at most {bound:.1f})"
    run(check())


def test_the_page_shows_a_list_sent_in_frames(srv, admin_token, browser):  # noqa: F811
    srv.kubectl("create", "namespace", "frames")
    listed = [_event(f"framed-{i:03d}", "ConfigMap", f"cm-{i:03d}", "Normal", "Framed", "frames")
              for i in range(2 * LIST_CHUNK + 5)]
    srv.kubectl("create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                       "items": listed}))
    browser.get(srv.url + "/dashboard/")
    browser.delete_all_cookies()  # an earlier test's session: this one logs in afresh
    browser.refresh()
    _log_in(browser, admin_token)
    _open(browser, "Events", "events")
    wanted = {f"ConfigMap/cm-{i:03d}" for i in range(len(listed))}

    def shown() -> set[str]:
        return set(_event_column(browser, 4)) & (wanted | {"ConfigMap/late"})
    wait_for(lambda: shown() == wanted, 15, 0.2,
             what=f"the {len(wanted)} events of a list in frames in the Events view")
    srv.kubectl("create", "-f", "-", input=json.dumps(
        _event("framed-late", "ConfigMap", "late", "Normal", "Framed", "frames")))
    wait_for(lambda: shown() == wanted | {"ConfigMap/late"}, 15, 0.2,
             what="an event made after the list in the Events view")
