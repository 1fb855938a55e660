"""kubectl's human-readable durations (apimachinery util/duration.HumanDuration) and ages.

Used by server-side table printing (AGE, LAST SEEN, DURATION columns); no I/O."""

from __future__ import annotations

import datetime as _dt

from k3py.api.objects import parse_time

__all__ = ["human_duration", "since"]


def human_duration(d: _dt.timedelta) -> str:
    """`5s`, `3m2s`, `15m`, `4h5m`, `20h`, `2d3h`, `30d`, `2y45d`, `9y` as upstream."""
    seconds = int(d.total_seconds())
    # up to 2s of clock skew into the future still reads as "now"
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        s = seconds % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def since(timestamp: str | None, now: _dt.datetime) -> str:
    """translateTimestampSince: `<unknown>` for a missing or unparsable time."""
    t = parse_time(timestamp) if isinstance(timestamp, str) else None
    if t is None:
        return "<unknown>"
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return human_duration(now - t)
