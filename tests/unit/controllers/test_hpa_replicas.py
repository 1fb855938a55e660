"""The HPA's arithmetic without a cluster, on upstream's cases: the replica count for
Utilization and AverageValue targets (tolerance, missing and unready pods, missing requests),
and its normalization (stabilization windows, behavior policies and their scale events,
min/max and the default scale-up limit) with the reasons the conditions show."""

from __future__ import annotations

import pytest

from k3py.server.controllers.hpa_behavior import Normalizer
from k3py.server.controllers.hpa_replicas import (
    PodFacts,
    ReplicaError,
    Sample,
    average_replicas,
    utilization_replicas,
)

pytestmark = pytest.mark.unit

NOW = 10_000.0
LONG_AGO = NOW - 3600  # started and ready past the CPU initialization period


def _pods(*names: str, requests: int = 1000, **kw) -> list[PodFacts]:
    return [PodFacts(n, requests=requests, started=LONG_AGO, ready_since=LONG_AGO, **kw)
            for n in names]


def _samples(**values: int) -> dict[str, Sample]:
    return {n: Sample(v, NOW - 1, 15.0) for n, v in values.items()}


def _util(current, target, pods, samples, tolerance=0.1):
    return utilization_replicas(current, target, pods, samples, cpu=True, now=NOW,
                                tolerance=tolerance)


def test_utilization_scales_by_the_ratio_of_usage_to_target():
    p = _util(3, 30, _pods("a", "b", "c"), _samples(a=500, b=700, c=600))
    assert (p.replicas, p.utilization, p.raw_average) == (6, 60, 600)
    assert _util(3, 50, _pods("a", "b", "c"), _samples(a=100, b=100, c=100)).replicas == 1


def test_within_the_tolerance_nothing_changes():
    pods = _pods("a", "b", "c")
    assert _util(3, 50, pods, _samples(a=520, b=540, c=520)).replicas == 3  # 52%: 1.04
    assert _util(3, 50, pods, _samples(a=600, b=600, c=600)).replicas == 4  # 60%: 1.2
    assert _util(3, 50, pods, _samples(a=600, b=600, c=600), tolerance=0.25).replicas == 3


def test_missing_metrics_damp_the_change_in_either_direction():
    # scale-down: the pod without metrics counts as using its whole request
    assert _util(3, 80, _pods("a", "b", "c"), _samples(a=100, b=100)).replicas == 2
    # scale-up: it counts as using nothing
    assert _util(3, 50, _pods("a", "b", "c"), _samples(a=1000, b=1000)).replicas == 4
    # filling in flips the direction: no change
    assert _util(3, 50, _pods("a", "b", "c"), _samples(a=600, b=600)).replicas == 3


def test_unready_and_starting_pods_count_as_idle_on_a_scale_up_only():
    pods = [*_pods("a", "b"), PodFacts("c", ready=False, requests=1000, started=LONG_AGO,
                                       ready_since=LONG_AGO + 5)]
    assert _util(3, 50, pods, _samples(a=1000, b=1000, c=1000)).replicas == 4
    assert _util(3, 50, pods, _samples(a=100, b=100, c=1000)).replicas == 1, \
        "a scale-down ignores the unready pod"
    # within its first 5 minutes a pod sampled before it was ready for a whole window
    starting = PodFacts("c", requests=1000, started=NOW - 20, ready_since=NOW - 10)
    pods = [*_pods("a", "b"), starting]
    assert _util(3, 50, pods, _samples(a=1000, b=1000, c=1000)).replicas == 4
    ready_long_enough = PodFacts("c", requests=1000, started=NOW - 60, ready_since=NOW - 40)
    pods = [*_pods("a", "b"), ready_long_enough]
    assert _util(3, 50, pods, _samples(a=1000, b=1000, c=1000)).replicas == 6
    # memory has no initialization period
    assert utilization_replicas(3, 50, [*_pods("a", "b"), starting],
                                _samples(a=1000, b=1000, c=1000), cpu=False,
                                now=NOW).replicas == 6


def test_deleting_and_finished_pods_are_left_out():
    pods = [*_pods("a"), PodFacts("b", deleting=True, requests=1000),
            PodFacts("c", phase="Succeeded", requests=1000)]
    assert _util(3, 50, pods, _samples(a=1000, b=5000, c=5000)).replicas == 2


def test_errors_say_why_no_count_is_possible():
    with pytest.raises(ReplicaError, match="no pods returned by selector"):
        _util(1, 50, [], {})
    with pytest.raises(ReplicaError, match="did not receive metrics for targeted pods"):
        _util(1, 50, [PodFacts("a", phase="Pending", requests=1)], _samples(a=5))
    missing = PodFacts("a", requests=None, started=LONG_AGO, ready_since=LONG_AGO,
                       missing_request="missing request for cpu in container c of Pod a")
    with pytest.raises(ReplicaError, match="missing request for cpu in container c of Pod a"):
        _util(1, 50, [missing], _samples(a=5))


