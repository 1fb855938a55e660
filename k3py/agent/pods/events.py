"""Pod Events as the kubelet's recorder sends them up the tunnel: repeats of one Event update
its count, going up at most every EVENT_REPEAT_INTERVAL seconds. Used by the pod syncer; the
counts live in each pod's PodRecord (record.py), so they go with the pod."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

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

    def event(self, rec: PodRecord, pod: dict, reason: str, message: str,
              type_: str = "Normal", container: str | None = None, init: bool = False) -> None:
        md = pod.get("metadata") or {}
        key = (container, reason, message)
        now = time.time()
        agg = rec.events.get(key)
        if agg is None:
            if len(rec.events) > _MAX_PER_POD:
                rec.events.clear()
            agg = rec.events[key] = EventCount(
                name=f"{md.get('name')}.{uuid.uuid4().hex[:16]}", first=now)
        agg.count += 1
        if agg.count > 1 and now - agg.sent < EVENT_REPEAT_INTERVAL:
            return
        agg.sent = now
        ev = make_event(pod, name=agg.name, reason=reason, message=message, type_=type_,
                        container=container, init=init, node=self.node_name,
                        count=agg.count, first=agg.first, last=now)
        res = resource_key("events", md.get("namespace") or "default", agg.name)
        self.spawn(self.send(new_message(source=EDGE, group=GROUP_RESOURCE,
                                         operation=OP_INSERT, resource=res, key=res,
                                         content=ev)))
