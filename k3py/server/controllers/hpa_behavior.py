"""From the metrics' proposal to the replicas the HPA sets, as upstream's controller
normalizes it: stabilization (the highest recent recommendation within the scale-down window,
the lowest within the scale-up one), then the rate limits (without `behavior`: at most
max(2 x current, 4) up; with it, its policies over the scale events of their periods), then
minReplicas/maxReplicas. Each step's reason is the AbleToScale / ScalingLimited condition.

Pure, with the per-HPA memory (recommendations, scale events) kept by `Normalizer` as upstream
keeps it in its controller; `now` is passed in. Used by k3py.server.controllers.hpa."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from k3py.api.kinds.autoscaling import scale_down_rules, scale_up_rules

__all__ = ["DOWNSCALE_STABILIZATION", "Outcome", "Normalizer"]

DOWNSCALE_STABILIZATION = 300.0  # --horizontal-pod-autoscaler-downscale-stabilization


@dataclass(frozen=True, slots=True)
class Outcome:
    replicas: int
    able_reason: str  # AbleToScale=True reason: ReadyForNewScale, Scale(Up|Down)Stabilized
    able_message: str
    limited: bool  # ScalingLimited status
    limited_reason: str
    limited_message: str


@dataclass
class _Memory:
    recommendations: list[tuple[float, int]] = field(default_factory=list)  # (when, replicas)
    scale_up: list[tuple[float, int]] = field(default_factory=list)  # (when, change)
    scale_down: list[tuple[float, int]] = field(default_factory=list)


_READY = ("ReadyForNewScale", "recommended size matches current size")
_UP_STABILIZED = ("ScaleUpStabilized", "recent recommendations were lower than current one, "
                                       "applying the lowest recent recommendation")
_DOWN_STABILIZED = ("ScaleDownStabilized", "recent recommendations were higher than current "
                                           "one, applying the highest recent recommendation")
_WITHIN = ("DesiredWithinRange", "the desired count is within the acceptable range")
_TOO_FEW = ("TooFewReplicas", "the desired replica count is less than the minimum replica "
                              "count")
_TOO_MANY = ("TooManyReplicas", "the desired replica count is more than the maximum replica "
                                "count")
_UP_LIMIT = ("ScaleUpLimit", "the desired replica count is increasing faster than the maximum "
                             "scale rate")
_DOWN_LIMIT = ("ScaleDownLimit", "the desired replica count is decreasing faster than the "
                                 "maximum scale rate")


def _changed_within(events: list[tuple[float, int]], period: float, now: float) -> int:
    return sum(change for when, change in events if when > now - period)


def _up_limit(current: int, mem: _Memory, rules: dict, now: float) -> int:
    select = rules.get("selectPolicy") or "Max"
    if select == "Disabled":
        return current
    pick, result = (min, math.inf) if select == "Min" else (max, -math.inf)
    for p in rules.get("policies") or []:
        period = p["periodSeconds"]
        start = current - _changed_within(mem.scale_up, period, now) + \
            _changed_within(mem.scale_down, period, now)
        proposed = start + p["value"] if p["type"] == "Pods" else \
            math.ceil(start * (1 + p["value"] / 100))
        result = pick(result, proposed)
    return int(result)


def _down_limit(current: int, mem: _Memory, rules: dict, now: float) -> int:
    select = rules.get("selectPolicy") or "Max"
    if select == "Disabled":
        return current
    # Max picks the policy allowing the largest change: the lowest limit
    pick, result = (max, -math.inf) if select == "Min" else (min, math.inf)
    for p in rules.get("policies") or []:
        period = p["periodSeconds"]
        start = current - _changed_within(mem.scale_up, period, now) + \
            _changed_within(mem.scale_down, period, now)
        proposed = start - p["value"] if p["type"] == "Pods" else \
            int(start * (1 - p["value"] / 100))
        result = pick(result, proposed)
    return int(result)


class Normalizer:
    """The recommendations and scale events of every HPA, by key."""

    def __init__(self, downscale_stabilization: float = DOWNSCALE_STABILIZATION) -> None:
        self.downscale_stabilization = downscale_stabilization
        self._memory: dict[str, _Memory] = {}

    def forget(self, key: str) -> None:
        self._memory.pop(key, None)

    def normalize(self, key: str, *, current: int, proposed: int, low: int, high: int,
                  behavior: dict | None, now: float) -> Outcome:
        mem = self._memory.setdefault(key, _Memory())
        if behavior is None:
            return self._plain(mem, current, proposed, low, high, now)
        up = scale_up_rules(behavior.get("scaleUp"))
        down = scale_down_rules(behavior.get("scaleDown"))
        down.setdefault("stabilizationWindowSeconds", self.downscale_stabilization)
        stabilized, able = self._stabilize(mem, current, proposed, up, down, now)
        if stabilized > current:
            limit = max(_up_limit(current, mem, up, now), current)
            ceiling, why = (limit, _UP_LIMIT) if high > limit else (high, _TOO_MANY)
            desired = min(stabilized, ceiling)
            reason = why if stabilized > ceiling else _WITHIN
        elif stabilized < current:
            limit = min(_down_limit(current, mem, down, now), current)
            floor, why = (limit, _DOWN_LIMIT) if low < limit else (low, _TOO_FEW)
            desired = max(stabilized, floor)
            reason = why if stabilized < floor else _WITHIN
        else:
            desired, reason = stabilized, _WITHIN
        return Outcome(desired, *able, desired != stabilized, *reason)

    def _plain(self, mem: _Memory, current: int, proposed: int, low: int, high: int,
               now: float) -> Outcome:
        """No behavior: the highest recommendation of the downscale window, then at most
        max(2 x current, 4) up."""
        cutoff = now - self.downscale_stabilization
        mem.recommendations = [r for r in mem.recommendations if r[0] > cutoff]
        mem.recommendations.append((now, proposed))
        stabilized = max(r for _, r in mem.recommendations)
        able = _READY if stabilized == proposed else _DOWN_STABILIZED
        up_limit = max(2 * current, 4)
        if stabilized < low:
            desired, reason = low, _TOO_FEW
        elif stabilized > min(high, up_limit):
            desired, reason = (high, _TOO_MANY) if high <= up_limit else (up_limit, _UP_LIMIT)
        else:
            desired, reason = stabilized, _WITHIN
        return Outcome(desired, *able, desired != stabilized, *reason)

    def _stabilize(self, mem: _Memory, current: int, proposed: int, up: dict, down: dict,
                   now: float) -> tuple[int, tuple[str, str]]:
        up_window = up.get("stabilizationWindowSeconds") or 0
        down_window = down.get("stabilizationWindowSeconds") or 0
        if proposed >= current:
            window, better, stabilized_why = up_window, min, _UP_STABILIZED
        else:
            window, better, stabilized_why = down_window, max, _DOWN_STABILIZED
        recommendation = proposed
        for when, replicas in mem.recommendations:
            if when > now - window:
                recommendation = better(recommendation, replicas)
        keep_after = now - max(up_window, down_window)
        mem.recommendations = [r for r in mem.recommendations if r[0] >= keep_after]
        mem.recommendations.append((now, proposed))
        return recommendation, (_READY if recommendation == proposed else stabilized_why)

    def record_scale(self, key: str, before: int, after: int, behavior: dict | None,
                     now: float) -> None:
        """A rescale happened: its change counts against the policies' periods."""
        if behavior is None:
            return
        mem = self._memory.setdefault(key, _Memory())
        rules = scale_up_rules(behavior.get("scaleUp")) if after > before else \
            scale_down_rules(behavior.get("scaleDown"))
        longest = max((p["periodSeconds"] for p in rules.get("policies") or []), default=0)
        events = mem.scale_up if after > before else mem.scale_down
        events[:] = [e for e in events if e[0] > now - longest]
        events.append((now, abs(after - before)))
