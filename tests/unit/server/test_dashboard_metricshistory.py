"""The dashboard's metrics history: each usage report the UsageStore records gives a point to its
node and to each pod (containers summed, and each container's own for one pod's subscription:
none before a container came or while it is missing, at most MAX_CONTAINERS of its own, the
rest as OTHERS); a faster resolution than STEP is thinned (the newest point stands in for the
ones since the last kept); the last WINDOW only, at most MAX_POINTS per series and MAX_COLUMNS
columns (the series updated longest ago goes first, one not updated for a window is dropped);
the memory a full history takes stays within its documented bound; a subscription gets the
history, then only the new points it matches."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

import pytest

from k3py.api import errors
from k3py.server.dashboard.metricshistory import (
    MAX_COLUMNS,
    MAX_CONTAINERS,
    MAX_POINTS,
    OTHERS,
    STEP,
    WINDOW,
    MetricsHistory,
    MetricsQuery,
)
from k3py.server.metrics.store import UsageStore
from k3py.tunnel.protocol import PodUsage, Usage, UsageReport

pytestmark = pytest.mark.unit

NODES = MetricsQuery("nodes")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _report(at: float, cpu: int = 100, pods: tuple[str, ...] = ()) -> UsageReport:
    return UsageReport(at, 15.0, Usage(cpu, 1 << 30), tuple(
        PodUsage("default", name, f"uid-{name}", {"a": Usage(cpu, 1000), "b": Usage(1, 24)})
        for name in pods))


def _history(clock: Clock) -> tuple[UsageStore, MetricsHistory]:
    usage = UsageStore(clock)
    return usage, MetricsHistory(usage, clock)


def test_reports_give_node_and_pod_points_through_the_usage_store():
    clock = Clock()
    usage, history = _history(clock)
    for i in range(3):
        clock.now += 15
        usage.record("n1", _report(clock.now, cpu=100 + i, pods=("web",)))
    node = history.series(NODES)["n1"]
    assert node["times"] == [1_000_015.0, 1_000_030.0, 1_000_045.0]
    assert node["cpu"] == [100, 101, 102] and node["memory"] == [1 << 30] * 3
    pod = history.series(MetricsQuery("pods", "default"))["default/web"]
    assert pod["namespace"] == "default" and pod["name"] == "web"
    assert pod["cpu"] == [101, 102, 103] and pod["memory"] == [1024] * 3
    assert "containers" not in pod  # only for one pod's subscription
    assert history.series(MetricsQuery("pods", "other")) == {}
    assert list(history.series(MetricsQuery("nodes", name="n2"))) == []
    usage.record("n1", _report(clock.now - 1))  # older than the last point: no point
    assert len(history.series(NODES)["n1"]["times"]) == 3


def _pod_report(at: float, containers: dict[str, int]) -> UsageReport:
    return UsageReport(at, 15.0, Usage(1, 1), (PodUsage("default", "web", "uid-web", {
        name: Usage(cpu, cpu * 10) for name, cpu in containers.items()}),))


def test_one_pods_series_has_its_containers_each_missing_one_without_a_value():
    clock = Clock()
    usage, history = _history(clock)
    web = MetricsQuery("pods", "default", "web")
    for containers in ({"app": 5}, {"app": 6, "sidecar": 1}, {"sidecar": 2}):
        clock.now += STEP
        usage.record("n1", _pod_report(clock.now, containers))
    pod = history.series(web)["default/web"]
    assert pod["cpu"] == [5, 7, 2] and pod["memory"] == [50, 70, 20]
    assert pod["containers"] == {"app": {"cpu": [5, 6, None], "memory": [50, 60, None]},
                                 "sidecar": {"cpu": [None, 1, 2], "memory": [None, 10, 20]}}
    for _ in range(MAX_POINTS):  # the app container gone for a whole window
        clock.now += STEP
        usage.record("n1", _pod_report(clock.now, {"sidecar": 2}))
    assert list(history.series(web)["default/web"]["containers"]) == ["sidecar"]
    assert history.columns == 2  # the node's and the sidecar's


def test_a_pods_containers_past_the_bound_share_one_column():
    clock = Clock()
    usage, history = _history(clock)
    many = {f"c{i:02d}": 1 for i in range(MAX_CONTAINERS + 3)}
    usage.record("n1", _pod_report(clock.now, many))
    pod = history.series(MetricsQuery("pods", "default", "web"))["default/web"]
    assert set(pod["containers"]) == {*sorted(many)[:MAX_CONTAINERS], OTHERS}
    assert pod["containers"][OTHERS]["cpu"] == [3] and pod["cpu"] == [MAX_CONTAINERS + 3]


def test_a_fast_resolution_is_thinned_to_one_point_per_step():
    clock = Clock()
    usage, history = _history(clock)
    start = clock.now
    for _ in range(int(WINDOW * 2)):  # a report a second for two windows
        clock.now += 1
        usage.record("n1", _report(clock.now))
    times = history.series(NODES)["n1"]["times"]
    assert times[-1] == clock.now  # the newest is always there
    gaps = [b - a for a, b in zip(times, times[1:-1], strict=False)]
    assert gaps and min(gaps) >= STEP, gaps
    assert len(times) <= MAX_POINTS and times[0] >= clock.now - WINDOW
    assert times[0] > start + WINDOW  # the first window is gone


def test_columns_are_bounded_least_recently_updated_first_and_expire():
    clock = Clock()
    usage, history = _history(clock)
    usage.record("first", _report(clock.now))
    for n in range(MAX_COLUMNS):
        clock.now += 0.001
        usage.record(f"n{n}", _report(clock.now))
    assert len(history) == history.columns == MAX_COLUMNS
    assert "first" not in history.series(NODES) and "n0" in history.series(NODES)
    clock.now += WINDOW / 2
    usage.record("n0", _report(clock.now))  # keeps reporting
    clock.now += WINDOW / 2 + 1
    usage.record("late", _report(clock.now))
    assert sorted(history.series(NODES)) == ["late", "n0"]


def test_a_full_history_stays_within_its_bound():
    """MAX_COLUMNS columns of MAX_POINTS points (here 40 nodes' and 480 pods' of two
    containers each): at most 16 bytes of values a point and column (1.4 MiB), plus the series'
    own objects; measured, not assumed."""
    clock = Clock()
    gc.collect()
    tracemalloc.start()
    try:
        usage, history = _history(clock)
        pods = [tuple(f"pod-{n}-{i}" for i in range(12)) for n in range(40)]
        for _ in range(MAX_POINTS + 5):
            clock.now += STEP
            for n in range(40):
                usage.record(f"node-{n}", _report(clock.now, pods=pods[n]))
        usage.listeners.clear()
        del usage
        gc.collect()
        used, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert history.columns == MAX_COLUMNS and len(history) == 40 + 480
    assert all(len(s["times"]) == MAX_POINTS for s in history.series(NODES).values())
    values = MAX_COLUMNS * MAX_POINTS * 16
    assert values < 1.5 * 2**20
    print(f"a full history: {used} bytes for {len(history)} series, {history.columns} columns")
    assert used < values + MAX_COLUMNS * 1024, f"{used} bytes for {len(history)} series"


def test_a_subscription_gets_the_history_then_its_new_points():
    async def check() -> None:
        clock = Clock()
        usage, history = _history(clock)
        usage.record("n1", _report(clock.now, pods=("web", "db")))
        feed = history.follow(MetricsQuery("pods", "default", "web"), 0)
        first = await anext(feed)
        assert first["reset"] and list(first["series"]) == ["default/web"]
        for _ in range(2):
            clock.now += 1
            usage.record("n1", _report(clock.now, cpu=7, pods=("web", "db")))
        update = await anext(feed)
        assert "reset" not in update and list(update["series"]) == ["default/web"]
        assert update["series"]["default/web"]["times"] == [clock.now - 1, clock.now]
        assert update["series"]["default/web"]["cpu"] == [8, 8]
        assert update["series"]["default/web"]["containers"] == {
            "a": {"cpu": [7, 7], "memory": [1000, 1000]}, "b": {"cpu": [1, 1], "memory": [24, 24]}}
        await feed.aclose()
        clock.now += 1
        usage.record("n1", _report(clock.now))  # no follower left to tell
    asyncio.run(check())


def test_queries_are_checked_and_a_disabled_metrics_api_is_not_found():
    assert MetricsQuery.parse({"kind": "pods", "namespace": "a", "name": "b"}).verb == "get"
    assert MetricsQuery.parse({"kind": "nodes"}) == MetricsQuery("nodes")
    for bad in ({}, {"kind": "services"}, {"kind": "nodes", "namespace": "a"},
                {"kind": "pods", "name": "b"}):
        with pytest.raises(errors.StatusError) as e:
            MetricsQuery.parse(bad)
        assert e.value.code == 400

    async def follow() -> None:
        await anext(MetricsHistory(None).follow(NODES, 0))
    with pytest.raises(errors.StatusError) as e:
        asyncio.run(follow())
    assert e.value.code == 404 and "--disable metrics-server" in e.value.message
