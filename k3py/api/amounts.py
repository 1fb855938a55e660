"""Counts and measures read from another process's JSON (a node's usage report or MQTT
summary, a peer server's tunnel figures): a number >= 0 and below 2**63, and no boolean.

Below 2**63 because that is what Kubernetes quantities (int64) and the JSON encoders on the
way (orjson: 64-bit integers) carry. Used by k3py.tunnel.protocol, k3py.tunnel.mqtt and
k3py.server.edge.peertunnels; no I/O."""

from __future__ import annotations

from typing import Any

__all__ = ["AMOUNT_LIMIT", "is_amount", "amount", "count"]

AMOUNT_LIMIT = 2 ** 63  # exclusive


def is_amount(v: Any) -> bool:
    """A number >= 0 and below AMOUNT_LIMIT (NaN and the infinities are not)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < AMOUNT_LIMIT


def amount(v: Any, what: str) -> float:
    """`v` as a float; ValueError naming `what` when it is not an amount."""
    if not is_amount(v):
        raise ValueError(f"{what} must be a number >= 0 and < 2**63")
    return float(v)


def count(v: Any, what: str) -> int:
    """`v` as an int (a float truncated); ValueError naming `what` when it is not an
    amount."""
    if not is_amount(v):
        raise ValueError(f"{what} must be a number >= 0 and < 2**63")
    return int(v)
