"""The dashboard's twin history: numeric reported values recorded once per report (a repeat of
the same timestamp is no point), the last 10 minutes only, at most MAX_POINTS per twin and
MAX_TWINS twins (the one updated longest ago goes first); a deleted Device is forgotten."""

from __future__ import annotations

import pytest

from k3py.server.dashboard.twinhistory import MAX_POINTS, MAX_TWINS, WINDOW, TwinHistory

pytestmark = pytest.mark.unit


def _device(name: str, value: object, stamp: int | None = None, prop: str = "t") -> dict:
    reported = {"value": value}
    if stamp is not None:
        reported["metadata"] = {"timestamp": str(stamp)}
    return {"metadata": {"namespace": "default", "name": name},
            "status": {"twins": [{"propertyName": prop, "reported": reported},
                                 {"propertyName": "s", "reported": {"value": "ON"}}]}}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_numeric_reports_are_recorded_once_each_with_their_timestamp():
    clock = Clock()
    history = TwinHistory(clock)
    history.record(_device("d", "21.5", stamp=999_990_000))
    history.record(_device("d", "21.5", stamp=999_990_000))  # a desired change: same report
    history.record(_device("d", "22", stamp=999_995_000))
    history.record(_device("d", "nan", stamp=999_996_000))
    assert history.points("default", "d", "t") == ([999_990.0, 999_995.0], [21.5, 22.0])
    assert history.points("default", "d", "s") == ([], [])  # not a number
    history.record(_device("d", "23"))  # no timestamp: now, once per value
    history.record(_device("d", "23"))
    assert history.points("default", "d", "t")[1] == [21.5, 22.0, 23.0]
    history.forget("default", "d")
    assert history.points("default", "d", "t") == ([], [])


def test_window_and_bounds():
    clock = Clock()
    history = TwinHistory(clock)
    for i in range(MAX_POINTS + 50):
        clock.now += 0.5
        history.record(_device("d", i))
    times, values = history.points("default", "d", "t")
    assert len(values) == MAX_POINTS and values[-1] == MAX_POINTS + 49
    clock.now += WINDOW - 10
    assert len(history.points("default", "d", "t")[1]) == 21  # the last 10 s of points, both ends
    for n in range(MAX_TWINS + 1):
        history.record(_device(f"dev{n}", 1))
    assert history.points("default", "d", "t") == ([], [])  # updated longest ago: dropped
    assert history.points("default", f"dev{MAX_TWINS}", "t")[1] == [1.0]
