"""The web dashboard served by `k3py server` under /dashboard/ on the API port (off with
`--disable dashboard`); see docs/dashboard.md.

Static assets (assets.py) need no credential: they hold no data. The page's data calls go to
the ordinary API, authenticated by the login cookie (logins.py) and authorized as that user;
the dashboard-only routes are /dashboard/api/login-links (a one-time login code for the
caller, which `k3py dashboard-url` prints in a link), /dashboard/api/tunnels (each node's
tunnel figures from CloudHub's sessions, authorized as `list nodes`; tunnels.py),
/dashboard/api/twinhistory (a twin's reported values of the last 10 minutes, as `get devices`;
twinhistory.py), /dashboard/api/session (who is logged in, and whether
the dashboard is read-only) and /dashboard/api/live, the tab's one websocket (live.py; it
also streams the nodes' and pods' usage of the last 15 minutes, metricshistory.py, serves
the nodes' MQTT figures and live tails, mqtt.py, and pods' logs, logs.py).
With `--dashboard-read-only` the API refuses every write made with the login cookie (a review
such as SelfSubjectRulesReview is not a write). Installed by bootstrap.install_routes, before
the API's catch-all route."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from k3py.api import errors
from k3py.server.apiserver.app import ApiServer
from k3py.server.apiserver.auth import User
from k3py.server.apiserver.negotiation import json_response
from k3py.server.dashboard.live import (
    CLOSE_UNAUTHORIZED,
    MAX_FLUSHES_PER_SECOND,
    LiveSocket,
    metrics_feed,
    tunnels_feed,
)
from k3py.server.dashboard.logins import COOKIE, LoginLinks, LoginSessions, has_marker, same_origin
from k3py.server.dashboard.logs import LogsFeed
from k3py.server.dashboard.metricshistory import MetricsHistory
from k3py.server.dashboard.mqtt import MqttFeeds
from k3py.server.dashboard.tunnels import TunnelFigures
from k3py.server.dashboard.twinhistory import TwinHistory
from k3py.server.edge.cloudhub import CloudHub
from k3py.server.edge.peerrelay import PeerRelay
from k3py.server.metrics.store import UsageStore
from k3py.webui.assets import Asset, load_assets, served

__all__ = ["ADDON", "PREFIX", "install"]

ADDON = "dashboard"  # its --disable name
PREFIX = "/dashboard/"
_READS = ("GET", "HEAD", "OPTIONS")
_REVIEWS = "/apis/authorization.k8s.io/"  # created, answered, never stored: not writes
_STREAMS = ("/exec", "/attach", "/portforward")  # a GET upgraded to a websocket, yet no read


def _asset_response(request: web.Request, asset: Asset) -> web.Response:
    body, headers = served(asset, request.headers.get("Accept-Encoding", ""))
    return web.Response(body=body, headers=headers)


class Dashboard:
    """The dashboard's routes over one ApiServer and CloudHub's node sessions."""

    def __init__(self, api: ApiServer, hub: CloudHub, read_only: bool = False,
                 usage: UsageStore | None = None, peers: PeerRelay | None = None) -> None:
        self.api = api
        self.tunnel_figures = TunnelFigures(hub)
        self.metrics_history = MetricsHistory(usage)  # fed whether or not a tab is open
        self.twin_history = TwinHistory()
        mqtt = MqttFeeds(api.authorizer, hub, 1 / MAX_FLUSHES_PER_SECOND, peers)
        logs = LogsFeed(api.authorizer, hub, 1 / MAX_FLUSHES_PER_SECOND, peers)
        self.feeds = {"tunnels": tunnels_feed(api.authorizer, self.tunnel_figures),
                      "metrics": metrics_feed(api.authorizer, self.metrics_history),
                      "logs": logs.feed,
                      **mqtt.feeds()}  # the live websocket's ops beside "watch"
        self.read_only = read_only
        self.logins = LoginSessions()
        self.links = LoginLinks()
        self.assets = load_assets(__package__)

    def authenticate_cookie(self, request: web.Request) -> User | None:
        """The API's cookie authenticator: the session's user; in read-only mode a write
        with the cookie is refused here, whatever the user's RBAC allows. The request (an
        exec terminal, followed logs, a watch...) is cancelled, its connection closed, if the
        session ends before it does."""
        user = self.logins.authenticate(request)
        if user is not None and self.read_only and (
                request.path.endswith(_STREAMS)
                or request.method not in _READS and not request.path.startswith(_REVIEWS)):
            raise errors.forbidden("the dashboard is read-only (--dashboard-read-only): "
                                   f"{request.method} is refused")
        task = asyncio.current_task()
        if user is not None and task is not None:
            forget = self.logins.track(request.cookies[COOKIE], task.cancel)
            task.add_done_callback(lambda _task: forget())
        return user

    def _user(self, request: web.Request) -> User:
        """The caller of a dashboard route: the cookie's user (with the marker) or any API
        credential's, but never a node's (the dashboard is for people)."""
        user = self.api.authenticator.require(request)
        if user.node_name is not None:
            raise errors.forbidden("a node's credential cannot use the dashboard")
        return user

    async def index(self, request: web.Request) -> web.StreamResponse:
        if request.path == PREFIX.rstrip("/"):
            raise web.HTTPFound(PREFIX)
        return _asset_response(request, self.assets["index.html"])

    async def asset(self, request: web.Request) -> web.StreamResponse:
        asset = self.assets.get(request.match_info["name"])
        if asset is None:
            raise errors.StatusError(404, "NotFound",
                                     "the server could not find the requested resource")
        return _asset_response(request, asset)

    async def login(self, request: web.Request) -> web.StreamResponse:
        """Body {"token": "..."}, a bearer token the API accepts (not a node's), or
        {"code": "..."}, a one-time code from a login link (`k3py dashboard-url`)."""
        if not has_marker(request):
            raise errors.bad_request("a dashboard login needs the X-K3py-Dashboard: 1 header")
        peer = request.remote or ""
        if self.api.authenticator.failures.blocked(peer, time.monotonic()):
            raise errors.too_many_requests("too many failed authentication attempts from this "
                                           "address; try again later")
        try:
            body = await request.json()
        except ValueError as e:
            raise errors.bad_request(f"the login body is not JSON: {e}") from None
        body = body if isinstance(body, dict) else {}
        token, code = body.get("token"), body.get("code")
        if isinstance(code, str) and code:
            user, what = self.links.take(code), "dashboard login link"
        elif isinstance(token, str) and token.strip():
            user = self.api.authenticator.authenticate_token(token.strip())
            what = "dashboard bearer token"
        else:
            raise errors.bad_request('the login body needs a "token" or a "code" string')
        if user is None:
            self.api.authenticator.failures.failed(peer, what, time.monotonic())
            raise errors.unauthorized()
        if user.node_name is not None:
            raise errors.forbidden("a node's credential cannot log in to the dashboard")
        response = json_response({"user": user.name, "groups": list(user.groups)})
        response.set_cookie(COOKIE, self.logins.open(user), path="/", secure=True,
                            httponly=True, samesite="Strict", max_age=int(self.logins.ttl))
        return response

    async def login_link(self, request: web.Request) -> web.StreamResponse:
        """POST: a one-time login code for the caller itself (`k3py dashboard-url` calls it
        with the admin's client certificate): {"code", "expiresInSeconds"}. Not with the
        dashboard's own cookie (a session cannot make more sessions), nor a node's credential."""
        if request.cookies.get(COOKIE) and has_marker(request):
            raise errors.forbidden("a login link cannot be made from a dashboard session")
        user = self._user(request)
        return json_response({"code": self.links.issue(user),
                              "expiresInSeconds": int(self.links.ttl)}, status=201)

    async def logout(self, request: web.Request) -> web.StreamResponse:
        if not has_marker(request):
            raise errors.bad_request("a dashboard logout needs the X-K3py-Dashboard: 1 header")
        sid = request.cookies.get(COOKIE)
        if sid:
            self.logins.close(sid)
        response = json_response(errors.status_success())
        response.del_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="Strict")
        return response

    async def tunnels(self, request: web.Request) -> web.StreamResponse:
        """{"nodes": {name: figures}}: each node's tunnel, here or on a peer (TunnelFigures)."""
        user = self._user(request)
        self.api.authorizer.authorize(user, "list", "", "nodes", None)
        return json_response({"nodes": self.tunnel_figures.table()})

    async def twin_history_points(self, request: web.Request) -> web.StreamResponse:
        """?namespace=&name=&property=: {"times": [epoch seconds], "values": [numbers]}, the
        twin's reported values of the last 10 minutes (twinhistory.py)."""
        user = self._user(request)
        query = request.query
        namespace, name, prop = (query.get(k, "") for k in ("namespace", "name", "property"))
        if not (namespace and name and prop):
            raise errors.bad_request("twinhistory needs namespace, name and property")
        self.api.authorizer.authorize(user, "get", "devices.kubeedge.io", "devices", namespace,
                                      name)
        times, values = self.twin_history.points(namespace, name, prop)
        return json_response({"times": times, "values": values})

    async def session(self, request: web.Request) -> web.StreamResponse:
        """{"user", "groups", "readOnly"}: what the page shows and hides."""
        user = self._user(request)
        return json_response({"user": user.name, "groups": list(user.groups),
                              "readOnly": self.read_only})

    async def live(self, request: web.Request) -> web.StreamResponse:
        """The tab's websocket; closed with CLOSE_UNAUTHORIZED when it has no session, and
        when its session ends (logout, expiry)."""
        if not same_origin(request):
            raise errors.forbidden("the dashboard's websocket takes only its own origin")
        sid = request.cookies.get(COOKIE)
        user = self.logins.user(sid) if sid else None
        ws = web.WebSocketResponse(heartbeat=30.0)
        await ws.prepare(request)
        if user is None:
            await ws.close(code=CLOSE_UNAUTHORIZED, message=b"log in again")
            return ws
        closing: list[asyncio.Task] = []

        def close() -> None:
            closing.append(asyncio.create_task(
                ws.close(code=CLOSE_UNAUTHORIZED, message=b"log in again")))
        forget = self.logins.track(sid, close)
        try:
            await LiveSocket(self.api, ws, user, self.feeds).serve()
        finally:
            forget()
            await asyncio.gather(*closing, return_exceptions=True)
        return ws


def install(app: web.Application, api: ApiServer, hub: CloudHub,
            read_only: bool = False, usage: UsageStore | None = None,
            peers: PeerRelay | None = None) -> None:
    """Serve the dashboard and let the API accept its login cookie; `usage`: the nodes'
    usage reports (None with --disable metrics-server), whose history the page graphs;
    `peers`: the other servers on a shared datastore (a node's MQTT tail and a pod's log
    through theirs)."""
    dashboard = Dashboard(api, hub, read_only, usage, peers)
    api.authenticator.cookie_authenticator = dashboard.authenticate_cookie

    async def start_history(_app: web.Application) -> None:
        dashboard.twin_history.start(api.registry)

    async def stop_history(_app: web.Application) -> None:
        await dashboard.twin_history.stop()
    app.on_startup.append(start_history)
    app.on_cleanup.append(stop_history)
    app.router.add_get(PREFIX.rstrip("/"), dashboard.index)
    app.router.add_get(PREFIX, dashboard.index)
    app.router.add_post(PREFIX + "login", dashboard.login)
    app.router.add_post(PREFIX + "logout", dashboard.logout)
    app.router.add_get(PREFIX + "api/tunnels", dashboard.tunnels)
    app.router.add_get(PREFIX + "api/session", dashboard.session)
    app.router.add_get(PREFIX + "api/twinhistory", dashboard.twin_history_points)
    app.router.add_post(PREFIX + "api/login-links", dashboard.login_link)
    app.router.add_get(PREFIX + "api/live", dashboard.live)
    app.router.add_get(PREFIX + "{name:.+}", dashboard.asset)
