"""A small JSONPath subset on plain objects: `.a.b`, `.a[0]`, `.a[?(@.type=="Ready")].status`.

Used by the scale subresource (CRD replica paths) and printer columns; no I/O."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["get_path", "set_path"]

_TOKEN = re.compile(r"""\.([A-Za-z0-9_\-$]+)|\[(\d+)\]|\[\?\(@\.([A-Za-z0-9_.\-]+)\s*==\s*["']([^"']*)["']\)\]|\[['"]([^'"]+)['"]\]""")


def _tokens(path: str) -> list[tuple[str, Any]]:
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    if path.startswith("$"):
        path = path[1:]
    if path and not path.startswith((".", "[")):
        path = "." + path
    out: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if not m:
            raise ValueError(f"unsupported JSONPath {path!r}")
        if m.group(1) is not None:
            out.append(("key", m.group(1)))
        elif m.group(2) is not None:
            out.append(("index", int(m.group(2))))
        elif m.group(3) is not None:
            out.append(("filter", (m.group(3), m.group(4))))
        else:
            out.append(("key", m.group(5)))
        pos = m.end()
    return out


def get_path(obj: Any, path: str) -> Any:
    cur = obj
    for kind, arg in _tokens(path):
        if cur is None:
            return None
        if kind == "key":
            cur = cur.get(arg) if isinstance(cur, dict) else None
        elif kind == "index":
            cur = cur[arg] if isinstance(cur, list) and -len(cur) <= arg < len(cur) else None
        else:
            field, value = arg
            found = None
            for item in cur if isinstance(cur, list) else []:
                if isinstance(item, dict) and str(get_path(item, "." + field)) == value:
                    found = item
                    break
            cur = found
    return cur


def set_path(obj: dict, path: str, value: Any) -> None:
    toks = _tokens(path)
    cur: Any = obj
    for kind, arg in toks[:-1]:
        if kind != "key":
            raise ValueError(f"cannot set through {path!r}")
        cur = cur.setdefault(arg, {})
    kind, arg = toks[-1]
    if kind != "key":
        raise ValueError(f"cannot set {path!r}")
    cur[arg] = value
