"""The agent's Event recorder: repeats of one Event are one object whose count goes up, at
most every EVENT_REPEAT_INTERVAL, and a repeat within the interval is sent at its end (a
crash soon after a start used to leave the server's count one short for good)."""

from __future__ import annotations

import asyncio

import pytest

from k3py.agent.pods import events
from k3py.agent.pods.events import EventRecorder
from k3py.agent.pods.record import PodRecord

pytestmark = pytest.mark.unit

POD = {"metadata": {"name": "p", "namespace": "default", "uid": "u1"}}


async def test_repeats_within_the_interval_go_up_at_its_end(monkeypatch):
    monkeypatch.setattr(events, "EVENT_REPEAT_INTERVAL", 1.0)  # wide: a busy machine
    sent: list[dict] = []

    async def send(msg) -> None:
        sent.append(msg.content)
    recorder = EventRecorder(node_name="n1", send=send, spawn=asyncio.ensure_future)
    rec = PodRecord()
    recorder.event(rec, POD, "Started", "Started container c", container="c")
    await asyncio.sleep(0.05)
    assert [e["count"] for e in sent] == [1]
    recorder.event(rec, POD, "Started", "Started container c", container="c")
    recorder.event(rec, POD, "Started", "Started container c", container="c")
    await asyncio.sleep(0.05)
    assert [e["count"] for e in sent] == [1]  # held until the interval is over
    await asyncio.sleep(1.2)
    assert [e["count"] for e in sent] == [1, 3]
    assert len({e["metadata"]["name"] for e in sent}) == 1  # one Event object
    await asyncio.sleep(1.1)
    recorder.event(rec, POD, "Started", "Started container c", container="c")
    await asyncio.sleep(0.05)
    assert [e["count"] for e in sent] == [1, 3, 4]  # after the interval: at once
