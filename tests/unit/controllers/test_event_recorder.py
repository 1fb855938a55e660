"""The controllers' EventRecorder over a real Registry: repeats of an event aggregate into its
count while it is remembered; what it remembers is bounded, least recently recorded out."""

from __future__ import annotations

import pytest

from k3py.server.controllers import base

pytestmark = pytest.mark.unit


async def test_events_aggregate_among_the_last_remembered(env, monkeypatch) -> None:
    """A repeat of a remembered event bumps its count; the least recently recorded beyond
    EVENTS_REMEMBERED are forgotten (bounded, not swept at each event): a repeat of one of
    those is a new Event."""
    monkeypatch.setattr(base, "EVENTS_REMEMBERED", 3)
    rec = env.ctx.recorder
    pods = [{"kind": "Pod", "apiVersion": "v1",
             "metadata": {"name": f"p{i}", "namespace": "default", "uid": f"u{i}"}}
            for i in range(4)]
    for pod in pods:
        await rec.record(pod, "Normal", "Scheduled", "placed")
    await rec.record(pods[1], "Normal", "Scheduled", "placed")  # p1 is now the most recent
    await rec.record(pods[3], "Normal", "Scheduled", "placed")
    await rec.record(pods[0], "Normal", "Scheduled", "placed")  # forgotten: a new Event
    counts = sorted((ev["involvedObject"]["name"], ev["count"])
                    for ev in await env.all("events"))
    assert counts == [("p0", 1), ("p0", 1), ("p1", 2), ("p2", 1), ("p3", 2)]


async def test_the_remembered_events_are_an_lru_of_4096(env) -> None:
    """Upstream's correlator size; the one recorded again moves to the back, the least
    recently recorded goes first."""
    assert base.EVENTS_REMEMBERED == 4096
    rec = env.ctx.recorder
    for i in range(4096):
        rec._remember(f"h{i}", "default", f"e{i}")
    rec._remember("h0", "default", "e0")  # recorded again: now the most recent
    rec._remember("new", "default", "e-new")
    assert len(rec._seen) == 4096
    assert "h0" in rec._seen and "h1" not in rec._seen
    assert list(rec._seen)[:1] == ["h2"] and list(rec._seen)[-2:] == ["h0", "new"]
