"""The node's MQTT traffic for the server's dashboard: a summary (traffic.py's counts and the
embedded broker's clients) sent up the tunnel as a live message when it changed, at most every
REPORT_EVERY seconds and at least every HEARTBEAT seconds; and the live tail stream
(STREAM_MQTT_TAIL) the server opens while a tab watches this node's MQTT view: the bus's
messages matching the tab's topic filter, at most the asked rate (the rest dropped and
counted), in batches every BATCH_EVERY seconds, until the server closes the stream (the tab left
the view, or closed); the summary says how many tails are open.

Owned by DeviceManager (its bus and edgehub); nothing here is queued while offline."""

from __future__ import annotations

import asyncio
import dataclasses
import time

from paho.mqtt.client import topic_matches_sub

from k3py.agent.devices.eventbus import EventBus
from k3py.agent.devices.traffic import RateLimit, TrafficCounter
from k3py.agent.edgehub import EdgeHub
from k3py.aio import cancel_and_wait
from k3py.mapper import topics as t
from k3py.tunnel.message import EDGE, GROUP_RESOURCE, OP_UPDATE, Message, new_message, stream_frame
from k3py.tunnel.mqtt import (
    MAX_BATCH,
    PAYLOAD_CHARS,
    STREAM_MQTT_TAIL,
    TailEntry,
    TailRequest,
    mqtt_resource,
)
from k3py.tunnel.protocol import FRAME_DATA, FRAME_ERROR

__all__ = ["MqttReporter", "REPORT_EVERY", "HEARTBEAT", "BATCH_EVERY"]

REPORT_EVERY = 2.0
HEARTBEAT = 30.0
BATCH_EVERY = 0.25


class MqttReporter:
    def __init__(self, bus: EventBus, node: str, hub: EdgeHub, *,
                 every: float = REPORT_EVERY) -> None:
        self.bus, self.node, self.hub = bus, node, hub
        self.counter = TrafficCounter()
        self.every = every
        self._last: dict | None = None  # the summary last sent, its time aside
        self.tails = 0  # live tail streams open now
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self.bus.taps.append(self.counter.tap)
        self.hub.stream_handlers[STREAM_MQTT_TAIL] = self._tail
        self.hub.on_connect.append(self._reconnected)
        self._task = asyncio.create_task(self._loop(), name="mqtt-report")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self.hub.stream_handlers.pop(STREAM_MQTT_TAIL, None)
        if self._reconnected in self.hub.on_connect:
            self.hub.on_connect.remove(self._reconnected)
        if self.counter.tap in self.bus.taps:
            self.bus.taps.remove(self.counter.tap)

    # ---------------------------------------------------------------- the summary

    def summary_message(self) -> Message:
        summary = dataclasses.replace(self.counter.summary(self.bus.clients()), tails=self.tails)
        return new_message(source=EDGE, group=GROUP_RESOURCE, operation=OP_UPDATE,
                           resource=mqtt_resource(self.node), content=summary.to_content())

    def _reconnected(self) -> None:
        self._last = None  # the server forgot the node's summary when its link went down

    async def _loop(self) -> None:
        sent_at = 0.0
        while True:
            msg = self.summary_message()
            same = {k: v for k, v in msg.content.items() if k != "timestamp"}
            now = time.monotonic()
            if same != self._last or now - sent_at >= HEARTBEAT:
                if self.hub.send_live(msg):
                    self._last, sent_at = same, now
                else:
                    self._last = None
            await asyncio.sleep(self.every)

    # ---------------------------------------------------------------- the live tail

    def _entry(self, direction: str, topic: str, payload: bytes) -> TailEntry:
        parsed = t.parse_topic(topic)
        device = None
        if isinstance(parsed, t.DeviceTopic):
            found = self.bus.twins.find(parsed.namespace, parsed.name)
            device = found.key if found is not None else (parsed.namespace or "default",
                                                          parsed.name)
        return TailEntry(time.time(), direction, topic, len(payload),
                         payload[:PAYLOAD_CHARS].decode("utf-8", "replace"), device)

    async def _tail(self, msg: Message) -> None:
        try:
            request = TailRequest.from_content(msg.content)
        except ValueError as e:
            self.hub.send_live(stream_frame(msg.id, FRAME_ERROR, {
                "code": 400, "reason": "BadRequest", "message": str(e)}, source=EDGE))
            return
        pending: list[dict] = []
        dropped = [0]
        limit = RateLimit(request.rate)
        wake = asyncio.Event()

        def tap(direction: str, topic: str, payload: bytes) -> None:
            if not topic_matches_sub(request.topic_filter, topic):
                return
            if len(pending) >= MAX_BATCH or not limit.allow():
                dropped[0] += 1
            else:
                pending.append(self._entry(direction, topic, payload).to_content())
            wake.set()
        self.bus.taps.append(tap)
        self.tails += 1
        try:
            await self._send_batches(msg.id, pending, dropped, wake)
        finally:
            self.tails -= 1
            self.bus.taps.remove(tap)

    async def _send_batches(self, sid: str, pending: list[dict], dropped: list[int],
                            wake: asyncio.Event) -> None:
        """Until cancelled (the server closed the stream, or the link went down)."""
        reported = 0
        while True:
            await wake.wait()
            wake.clear()
            if pending or dropped[0] != reported:
                batch = pending[:]
                pending.clear()
                reported = dropped[0]
                if not self.hub.send_live(stream_frame(sid, FRAME_DATA, {"messages": batch,
                                                           "dropped": reported}, source=EDGE)):
                    return
            await asyncio.sleep(BATCH_EVERY)
