"""The controllers' EventRecorder over a real Registry: repeats of an event aggregate into its
count while it is remembered; what it remembers is bounded, least recently recorded out;
similar events are combined and a source's burst about one object bounded, as client-go's
correlator does."""

from __future__ import annotations

import asyncio

import pytest

from k3py.server.controllers import base
from k3py.server.controllers.eventcorrelator import (
    AGGREGATE_MAX,
    AGGREGATE_WINDOW,
    COMBINED_PREFIX,
    SPAM_BURST,
    SPAM_REFILL,
    EventCorrelator,
)

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


async def test_a_replicasets_hundred_creates_are_nine_events_and_one_combined(env) -> None:
    """client-go's correlator: from the 10th distinct message of a similar event on they are
    one combined Event whose count grows, and the source's burst of 25 about one object ends
    the writes (upstream's kube-controller-manager writes as many for 100 replicas)."""
    rec = env.ctx.recorder
    rs = {"kind": "ReplicaSet", "apiVersion": "apps/v1",
          "metadata": {"name": "web-1", "namespace": "default", "uid": "rs-1"}}
    for i in range(100):
        await rec.record(rs, "Normal", "SuccessfulCreate", f"Created pod: web-1-{i}",
                         component="replicaset-controller")
    events = [ev for ev in await env.all("events") if ev["involvedObject"]["name"] == "web-1"]
    single = sorted(ev["message"] for ev in events if ev["count"] == 1)
    combined = [ev for ev in events if ev["message"].startswith(COMBINED_PREFIX)]
    assert single == sorted(f"Created pod: web-1-{i}" for i in range(9))
    assert [(ev["count"], ev["message"]) for ev in combined] == [
        (16, COMBINED_PREFIX + "Created pod: web-1-24")]
    # another object, or another source about the same one, has its own burst
    await rec.record(rs, "Normal", "SuccessfulCreate", "Created pod: other",
                     component="another-controller")
    assert any(ev["message"] == "Created pod: other" for ev in await env.all("events"))


def test_the_burst_refills_one_event_every_five_minutes() -> None:
    now = [0.0]
    c = EventCorrelator(clock=lambda: now[0])
    about = ("scheduler", "Pod", "default", "p", "u", "v1")
    assert all(c.allow(about) for _ in range(SPAM_BURST))
    assert not c.allow(about)
    now[0] += SPAM_REFILL - 1
    assert not c.allow(about)
    now[0] += 1
    assert c.allow(about) and not c.allow(about)


def test_similar_events_are_combined_again_only_within_ten_minutes() -> None:
    now = [0.0]
    c = EventCorrelator(clock=lambda: now[0])
    key = ("rs", "ReplicaSet", "default", "web", "u", "apps/v1", "Normal", "SuccessfulCreate")
    out = [c.aggregate(key, f"m{i}") for i in range(AGGREGATE_MAX)]
    assert [combined for _, combined in out] == [False] * (AGGREGATE_MAX - 1) + [True]
    now[0] += AGGREGATE_WINDOW - 1  # still similar: the window runs from the last one
    assert c.aggregate(key, "later") == (COMBINED_PREFIX + "later", True)
    now[0] += AGGREGATE_WINDOW + 1
    assert c.aggregate(key, "fresh") == ("fresh", False)


async def test_concurrent_records_of_one_event_make_one_event(env) -> None:
    """A ReplicaSet makes its pods by `gather`: its SuccessfulCreate records run at once. The
    combined Event is still one, and its count is every record of it (none lost to a
    conflict), as when they come one by one."""
    rec = env.ctx.recorder
    rs = {"kind": "ReplicaSet", "apiVersion": "apps/v1",
          "metadata": {"name": "web-2", "namespace": "default", "uid": "rs-2"}}
    await asyncio.gather(*(rec.record(rs, "Normal", "SuccessfulCreate", f"Created pod: web-2-{i}",
                                      component="replicaset-controller") for i in range(100)))
    events = [ev for ev in await env.all("events") if ev["involvedObject"]["name"] == "web-2"]
    combined = [ev["count"] for ev in events if ev["message"].startswith(COMBINED_PREFIX)]
    assert combined == [16] and len(events) == 10
    assert rec._writing == {}
