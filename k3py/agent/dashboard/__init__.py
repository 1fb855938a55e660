"""The node's own read-only dashboard (`k3py agent --dashboard-port PORT`, off by default, on
127.0.0.1 unless --dashboard-bind says otherwise): its pods and their logs, its devices and
twins and its MQTT traffic, from the agent's local state (feeds.py), so it works while the
server cannot be reached. See docs/dashboard.md, "At the edge".

Served under /dashboard/ as the server's dashboard is, with the same shared assets (k3py.webui:
libraries, stylesheet, live.js) and this package's static/ (edge.html, edge.js), and the same
Content-Security-Policy. Access: access.py (a token file on the node, a cookie; TLS off
loopback). Routes: POST /dashboard/login {"token"}, POST /dashboard/logout,
GET /dashboard/api/logs?namespace=&pod=&container=&follow= (the container's last lines, from
podman, and with follow=true what it writes next),
GET /dashboard/api/live: the tab's websocket, live.js's protocol ({"op": "watch", "id",
"resource": node | pods | devices | mqtt} and {"op": "cancel", "id"}), answered with a whole
"list" of the view's rows after each change. Nothing here writes."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os

from aiohttp import WSMsgType, web

from k3py.agent.dashboard.access import (
    COOKIE,
    TOKEN_FILE,
    cookie_value,
    ensure_token,
    serving_context,
)
from k3py.agent.dashboard.feeds import VIEWS, EdgeFeeds
from k3py.agent.devices.manager import DeviceManager
from k3py.agent.edgehub import EdgeHub
from k3py.agent.metamanager import MetaManager
from k3py.agent.pods import PodSyncer
from k3py.agent.runtime.libpod import LibpodAPI
from k3py.aio import cancel_and_wait
from k3py.api.objects import dumps, loads
from k3py.webui.assets import SECURITY_HEADERS, Asset, load_assets, served

__all__ = ["EdgeDashboard", "PREFIX"]

log = logging.getLogger("k3py.dashboard")

PREFIX = "/dashboard/"
MAX_FLUSHES_PER_SECOND = 4
MAX_SUBSCRIPTIONS = 8
LOG_TAIL = 1000  # lines of a container's log
LOG_BYTES = 1 << 20
MAX_FOLLOWS = 8  # logs followed at once
CLOSE_UNAUTHORIZED = 4401  # as the server's: live.js shows the login form
_HEADERS = SECURITY_HEADERS


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(body=dumps(body), status=status, content_type="application/json",
                        headers=_HEADERS)


def _refused(status: int, reason: str, message: str) -> web.Response:
    return _json({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": status,
                  "reason": reason, "message": message}, status)


class EdgeDashboard:
    """The dashboard's aiohttp app on its own listener."""

    def __init__(self, *, node: str, agent_dir: str, bind: str, port: int, meta: MetaManager,
                 pods: PodSyncer, devices: DeviceManager, hub: EdgeHub,
                 runtime: LibpodAPI) -> None:
        self.bind, self.port, self.agent_dir = bind, port, agent_dir
        self.pods, self.runtime = pods, runtime
        self.feeds = EdgeFeeds(node, meta, pods, devices, hub)
        self.assets = load_assets(__package__)
        self.token = ensure_token(agent_dir)
        self.tls = serving_context(agent_dir, bind)
        self._sockets: set[web.WebSocketResponse] = set()
        self._follows: set[asyncio.Task] = set()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(PREFIX.rstrip("/"), self.index)
        app.router.add_get("/", self.index)
        app.router.add_get(PREFIX, self.index)
        app.router.add_post(PREFIX + "login", self.login)
        app.router.add_post(PREFIX + "logout", self.logout)
        app.router.add_get(PREFIX + "api/logs", self.logs)
        app.router.add_get(PREFIX + "api/live", self.live)
        app.router.add_get(PREFIX + "{name:.+}", self.asset)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.bind, self.port, ssl_context=self.tls).start()
        scheme = "https" if self.tls else "http"
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        log.info("edge dashboard at %s://%s:%d%s (log in with the token in %s)", scheme, host,
                 self.port, PREFIX, os.path.join(self.agent_dir, TOKEN_FILE))

    async def stop(self) -> None:
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close()
        for task in list(self._follows):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        self.feeds.close()

    # ---------------------------------------------------------------- access

    def _logged_in(self, request: web.Request) -> bool:
        return hmac.compare_digest(request.cookies.get(COOKIE, ""), cookie_value(self.token))

    async def login(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError as e:
            return _refused(400, "BadRequest", f"the login body is not JSON: {e}")
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not hmac.compare_digest(token.strip(), self.token):
            return _refused(401, "Unauthorized", "that is not the token in "
                            f"{os.path.join(self.agent_dir, TOKEN_FILE)}")
        response = _json({"node": self.feeds.node})
        response.set_cookie(COOKIE, cookie_value(self.token), path=PREFIX, httponly=True,
                            samesite="Strict", secure=self.tls is not None, max_age=8 * 3600)
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        response = _json({"kind": "Status", "apiVersion": "v1", "status": "Success"})
        response.del_cookie(COOKIE, path=PREFIX)
        return response

    # ---------------------------------------------------------------- pages

    async def index(self, request: web.Request) -> web.StreamResponse:
        if request.path != PREFIX:
            raise web.HTTPFound(PREFIX)
        return self._asset(request, self.assets["edge.html"])

    async def asset(self, request: web.Request) -> web.StreamResponse:
        asset = self.assets.get(request.match_info["name"])
        if asset is None:
            return _refused(404, "NotFound", "the server could not find the requested resource")
        return self._asset(request, asset)

    @staticmethod
    def _asset(request: web.Request, asset: Asset) -> web.Response:
        body, headers = served(asset, request.headers.get("Accept-Encoding", ""))
        return web.Response(body=body, headers=headers)

    # ---------------------------------------------------------------- data

    async def logs(self, request: web.Request) -> web.StreamResponse:
        """The container's last LOG_TAIL lines, as text, straight from podman; with
        follow=true, then what it writes next, streamed until the page or the container goes
        (at most MAX_FOLLOWS at once: a Pi's podman serves each with a process)."""
        if not self._logged_in(request):
            return _refused(401, "Unauthorized", "log in to the node's dashboard")
        q = request.query
        namespace, pod, container = q.get("namespace", ""), q.get("pod", ""), q.get("container", "")
        follow = q.get("follow", "false")
        if follow not in ("true", "false"):
            return _refused(400, "BadRequest", f'follow is "true" or "false", not "{follow}"')
        name = self.pods.container_name(namespace, pod, container)
        if name is None:
            return _refused(404, "NotFound", f'container "{container}" of pod '
                            f'"{namespace}/{pod}" is not on this node')
        if follow == "true":
            return await self._follow_logs(request, name)
        chunks, size = [], 0
        async for chunk in self.runtime.logs(name, tail=LOG_TAIL):
            chunks.append(chunk)
            size += len(chunk)
            if size >= LOG_BYTES:
                break
        return web.Response(body=b"".join(chunks)[:LOG_BYTES], headers=_HEADERS,
                            content_type="text/plain", charset="utf-8")

    async def _follow_logs(self, request: web.Request, name: str) -> web.StreamResponse:
        if len(self._follows) >= MAX_FOLLOWS:
            return _refused(429, "TooManyRequests", f"{MAX_FOLLOWS} logs are followed on this "
                            "node's dashboard already: close one")
        response = web.StreamResponse(headers={**_HEADERS, "Content-Type":
                                               "text/plain; charset=utf-8"})
        task = asyncio.current_task()
        self._follows.add(task)
        try:
            await response.prepare(request)
            with contextlib.suppress(ConnectionResetError):
                async for chunk in self.runtime.logs(name, follow=True, tail=LOG_TAIL):
                    await response.write(chunk)
        finally:
            self._follows.discard(task)
        return response

    async def live(self, request: web.Request) -> web.StreamResponse:
        """live.js's websocket; only from the page's own origin, closed with
        CLOSE_UNAUTHORIZED without the login cookie."""
        if request.headers.get("Origin") != f"{request.scheme}://{request.host}":
            return _refused(403, "Forbidden", "the dashboard's websocket takes only its own "
                            "origin")
        ws = web.WebSocketResponse(heartbeat=30.0)
        await ws.prepare(request)
        if not self._logged_in(request):
            await ws.close(code=CLOSE_UNAUTHORIZED, message=b"log in again")
            return ws
        self._sockets.add(ws)
        subscriptions: dict[str, asyncio.Task] = {}
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._handle(ws, subscriptions, msg.data)
        finally:
            self._sockets.discard(ws)
            for task in subscriptions.values():
                await cancel_and_wait(task)
        return ws

    def _handle(self, ws: web.WebSocketResponse, subscriptions: dict[str, asyncio.Task],
                data: str) -> None:
        try:
            msg = loads(data)
        except ValueError:
            msg = None
        if not isinstance(msg, dict) or not isinstance(msg.get("id"), str):
            return
        sid = msg["id"]
        old = subscriptions.pop(sid, None)
        if old is not None:
            old.cancel()
        view = msg.get("resource")
        if msg.get("op") != "watch" or len(subscriptions) >= MAX_SUBSCRIPTIONS:
            return
        if view not in VIEWS:
            subscriptions[sid] = asyncio.create_task(_send(ws, {
                "id": sid, "type": "error", "code": 404, "reason": "NotFound",
                "message": f"no view {view!r} (one of {', '.join(VIEWS)})"}))
            return
        subscriptions[sid] = asyncio.create_task(self._follow(ws, sid, view))

    async def _follow(self, ws: web.WebSocketResponse, sid: str, view: str) -> None:
        with contextlib.suppress(ConnectionResetError):
            async for rows in self.feeds.follow(view, 1 / MAX_FLUSHES_PER_SECOND):
                await _send(ws, {"id": sid, "type": "list", "rows": rows,
                                 "resourceVersion": ""})


async def _send(ws: web.WebSocketResponse, message: dict) -> None:
    if not ws.closed:
        await ws.send_str(dumps(message).decode())
