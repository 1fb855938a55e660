"""The dashboard's one websocket per tab (`/dashboard/api/live`): the tab's views subscribe
and unsubscribe over it, each subscription a list + watch of one resource in the server's own
watch fan-out (Registry.watch), sent as slim rows (rows.py), coalesced to at most
MAX_FLUSHES_PER_SECOND messages per subscription.

Messages from the tab (JSON):
  {"op": "watch", "id": ID, "group": G, "version": V?, "resource": PLURAL, "namespace": NS?,
   "labelSelector": S?, "resourceVersion": RV?}  without RV: a list first; with RV: resume
  {"op": FEED, "id": ID, ...}   one of the `feeds` the socket was given, with the feed's own
     fields: "tunnels" (every node's tunnel figures, again on each change; tunnels_feed),
     "metrics" {"kind": "nodes"|"pods", "namespace": NS?, "name": N?} (CPU and memory of the
     last 15 minutes, then each new point; metrics_feed), mqtt.py's "mqtt" and "mqtttail",
     logs.py's "logs" {"namespace", "pods": [...], ...} (pods' logs in one stream)
  {"op": "cancel", "id": ID}
To the tab:
  {"id": ID, "type": "list", "rows": [...], "resourceVersion": RV, "more": true?}
     (the list in frames of LIST_CHUNK rows, all at RV; "more": another frame follows, so
     the tab shows the rows once the last has come)
  {"id": ID, "type": "events", "events": [[TYPE, row], ...], "resourceVersion": RV}
     (one event per object in a batch, its newest row, ADDED if it was added in the
     batch; a DELETED row is {"uid": ...})
  {"id": ID, "type": "ended", "resourceVersion": RV}   the watch ended: resume from RV
  {"id": ID, "type": "feed", "data": {...}}   what a feed yields, each time it does:
     "tunnels": {NAME: figures} (tunnels.py; as `list nodes`); "metrics": {"reset": true?,
     "series": {NAME: {"times", "cpu", "memory", "containers"?}}} (reset: the history; then
     new points to append; one pod's also has its containers' {NAME: {"cpu", "memory"}}; as
     `list`/`get` of metrics.k8s.io); "logs": {"reset": true} then {"lines": [[POD, text]],
     "dropped"?, "ended"?} (logs.py; as `get pods/log`)
  {"id": ID, "type": "error", "code": 403|404|410|400, "reason": R, "message": M}
     (410: the RV is compacted, list again)
Authentication is the login cookie; the marker header a browser cannot put on a websocket is
replaced by the Origin check (the page's own origin only). Each subscription is authorized
as the user for list and watch."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from aiohttp import WSMsgType, web

from k3py.api import errors
from k3py.api.kinds.metrics import GROUP as METRICS_GROUP
from k3py.api.objects import dumps, loads
from k3py.api.resources import Resource
from k3py.server.apiserver.app import ApiServer
from k3py.server.apiserver.auth import AuthorizerChain, User
from k3py.server.apiserver.watch import stop_pump
from k3py.server.dashboard.metricshistory import MetricsHistory, MetricsQuery
from k3py.server.dashboard.tunnels import TunnelFigures
from k3py.server.registry import ListOptions
from k3py.webui.rows import project

__all__ = ["LiveSocket", "Feed", "MAX_FLUSHES_PER_SECOND", "CLOSE_UNAUTHORIZED",
           "tunnels_feed", "metrics_feed"]

MAX_FLUSHES_PER_SECOND = 4
CLOSE_UNAUTHORIZED = 4401  # the websocket close code for "log in again"
MAX_SUBSCRIPTIONS = 32  # per tab
# rows per "list" frame: a frame of pods stays under aiohttp's 16 KiB for compressing on the
# loop (not in a thread), and a list of any length holds one page of objects at a time
LIST_CHUNK = 50
# a feed: (the user, the tab's message) -> what to send, as it comes; a StatusError it raises
# is sent to the tab as an error
Feed = Callable[[User, dict], AsyncGenerator[dict, None]]


def _event_rv(obj: Any) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def tunnels_feed(authorizer: AuthorizerChain, figures: TunnelFigures) -> Feed:
    """The "tunnels" feed: every node's tunnel figures, again on each change (`list nodes`)."""
    async def feed(user: User, _msg: dict) -> AsyncGenerator[dict, None]:
        authorizer.authorize(user, "list", "", "nodes", None)
        async for table in figures.follow(1 / MAX_FLUSHES_PER_SECOND):
            yield table
    return feed


