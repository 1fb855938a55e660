"""Node selector terms (v1.NodeSelectorTerm) matched against a Node: label requirements with
In/NotIn/Exists/DoesNotExist/Gt/Lt and the metadata.name field. Pure; used by the scheduler's
node affinity and by PersistentVolume node affinity (volume binding)."""

from __future__ import annotations

__all__ = ["node_selector_term_matches"]


def _int(s: str) -> int | None:
    try:
        return int(s)
    except (TypeError, ValueError):
        return None


def _requirement_matches(req: dict, values: dict[str, str]) -> bool:
    key, op, want = req.get("key") or "", req.get("operator"), req.get("values") or []
    have = values.get(key)
    if op == "In":
        return have is not None and have in want
    if op == "NotIn":
        return have is None or have not in want
    if op == "Exists":
        return key in values
    if op == "DoesNotExist":
        return key not in values
    if op in ("Gt", "Lt"):
        if have is None or len(want) != 1:
            return False
        a, b = _int(have), _int(want[0])
        if a is None or b is None:
            return False
        return a > b if op == "Gt" else a < b
    return False


def node_selector_term_matches(term: dict, node: dict) -> bool:
    """A term with no requirements matches nothing, as upstream."""
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return False
    labels = (node.get("metadata") or {}).get("labels") or {}
    if not all(_requirement_matches(r, labels) for r in exprs):
        return False
    field_values = {"metadata.name": (node.get("metadata") or {}).get("name") or ""}
    return all(r.get("key") == "metadata.name" and _requirement_matches(r, field_values)
               for r in fields)
