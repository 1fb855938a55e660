"""Log windows of a restarted container's current / previous run (k3py/agent/logwindow.py)."""

from __future__ import annotations

from k3py.agent.logwindow import fmt_ns, last_line_time, log_window, parse_ns, tail_lines

A = "2026-11-29T04:25:17.356214821Z"
B = "2026-11-29T04:25:18.5Z"


def test_timestamps_round_trip_at_nanoseconds():
    assert fmt_ns(parse_ns(A)) == A
    assert parse_ns("2026-11-29T05:25:17.356214821+01:00") == parse_ns(A)
    assert fmt_ns(parse_ns(B)) == "2026-11-29T04:25:18.500000000Z"
    assert parse_ns("yesterday") is None


def test_last_line_time():
    assert last_line_time(f"{A} run 1\n{B} err 1\n".encode()) == B
    assert last_line_time(b"") is None


def test_windows():
    assert log_window(None, True, None, None) is None  # never restarted: no previous
    w = log_window(None, False, None, None)
    assert (w.since, w.until) == (None, None)
    marks = {"prev": A, "cur": B}
    cur = log_window(marks, False, None, None)
    assert (cur.since, cur.until) == (fmt_ns(parse_ns(B)), None)
    prev = log_window(marks, True, None, None)
    assert prev.since == A and prev.until == fmt_ns(parse_ns(B) + 1)  # --until is exclusive
    first = log_window({"prev": None, "cur": B}, True, None, None)
    assert first.since is None
    assert log_window({"prev": None, "cur": None}, True, None, None).empty
    # a later sinceTime wins (inclusive: one ns earlier, podman's --since is exclusive)
    late = log_window(marks, False, None, "2026-11-29T05:00:00Z")
    assert late.since == "2026-11-29T04:59:59.999999999Z"
    early = log_window(marks, False, "5", None, now=parse_ns(B) / 1e9 - 60)
    assert early.since == fmt_ns(parse_ns(B))


def test_tail_lines():
    assert tail_lines(b"a\nb\nc", 2) == b"b\nc"
    assert tail_lines(b"a\nb\n", 5) == b"a\nb\n"
    assert tail_lines(b"a\n", 0) == b""
