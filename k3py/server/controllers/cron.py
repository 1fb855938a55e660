"""A pure 5-field cron parser (robfig/cron standard syntax) with next/previous schedule times.

Supports lists, ranges, steps, month/day names, `?`, `@hourly`-style macros and `TZ=` prefix."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

__all__ = ["CronSchedule", "CronError", "parse_cron"]

_MONTHS = {m: i + 1 for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))}
_DAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
           "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
           "@hourly": "0 * * * *"}
_BOUNDS = ((0, 59, None), (0, 23, None), (1, 31, None), (1, 12, _MONTHS), (0, 6, _DAYS))


class CronError(ValueError):
    pass


def _value(tok: str, names: dict | None, lo: int, hi: int, dow: bool) -> int:
    t = tok.lower()
    if names and t in names:
        return names[t]
    try:
        v = int(t)
    except ValueError:
        raise CronError(f"failed to parse int from {tok}") from None
    if dow and v == 7:
        v = 0
    if v < lo or v > hi:
        raise CronError(f"value {v} out of range [{lo}, {hi}]")
    return v


def _field(expr: str, idx: int) -> tuple[frozenset[int], bool]:
    """Returns (allowed values, was_star)."""
    lo, hi, names = _BOUNDS[idx]
    dow = idx == 4
    out: set[int] = set()
    star = False
    for part in expr.split(","):
        if not part:
            raise CronError(f"empty list item in {expr!r}")
        rng, _, step_s = part.partition("/")
        step = 1
        if step_s:
            try:
                step = int(step_s)
            except ValueError:
                raise CronError(f"bad step in {part!r}") from None
            if step <= 0:
                raise CronError(f"step must be positive in {part!r}")
        if rng in ("*", "?"):
            start, end = lo, hi
            star = star or not step_s
        elif "-" in rng:
            a, b = rng.split("-", 1)
            start = _value(a, names, lo, hi, False)
            end = _value(b, names, lo, hi if not dow else 7, False)
            if dow and end == 7:
                end = 6
                out.add(0)
            if end < start:
                raise CronError(f"beginning of range after end: {part}")
        else:
            start = _value(rng, names, lo, hi, dow)
            end = hi if step_s else start
        out.update(range(start, end + 1, step))
    return frozenset(out), star


@dataclass(frozen=True)
class CronSchedule:
    minutes: frozenset[int]
    hours: frozenset[int]
    doms: frozenset[int]
    months: frozenset[int]
    dows: frozenset[int]
    dom_star: bool
    dow_star: bool
    tz: str | None = None

    def _day_ok(self, d: _dt.datetime) -> bool:
        dom_ok = d.day in self.doms
        dow_ok = (d.isoweekday() % 7) in self.dows
        if self.dom_star or self.dow_star:
            return dom_ok and dow_ok
        return dom_ok or dow_ok

    def matches(self, t: _dt.datetime) -> bool:
        t = self._local(t)
        return (t.minute in self.minutes and t.hour in self.hours and
                t.month in self.months and self._day_ok(t))

    def _local(self, t: _dt.datetime) -> _dt.datetime:
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.UTC)
        return t.astimezone(ZoneInfo(self.tz)) if self.tz else t.astimezone(_dt.UTC)

    def next_after(self, t: _dt.datetime) -> _dt.datetime | None:
        """The first scheduled time strictly after t (minute resolution), within 5 years."""
        cur = self._local(t).replace(second=0, microsecond=0) + _dt.timedelta(minutes=1)
        limit = cur + _dt.timedelta(days=366 * 5)
        while cur < limit:
            if cur.month not in self.months:
                y, m = (cur.year + 1, 1) if cur.month == 12 else (cur.year, cur.month + 1)
                cur = cur.replace(year=y, month=m, day=1, hour=0, minute=0)
                continue
            if not self._day_ok(cur):
                cur = (cur + _dt.timedelta(days=1)).replace(hour=0, minute=0)
                continue
            if cur.hour not in self.hours:
                cur = (cur + _dt.timedelta(hours=1)).replace(minute=0)
                continue
            if cur.minute not in self.minutes:
                cur += _dt.timedelta(minutes=1)
                continue
            return cur.astimezone(_dt.UTC)
        return None

    def times_between(self, start: _dt.datetime, end: _dt.datetime,
                      limit: int = 101) -> list[_dt.datetime]:
        """Scheduled times in (start, end], at most `limit` of them (the latest kept last)."""
        out: list[_dt.datetime] = []
        t = self.next_after(start)
        while t is not None and t <= end:
            out.append(t)
            if len(out) > limit:
                out.pop(0)
            t = self.next_after(t)
        return out


def parse_cron(spec: str, time_zone: str | None = None) -> CronSchedule:
    s = spec.strip()
    tz = time_zone
    if s.startswith(("TZ=", "CRON_TZ=")):
        head, _, s = s.partition(" ")
        tz = head.split("=", 1)[1]
        s = s.strip()
    if tz:
        try:
            ZoneInfo(tz)
        except Exception:  # noqa: BLE001
            raise CronError(f"unknown time zone {tz}") from None
    if s.startswith("@"):
        if s.lower() not in _MACROS:
            raise CronError(f"unrecognized descriptor: {s}")
        s = _MACROS[s.lower()]
    fields = s.split()
    if len(fields) != 5:
        raise CronError(f"expected exactly 5 fields, found {len(fields)}: {spec}")
    parsed = [_field(f, i) for i, f in enumerate(fields)]
    return CronSchedule(parsed[0][0], parsed[1][0], parsed[2][0], parsed[3][0], parsed[4][0],
                        dom_star=parsed[2][1], dow_star=parsed[4][1], tz=tz)
