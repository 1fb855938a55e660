"""A bounded memo of what a walk over a JSON value found, keyed by where the value sits (a
schema and a field path) and its JSON encoding: the objects a controller makes from one
template carry the same spec, so a walk over it runs once, not per object. Used by apply.py
(a top-level field's FieldsV1 node) and schema.py (fields found clean: no unknown field, no
wrong type)."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Generic, TypeVar

import orjson

__all__ = ["ValueMemo"]

T = TypeVar("T")
Key = tuple[Hashable, str, bytes]


class ValueMemo(Generic[T]):
    """At most `entries` results, the one stored first dropped first (reading one does not
    keep it longer), each for a value whose encoding is at most `max_bytes`."""

    def __init__(self, entries: int = 256, max_bytes: int = 16 * 1024) -> None:
        self._found: dict[Key, T] = {}
        self._entries = entries
        self._max_bytes = max_bytes

    def key(self, where: Hashable, path: str, value: Any, skip: bytes = b"") -> Key | None:
        """The memo key of `value`, None when it is not remembered (too large, not encodable,
        or holding `skip`)."""
        try:
            data = orjson.dumps(value)
        except (orjson.JSONEncodeError, TypeError):  # e.g. an int over 64 bits (from YAML)
            return None
        if len(data) > self._max_bytes or (skip and skip in data):
            return None
        return (where, path, data)

    def get(self, key: Key | None) -> T | None:
        return None if key is None else self._found.get(key)

    def put(self, key: Key | None, found: T) -> None:
        if key is None:
            return
        if len(self._found) >= self._entries:
            del self._found[next(iter(self._found))]
        self._found[key] = found
