"""Which part of a container's podman log belongs to its current / previous instance.

The agent restarts a crashed container with `podman start` of the same container, so its
log holds every run. `kubectl logs` must show only the current run and `--previous` only the
one before. Podman's StartedAt cannot be the boundary: a fast first line can carry a log
timestamp a few microseconds *before* the run's StartedAt. So at each restart the agent
records the timestamp of the log's last line (everything the ended run wrote; conmon has
drained it once the exit is reported): the next run's lines are all strictly after it.

podman 4.3 facts (checked on real podman): --since and --until take RFC3339Nano and are both
exclusive at nanosecond precision; --tail is applied *before* them (so it is right for the
current run, whose lines are the log's suffix, and wrong for the previous one, where the
agent tails itself)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

__all__ = ["LogWindow", "fmt_ns", "last_line_time", "log_window", "parse_ns", "tail_lines"]

# podman's times: RFC 3339 with up to nanoseconds; a missing zone is UTC, "+0100" is accepted
_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9})\d*)?"
                 r"(Z|[+-]\d\d:?\d\d)?$")


def parse_ns(ts: str) -> int | None:
    """RFC3339(Nano) -> nanoseconds since the epoch (None when not a timestamp)."""
    m = _TS.match(ts.strip())
    if not m:
        return None
    tz = m.group(3) or "Z"
    tz = "+00:00" if tz == "Z" else tz if ":" in tz else f"{tz[:3]}:{tz[3:]}"
    try:
        secs = int(datetime.fromisoformat(m.group(1) + tz).timestamp())
    except ValueError:  # e.g. month 13
        return None
    return secs * 1_000_000_000 + int((m.group(2) or "0").ljust(9, "0"))


def fmt_ns(ns: int) -> str:
    """Nanoseconds since the epoch -> RFC3339Nano UTC, as podman parses it."""
    secs, frac = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def last_line_time(timestamped: bytes) -> str | None:
    """The timestamp of the last line of `podman logs --timestamps` output."""
    for line in reversed(timestamped.decode(errors="replace").splitlines()):
        ts = line.split(" ", 1)[0]
        if parse_ns(ts) is not None:
            return ts
    return None


class LogWindow:
    """podman logs bounds: since/until (RFC3339Nano, exclusive) and whether to tail here."""

    def __init__(self, since: str | None, until: str | None, *, empty: bool = False) -> None:
        self.since, self.until, self.empty = since, until, empty


def log_window(marks: dict | None, previous: bool, since_seconds: str | None,
               since_time: str | None, now: float | None = None) -> LogWindow | None:
    """The window for one log request. `marks` is the container's persisted {"cur", "prev"}
    (the last log line's timestamp before the current / previous run; None = the log's
    start), absent before the first restart. None: --previous asked and there is none."""
    lower: list[int] = []
    if since_seconds:
        lower.append(int(((now or time.time()) - int(since_seconds)) * 1_000_000_000))
    elif since_time and parse_ns(since_time) is not None:
        lower.append(parse_ns(since_time) - 1)  # type: ignore[operator]  # inclusive
    until = None
    if previous:
        if not marks or "cur" not in marks:
            return None
        if marks.get("cur") is None:  # the previous run(s) wrote nothing
            return LogWindow(None, None, empty=True)
        until = fmt_ns(parse_ns(marks["cur"]) + 1)  # type: ignore[operator]  # inclusive
        bound = marks.get("prev")
    else:
        bound = (marks or {}).get("cur")
    if bound and parse_ns(bound) is not None:
        lower.append(parse_ns(bound))  # type: ignore[arg-type]
    return LogWindow(fmt_ns(max(lower)) if lower else None, until)


def tail_lines(data: bytes, n: int) -> bytes:
    """The last `n` lines of `data` (a final line without a newline counts)."""
    if n <= 0:
        return b""
    lines = data.splitlines(keepends=True)
    return b"".join(lines[-n:])
