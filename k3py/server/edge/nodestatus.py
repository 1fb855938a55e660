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
place (new types go at the end, in posted order), and everything else stays. `AgentStatus`
is what the server holding the node's tunnel remembers of the status it last stored for the
agent, so that at the agent's next Lease it can see, from its nodes informer, that someone
changed the agent's part since (cloudhub.py asks the agent to post again: the kubelet's 10 s
look, without the agent reading its Node)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["AgentStatus", "merged_status", "merged_conditions", "resource_version"]

# what the agent stamps on every post or the server keeps from the stored Node: not an edit
_TIMES = frozenset({"lastHeartbeatTime", "lastTransitionTime"})


def _type(condition: object) -> str | None:
    kind = condition.get("type") if isinstance(condition, dict) else None
    return kind if isinstance(kind, str) else None


def merged_conditions(posted: list, stored: object) -> list:
    """`stored` (a Node's conditions) with each condition of a type in `posted` replaced, in
    its place, by the posted one(s) of that type; the posted of a type `stored` lacks come
    last, in their order. Anything `stored` holds that is not a list of conditions is none."""
    types = {t for t in map(_type, posted) if t is not None}
    out: list = []
    placed: set[str] = set()
    for old in stored if isinstance(stored, list) else []:
        kind = _type(old)
        if kind not in types:
            out.append(old)
        elif kind not in placed:
            placed.add(kind)
            out += [c for c in posted if _type(c) == kind]
    return out + [c for c in posted if _type(c) not in placed]


def merged_status(posted: dict, stored: dict | None) -> dict:
    """The Node status to store for the agent's `posted` status, `stored` being the Node's
    (None: none yet): the posted fields replace theirs, the posted conditions merge by type
    (merged_conditions), the rest of `stored` stays. A `posted` that is not an object, or
    conditions that are not a list, are stored as posted, for validation to judge."""
    if not isinstance(posted, dict):
        return posted
    out = {**(stored if isinstance(stored, dict) else {}), **posted}
    conditions = posted.get("conditions")
    if isinstance(conditions, list):
        out["conditions"] = merged_conditions(conditions, (stored or {}).get("conditions"))
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


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """The agent's part of the Node status the server stored at `version`: the fields the
    agent posted and its conditions (by type, heartbeat and transition times aside: the
    kubelet sets a transition time only with a new status, and keeps the Node's)."""

    version: int
    part: dict

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
        agent's own write not in it yet) tells nothing."""
        if resource_version(node) < self.version:
            return False
        fields = self.part["fields"]
        return _part(node.get("status"), fields, self.part["conditions"]) != self.part
