"""Pod Events as the kubelet's recorder sends them up the tunnel: repeats of one Event update
its count, going up at most every EVENT_REPEAT_INTERVAL seconds (a repeat within it goes up
at its end, so no count is lost). Used by the pod syncer; the
counts live in each pod's PodRecord (record.py), so they go with the pod."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from k3py.agent.lifecycle import make_event
from k3py.agent.pods.record import EventCount, PodRecord
from k3py.tunnel.message import EDGE, GROUP_RESOURCE, OP_INSERT, Message, new_message, resource_key

__all__ = ["EventRecorder", "EVENT_REPEAT_INTERVAL"]

EVENT_REPEAT_INTERVAL = 5.0  # a repeated Event goes up (with its count) at most this often
_MAX_PER_POD = 10000  # distinct Events remembered per pod before the counts start over


class EventRecorder:
    def __init__(self, *, node_name: str, send: Callable[[Message], Awaitable[None]],
                 spawn: Callable[[Awaitable[None]], None]) -> None:
        self.node_name = node_name
        self.send = send
        self.spawn = spawn  # runs the send in the background (a pass does not wait for it)
        # Event name -> its newest repeat not sent yet (it came within the interval): sent,
        # with the count reached by then, when the interval is over
        self._held: dict[str, _Repeat] = {}

    def event(self, rec: PodRecord, pod: dict, reason: str, message: str,
              type_: str = "Normal", container: str | None = None, init: bool = False) -> None:
        key = (container, reason, message)
        now = time.time()
        agg = rec.events.get(key)
        if agg is None:
            if len(rec.events) > _MAX_PER_POD:
                rec.events.clear()
            md = pod.get("metadata") or {}
            agg = rec.events[key] = EventCount(
                name=f"{md.get('name')}.{uuid.uuid4().hex[:16]}", first=now)
        agg.count += 1
        repeat = _Repeat(agg, pod, reason, message, type_, container, init, now)
        wait = agg.sent + EVENT_REPEAT_INTERVAL - now
        if agg.count > 1 and wait > 0:
            # a repeat this soon waits for the interval's end, never lost: the last one of a
            # burst goes up then with the count of the whole burst
            if agg.name not in self._held:
                self.spawn(self._send_held(agg.name, wait))
            self._held[agg.name] = repeat
            return
        self._held.pop(agg.name, None)
        self.spawn(self._send(repeat))

    async def _send_held(self, name: str, wait: float) -> None:
        await asyncio.sleep(wait)
        repeat = self._held.pop(name, None)
        if repeat is not None:
            await self._send(repeat)

    async def _send(self, r: _Repeat) -> None:
        agg = r.agg
        agg.sent = time.time()
        md = r.pod.get("metadata") or {}
        ev = make_event(r.pod, name=agg.name, reason=r.reason, message=r.message, type_=r.type_,
                        container=r.container, init=r.init, node=self.node_name,
                        count=agg.count, first=agg.first, last=r.at)
        res = resource_key("events", md.get("namespace") or "default", agg.name)
        await self.send(new_message(source=EDGE, group=GROUP_RESOURCE, operation=OP_INSERT,
                                    resource=res, key=res, content=ev))


@dataclass(slots=True)
class _Repeat:
    """One occurrence of an aggregated Event, as it goes up."""

    agg: EventCount
    pod: dict
    reason: str
    message: str
    type_: str
    container: str | None
    init: bool
    at: float