def test_average_value_targets_ignore_requests():
    mib = 2 ** 20 * 1000  # milli-bytes
    pods = _pods("a", "b", requests=None)
    p = average_replicas(2, 100 * mib, pods, _samples(a=200 * mib, b=200 * mib), cpu=False,
                         now=NOW)
    assert (p.replicas, p.raw_average, p.utilization) == (4, 200 * mib, None)
    assert average_replicas(2, 100 * mib, pods, _samples(a=105 * mib, b=100 * mib),
                            cpu=False, now=NOW).replicas == 2
    assert average_replicas(4, 100 * mib, _pods("a", "b", "c", "d"),
                            _samples(a=10 * mib, b=10 * mib), cpu=False, now=NOW).replicas == 3


# ---------------------------------------------------------------- normalization

def _norm(n: Normalizer, current: int, proposed: int, now: float, low: int = 1,
          high: int = 10, behavior: dict | None = None):
    return n.normalize("ns/hpa", current=current, proposed=proposed, low=low, high=high,
                       behavior=behavior, now=now)


def test_without_behavior_scale_down_waits_for_the_stabilization_window():
    n = Normalizer(downscale_stabilization=300)
    assert _norm(n, 5, 5, 0).replicas == 5
    held = _norm(n, 5, 2, 10)
    assert (held.replicas, held.able_reason) == (5, "ScaleDownStabilized")
    assert _norm(n, 5, 2, 200).replicas == 5
    done = _norm(n, 5, 2, 311)
    assert (done.replicas, done.able_reason, done.limited) == (2, "ReadyForNewScale", False)


def test_without_behavior_limits_and_bounds():
    o = _norm(Normalizer(), 1, 10, 0, high=20)
    assert (o.replicas, o.limited, o.limited_reason) == (4, True, "ScaleUpLimit")
    o = _norm(Normalizer(), 2, 10, 0, high=3)
    assert (o.replicas, o.limited_reason) == (3, "TooManyReplicas")
    o = _norm(Normalizer(), 2, 0, 0, low=1)
    assert (o.replicas, o.limited_reason) == (1, "TooFewReplicas")
    o = _norm(Normalizer(), 2, 3, 0)
    assert (o.replicas, o.limited, o.limited_reason) == (3, False, "DesiredWithinRange")


def test_behavior_windows_for_both_directions():
    n = Normalizer()
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 5},
                "scaleUp": {"stabilizationWindowSeconds": 3}}
    assert _norm(n, 3, 3, 0, behavior=behavior).replicas == 3
    held = _norm(n, 3, 1, 2, behavior=behavior)
    assert (held.replicas, held.able_reason) == (3, "ScaleDownStabilized")
    assert _norm(n, 3, 1, 6, behavior=behavior).replicas == 1
    up = Normalizer()
    assert _norm(up, 2, 2, 0, behavior=behavior).replicas == 2
    held = _norm(up, 2, 6, 1, behavior=behavior)
    assert (held.replicas, held.able_reason) == (2, "ScaleUpStabilized")
    assert _norm(up, 2, 6, 4, behavior=behavior).replicas == 6


def test_behavior_defaults_keep_the_300_second_scale_down_window():
    n = Normalizer(downscale_stabilization=300)
    behavior = {"scaleUp": {"stabilizationWindowSeconds": 0}}
    _norm(n, 4, 4, 0, behavior=behavior)
    assert _norm(n, 4, 1, 100, behavior=behavior).replicas == 4
    assert _norm(n, 4, 1, 301, behavior=behavior).replicas == 1


def test_policies_count_the_scale_events_of_their_period():
    n = Normalizer()
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 0,
                              "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}
    o = _norm(n, 5, 1, 0, behavior=behavior)
    assert (o.replicas, o.limited, o.limited_reason) == (4, True, "ScaleDownLimit")
    n.record_scale("ns/hpa", 5, 4, behavior, 0)
    assert _norm(n, 4, 1, 30, behavior=behavior).replicas == 4, "one pod per minute"
    assert _norm(n, 4, 1, 61, behavior=behavior).replicas == 3


def test_select_policy_picks_the_larger_or_smaller_change_or_none():
    pods_and_percent = [{"type": "Pods", "value": 4, "periodSeconds": 15},
                        {"type": "Percent", "value": 100, "periodSeconds": 15}]
    for select, want in (("Max", 20), ("Min", 14), ("Disabled", 10)):
        behavior = {"scaleUp": {"selectPolicy": select, "policies": pods_and_percent}}
        assert _norm(Normalizer(), 10, 50, 0, high=100, behavior=behavior).replicas == want
    down = {"scaleDown": {"stabilizationWindowSeconds": 0, "selectPolicy": "Min", "policies": [
        {"type": "Pods", "value": 1, "periodSeconds": 15},
        {"type": "Percent", "value": 50, "periodSeconds": 15}]}}
    assert _norm(Normalizer(), 10, 1, 0, behavior=down).replicas == 9
    down["scaleDown"]["selectPolicy"] = "Max"
    assert _norm(Normalizer(), 10, 1, 0, behavior=down).replicas == 5


def test_behavior_bounds_are_min_and_max():
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 0}}
    o = _norm(Normalizer(), 1, 9, 0, high=3, behavior=behavior)
    assert (o.replicas, o.limited_reason) == (3, "TooManyReplicas")
    o = _norm(Normalizer(), 5, 0, 0, low=2, behavior=behavior)
    assert (o.replicas, o.limited_reason) == (2, "TooFewReplicas")