def metrics_feed(authorizer: AuthorizerChain, history: MetricsHistory) -> Feed:
    """The "metrics" feed: the history of the series a query matches, then their new points,
    authorized as `kubectl top` is."""
    async def feed(user: User, msg: dict) -> AsyncGenerator[dict, None]:
        query = MetricsQuery.parse(msg)
        authorizer.authorize(user, query.verb, METRICS_GROUP, query.kind, query.namespace,
                             query.name)
        async for message in history.follow(query, 1 / MAX_FLUSHES_PER_SECOND):
            yield message
    return feed


class LiveSocket:
    """One tab's websocket and its subscriptions (id -> task)."""

    def __init__(self, api: ApiServer, ws: web.WebSocketResponse, user: User,
                 feeds: dict[str, Feed]) -> None:
        self.api = api
        self.feeds = feeds
        self.ws = ws
        self.user = user
        self.subscriptions: dict[str, asyncio.Task] = {}

    async def serve(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    self._handle(loads(msg.data))
                except errors.StatusError as e:
                    await self._send_error("", e)
                except ValueError as e:
                    await self._send_error("", errors.bad_request(f"not a JSON message: {e}"))
        finally:
            for task in self.subscriptions.values():
                task.cancel()
            for task in self.subscriptions.values():
                with contextlib.suppress(BaseException):
                    await task

    def _handle(self, msg: Any) -> None:
        if not isinstance(msg, dict) or not isinstance(msg.get("id"), str):
            raise errors.bad_request('a message needs "op" and a string "id"')
        sid = msg["id"]
        old = self.subscriptions.pop(sid, None)
        if old is not None:
            old.cancel()
        if msg.get("op") == "cancel":
            return
        op = msg.get("op")
        if op not in ("watch", *self.feeds):
            raise errors.bad_request(f'unknown op {op!r} (one of watch, '
                                     f'{", ".join(self.feeds)} or cancel)')
        if len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            raise errors.bad_request(f"at most {MAX_SUBSCRIPTIONS} subscriptions per tab")
        if op == "watch":
            follow = self._subscription(sid, msg)
        else:
            follow = self._feed(sid, self.feeds[op](self.user, msg))
        self.subscriptions[sid] = asyncio.create_task(follow)

    async def _feed(self, sid: str, feed: AsyncGenerator[dict, None]) -> None:
        try:
            async with contextlib.aclosing(feed):  # its cleanup runs when the tab cancels
                async for data in feed:
                    await self._send({"id": sid, "type": "feed", "data": data})
        except errors.StatusError as e:
            await self._send_error(sid, e)
        except ConnectionResetError:
            pass

    def _resource(self, msg: dict) -> tuple[Resource, str | None]:
        group, plural = str(msg.get("group") or ""), str(msg.get("resource") or "")
        version = msg.get("version")
        res = self.api.resources.get(group, str(version), plural) if version \
            else self.api.resources.find(group, plural)
        if res is None:
            raise errors.not_found(group, plural, "")
        namespace = str(msg.get("namespace") or "") or None if res.namespaced else None
        return res, namespace

    async def _subscription(self, sid: str, msg: dict) -> None:
        try:
            res, namespace = self._resource(msg)
            for verb in ("list", "watch"):
                self.api.authorizer.authorize(self.user, verb, res.group, res.plural, namespace)
            rv = str(msg.get("resourceVersion") or "")
            selector = str(msg.get("labelSelector") or "")
            if not rv:
                rv = await self._send_list(sid, res, namespace, selector)
            stream = await self.api.registry.watch(res, namespace, resource_version=rv,
                                                   label_selector=selector)
            rv = await self._forward(sid, res, stream, rv)
            await self._send({"id": sid, "type": "ended", "resourceVersion": rv})
        except errors.StatusError as e:
            await self._send_error(sid, e)
        except asyncio.CancelledError:
            raise
        except ConnectionResetError:
            pass

    async def _send_list(self, sid: str, res: Resource, namespace: str | None,
                         selector: str) -> str:
        """Send the list in frames of LIST_CHUNK rows, read a page at a time at the first
        page's revision (the API's own paging: a page compacted meanwhile is a 410, and the
        tab lists again), and return that resourceVersion. One page's objects and rows are
        held at a time, none once sent (a subscription lives as long as its tab)."""
        options = ListOptions(label_selector=selector, limit=LIST_CHUNK)
        while True:
            rv, token = await self._send_page(sid, res, namespace, options)
            if not token:
                return rv
            options = replace(options, continue_=token)

    async def _send_page(self, sid: str, res: Resource, namespace: str | None,
                         options: ListOptions) -> tuple[str, str]:
        """One frame of the list: (its resourceVersion, the continue token of the next)."""
        page = await self.api.registry.list(res, namespace, options)
        meta = page["metadata"]
        message = {"id": sid, "type": "list", "resourceVersion": meta["resourceVersion"],
                   "rows": [project(res.group, res.plural, obj) for obj in page["items"]]}
        if meta.get("continue"):
            message["more"] = True
        await self._send(message)
        return meta["resourceVersion"], meta.get("continue", "")

    async def _forward(self, sid: str, res: Resource, stream: AsyncIterator, rv: str) -> str:
        """Coalesce the watch's events per object and send them, at most
        MAX_FLUSHES_PER_SECOND times a second; the last resourceVersion sent, once it ends."""
        pending: dict[str, list] = {}
        state = {"rv": rv, "done": False}
        ready = asyncio.Event()

        async def pump() -> None:
            try:
                async for etype, obj in stream:
                    uid = (obj.get("metadata") or {}).get("uid", "")
                    row = {"uid": uid} if etype == "DELETED" else project(res.group, res.plural, obj)
                    before = pending.pop(uid, None)  # re-inserted last: keeps event order
                    if before is not None and before[0] == "ADDED" and etype == "MODIFIED":
                        etype = "ADDED"  # still new to the tab
                    pending[uid] = [etype, row]
                    state["rv"] = _event_rv(obj) or state["rv"]
                    ready.set()
            finally:
                state["done"] = True
                ready.set()
        pump_task = asyncio.create_task(pump())
        sent_rv = rv
        try:
            while True:
                await ready.wait()
                ready.clear()
                if pending:
                    sent_rv = state["rv"]
                    await self._send_events(sid, pending, sent_rv)
                if state["done"] and not pending:
                    return sent_rv
                await asyncio.sleep(1 / MAX_FLUSHES_PER_SECOND)
        finally:
            await stop_pump(pump_task, stream)

    async def _send_events(self, sid: str, pending: dict[str, list], rv: str) -> None:
        """Send what `pending` holds and empty it (the watch fills it again meanwhile); its
        rows are not kept once sent (not until the next flush)."""
        events = list(pending.values())
        pending.clear()
        await self._send({"id": sid, "type": "events", "events": events, "resourceVersion": rv})

    async def _send(self, message: dict) -> None:
        if not self.ws.closed:
            await self.ws.send_str(dumps(message).decode())

    async def _send_error(self, sid: str, e: errors.StatusError) -> None:
        await self._send({"id": sid, "type": "error", "code": e.code, "reason": e.reason,
                          "message": e.message})
