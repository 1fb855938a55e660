"""The 5-field cron parser: fields, names, steps, macros, day-of-month/week OR rule, errors.

Also next-time and missed-times computations used by the CronJob controller."""

from __future__ import annotations

import datetime as dt

import pytest

from k3py.server.controllers.cron import CronError, parse_cron

pytestmark = pytest.mark.unit

UTC = dt.UTC


def t(*a) -> dt.datetime:
    return dt.datetime(*a, tzinfo=UTC)


def test_fields() -> None:
    s = parse_cron("*/15 1-3,5 * jan-mar mon-fri")
    assert s.minutes == {0, 15, 30, 45}
    assert s.hours == {1, 2, 3, 5}
    assert s.months == {1, 2, 3}
    assert s.dows == {1, 2, 3, 4, 5}
    assert parse_cron("0 0 * * 7").dows == {0}
    assert parse_cron("5/20 * * * *").minutes == {5, 25, 45}
    assert parse_cron("0 0 ? * SUN").dows == {0}


def test_macros_and_next() -> None:
    assert parse_cron("@hourly").next_after(t(2024, 1, 1, 10, 30)) == t(2024, 1, 1, 11, 0)
    assert parse_cron("@daily").next_after(t(2024, 1, 1, 0, 0)) == t(2024, 1, 2, 0, 0)
    assert parse_cron("@monthly").next_after(t(2024, 1, 31, 5)) == t(2024, 2, 1)
    assert parse_cron("@yearly").next_after(t(2024, 6, 1)) == t(2025, 1, 1)
    assert parse_cron("* * * * *").next_after(t(2024, 1, 1, 0, 0, 30)) == t(2024, 1, 1, 0, 1)
    assert parse_cron("0 0 29 2 *").next_after(t(2024, 3, 1)) == t(2028, 2, 29)


def test_dom_dow_or_rule() -> None:
    s = parse_cron("0 0 13 * 5")  # the 13th OR any Friday
    assert s.next_after(t(2024, 9, 1)) == t(2024, 9, 6)
    assert s.next_after(t(2024, 9, 6)) == t(2024, 9, 13)


def test_times_between_and_tz() -> None:
    s = parse_cron("*/10 * * * *")
    got = s.times_between(t(2024, 1, 1, 0, 0), t(2024, 1, 1, 1, 0))
    assert len(got) == 6 and got[-1] == t(2024, 1, 1, 1, 0)
    ny = parse_cron("TZ=America/New_York 0 9 * * *")
    assert ny.next_after(t(2024, 1, 1)) == t(2024, 1, 1, 14, 0)


@pytest.mark.parametrize("bad", ["* * * *", "61 * * * *", "* * * * * *", "@often",
                                 "5-1 * * * *", "*/0 * * * *", "a * * * *"])
def test_errors(bad: str) -> None:
    with pytest.raises(CronError):
        parse_cron(bad)
