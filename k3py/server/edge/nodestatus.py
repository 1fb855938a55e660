"""The agent's share of its Node's status, as upstream's kubelet owns it.

Upstream's kubelet does not put its Node status: every 10 s it reads the Node, runs its
status setters on a copy (each sets its own fields: addresses, capacity and allocatable,
nodeInfo, daemonEndpoints, images, volumes in use, and each of its conditions, which a setter
finds by type and changes in place, or appends when the Node has none of that type), and,
when the copy differs from the Node read (heartbeat times aside) or a report is due, sends
the difference as a strategic merge patch of the status subresource, where conditions merge
by type. So a condition the kubelet does not set (NetworkUnavailable from a network plugin,
KernelDeadlock or any type of node-problem-detector) survives its every post, and any edit of
what it does set is put back at its next 10 s look.

The agent posts its whole computed status instead, and `merged_status` stores it as that patch
would: the posted fields replace theirs, the posted conditions replace those of their types in
place (new types go at the end, in posted order), and everything else stays. In the same walk
each posted condition gets its lastTransitionTime from the stored one of its type, as the
kubelet sets it from the Node it reads (the agent knows only its own start): the stored time
while the status stays; the server's now when the status changed (Unknown, set by the
lifecycle controller, back to True) and the posted time is not later than the stored one.

`AgentStatus` is what the server holding the node's tunnel remembers of the status it last
stored for the agent, so that at the agent's next Lease it can see, from its nodes informer,
that someone changed the agent's part since (cloudhub.py asks the agent to post again: the
kubelet's 10 s look, without the agent reading its Node); it compares a cached Node version
once only."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from k3py.api.objects import parse_time

__all__ = ["AgentStatus", "merged_status", "merged_conditions", "resource_version"]

# what the agent stamps on every post or the server keeps from the stored Node: not an edit
_TIMES = frozenset({"lastHeartbeatTime", "lastTransitionTime"})


def _type(condition: object) -> str | None:
    kind = condition.get("type") if isinstance(condition, dict) else None
    return kind if isinstance(kind, str) else None


def _later(posted: object, stored: object) -> bool:
    """Whether the time `posted` is after the time `stored` (one that does not parse is never
    after, and anything is after none)."""
    p = parse_time(posted) if isinstance(posted, str) else None
    s = parse_time(stored) if isinstance(stored, str) else None
    if p is None:
        return False
    if s is None:
        return True
    return p.replace(tzinfo=p.tzinfo or _dt.UTC) > s.replace(tzinfo=s.tzinfo or _dt.UTC)


def _with_transition(posted: dict, stored: dict, now: str) -> dict:
    """The `posted` condition with its lastTransitionTime from `stored` (the Node's condition
    of its type): the stored time while the status stays, `now` when the status changed and
    the posted time is not later than the stored one. A copy when the time changes."""
    if stored.get("status") == posted.get("status"):
        if stored.get("lastTransitionTime"):
            return {**posted, "lastTransitionTime": stored["lastTransitionTime"]}
    elif not _later(posted.get("lastTransitionTime"), stored.get("lastTransitionTime")):
        return {**posted, "lastTransitionTime": now}
    return posted


def merged_conditions(posted: list, stored: object, now: str) -> list:
    """`stored` (a Node's conditions) with each condition of a type in `posted` replaced, in
    its place, by the posted one(s) of that type, with their transition times from it; the
    posted of a type `stored` lacks come last, in their order, as posted. Anything `stored`
    holds that is not a list of conditions is none."""
    stored = stored if isinstance(stored, list) else []
    had: dict[str, dict] = {}  # by type; of several of a type, the last one's time counts
    for old in stored:
        kind = _type(old)
        if kind is not None:
            had[kind] = old
    mine: dict[str, list] = {}  # the posted of each type `stored` has, in posted order
    new: list = []
    for c in posted:
        kind = _type(c)
        if kind in had:
            mine.setdefault(kind, []).append(_with_transition(c, had[kind], now))
        else:
            new.append(c)
    out: list = []
    placed: set[str] = set()
    for old in stored:
        kind = _type(old)
        if kind not in mine:
            out.append(old)
        elif kind not in placed:  # the first of its type: the posted of it go there
            placed.add(kind)
            out += mine[kind]
    return out + new


def merged_status(posted: dict, stored: dict | None, now: str) -> dict:
    """The Node status to store for the agent's `posted` status, `stored` being the Node's
    (None: none yet), `now` the server's time: the posted fields replace theirs, the posted
    conditions merge by type with the stored transition times (merged_conditions), the rest
    of `stored` stays; `posted` is left as it is. A `posted` that is not an object, or
    conditions that are not a list, are stored as posted, for validation to judge."""
    if not isinstance(posted, dict):
        return posted
    stored = stored if isinstance(stored, dict) else {}
    out = {**stored, **posted}
    conditions = posted.get("conditions")
    if isinstance(conditions, list):
        out["conditions"] = merged_conditions(conditions, stored.get("conditions"), now)
    return out


def resource_version(obj: dict | None) -> int:
    """The object's resourceVersion as the number it is here (the store's revision); -1 for
    none or one that is not a number."""
    rv = ((obj or {}).get("metadata") or {}).get("resourceVersion")
    try:
        return int(rv)
    except (TypeError, ValueError):
        return -1


def _part(status: object, fields: Iterable[str], types: Iterable[str]) -> dict:
    status = status if isinstance(status, dict) else {}
    had = {_type(c): c for c in status.get("conditions") or [] if _type(c) is not None}
    conditions = {t: {k: v for k, v in had[t].items() if k not in _TIMES} if t in had else None
                  for t in types}
    return {"fields": {k: status.get(k) for k in fields}, "conditions": conditions}


@dataclass(slots=True)
class AgentStatus:
    """The agent's part of the Node status the server stored at `version`: the fields the
    agent posted and its conditions (by type, heartbeat and transition times aside: the
    kubelet sets a transition time only with a new status, and keeps the Node's); and the
    last cached Node version judged against it, with the verdict (asked at every Lease, of
    a cached Node that changes far less often)."""

    version: int
    part: dict
    judged: tuple[int, bool] | None = field(default=None, compare=False)

    @classmethod
    def of(cls, posted: dict, node: dict) -> AgentStatus:
        """What `node` (the Node as written) holds of the agent's `posted` status."""
        fields = sorted(k for k in posted if k != "conditions")
        conditions = posted.get("conditions")
        types = sorted({t for t in map(_type, conditions) if t}
                       if isinstance(conditions, list) else ())
        return cls(resource_version(node), _part(node.get("status"), fields, types))

    def overridden_in(self, node: dict) -> bool:
        """Whether `node` (a cached Node) is this version or a later one, and its part of
        the agent's differs: someone changed it since. A cache behind `version` (the
        agent's own write not in it yet) tells nothing. A version judged last is not
        compared again: the same version is the same Node."""
        version = resource_version(node)
        if version < self.version:
            return False
        if self.judged is None or self.judged[0] != version:
            fields = self.part["fields"]
            self.judged = (version, _part(node.get("status"), fields,
                                          self.part["conditions"]) != self.part)
        return self.judged[1]
