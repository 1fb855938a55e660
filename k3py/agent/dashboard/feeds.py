"""What the node's edge dashboard shows, from the agent's own state only (so it works while the
server is unreachable): the node and its tunnel, its pods (metamanager's desired pods with the
status the pod syncer last reported), its devices (metamanager's Devices with the device
twin's live desired and reported values) and a tail of the MQTT traffic its event bus handles.

Rows are the server dashboard's slim projections (k3py.webui.rows); `follow` yields a view's
rows again after each change the agent's parts announce (metamanager's listeners, a pod status
report, a message on the bus, the tunnel going up or down). Read by agent/dashboard."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

from k3py.agent.devices.manager import DeviceManager
from k3py.agent.edgehub import EdgeHub
from k3py.agent.metamanager import MetaManager
from k3py.agent.pods import PodSyncer
from k3py.webui.rows import Row, project

__all__ = ["EdgeFeeds", "MQTT_TAIL", "PAYLOAD_CHARS", "VIEWS"]

MQTT_TAIL = 200  # messages kept for the tail
PAYLOAD_CHARS = 400  # of each payload
VIEWS = ("node", "pods", "devices", "mqtt")


class EdgeFeeds:
    """The rows of each view, and the events that wake their followers."""

    def __init__(self, node: str, meta: MetaManager, pods: PodSyncer, devices: DeviceManager,
                 hub: EdgeHub) -> None:
        self.node, self.meta, self.pods, self.devices, self.hub = node, meta, pods, devices, hub
        self.mqtt: deque[Row] = deque(maxlen=MQTT_TAIL)
        self._seq = itertools.count(1)
        self._followers: set[asyncio.Event] = set()
        self._hooks: list[tuple[list, Callable]] = [
            (meta.listeners, lambda _what: self.poke()), (pods.status_listeners, self.poke),
            (devices.bus.taps, self._tap), (hub.on_connect, self.poke),
            (hub.on_disconnect, self.poke)]
        for hooks, fn in self._hooks:
            hooks.append(fn)

    def close(self) -> None:
        for hooks, fn in self._hooks:
            hooks.remove(fn)

    def poke(self) -> None:
        for event in self._followers:
            event.set()

    def _tap(self, direction: str, topic: str, payload: bytes) -> None:
        self.mqtt.append({"uid": str(next(self._seq)), "at": time.time(),
                          "direction": direction, "topic": topic,
                          "payload": payload[:PAYLOAD_CHARS].decode("utf-8", "replace")})
        self.poke()

    # ---------------------------------------------------------------- rows

    def rows(self, view: str) -> list[Row]:
        if view == "node":
            return [{"uid": self.node, "name": self.node, "server": self.hub.server,
                     "connected": self.hub.connected.is_set(),
                     "queued": len(self.hub.queue.outbox)}]
        if view == "pods":
            return [self._pod(p) for p in self.meta.pods()]
        if view == "devices":
            return [self._device(d) for d in self.meta.objects("devices")]
        if view == "mqtt":
            return list(self.mqtt)
        raise ValueError(f"no view {view!r} (one of {', '.join(VIEWS)})")

    def _pod(self, pod: dict) -> Row:
        status = self.pods.status((pod.get("metadata") or {}).get("uid") or "")
        return project("", "pods", {**pod, "status": status} if status is not None else pod)

    def _device(self, device: dict) -> Row:
        row = project("devices.kubeedge.io", "devices", device)
        md = device.get("metadata") or {}
        live = self.devices.twins.devices.get((md.get("namespace", ""), md.get("name", "")))
        if live is not None:  # the twin's values, newer than the cached object's status
            row["state"] = live.state
            row["twins"] = [{"property": name,
                             "desired": t.expected.value if t.expected else None,
                             "reported": t.actual.value if t.actual else None}
                            for name, t in live.twins.items() if not t.deleted]
        return row

    async def follow(self, view: str, interval: float) -> AsyncIterator[list[Row]]:
        """The view's rows now, then after each change that altered them, at most once per
        `interval`."""
        event = asyncio.Event()
        self._followers.add(event)
        last: list[Row] | None = None
        try:
            while True:
                event.clear()
                rows = self.rows(view)
                if rows != last:
                    last = rows
                    yield rows
                await event.wait()
                await asyncio.sleep(interval)
        finally:
            self._followers.discard(event)
