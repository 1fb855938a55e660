"""Small helpers on Kubernetes objects as plain dicts: metadata access, timestamps, JSON.

Used by the registry, the apiserver handlers, controllers and the agent; the one JSON codec."""

from __future__ import annotations

import datetime as _dt
import time
import uuid
from typing import Any

import orjson

__all__ = [
    "ADDON_ANNOTATION",
    "dumps", "loads", "now_rfc3339", "parse_time", "new_uid", "meta", "name_of",
    "namespace_of", "labels_of", "owner_uids", "is_controlled_by", "controller_ref",
    "deepcopy",
]

# on a cluster object a built-in add-on brings: its --disable name (only such an object is
# removed when the add-on is disabled; a user's own of the same name is kept)
ADDON_ANNOTATION = "k3py.io/addon"


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def deepcopy(obj: Any) -> Any:
    # orjson round trip is several times faster than copy.deepcopy for JSON-shaped data
    return orjson.loads(orjson.dumps(obj))


# (second, its RFC 3339 text): a server writes several timestamps per object (creation,
# managedFields, conditions, Events), most within the same second, and formatting one costs
# more than the rest of a small write's bookkeeping
_last_second: tuple[int, str] = (-1, "")


def now_rfc3339(micro: bool = False) -> str:
    global _last_second
    if micro:
        return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    second = int(time.time())
    cached = _last_second
    if cached[0] == second:
        return cached[1]
    text = _dt.datetime.fromtimestamp(second, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    _last_second = (second, text)
    return text


def parse_time(value: str | None) -> _dt.datetime | None:
    if not value:
        return None
    v = value.replace("Z", "+00:00")
    try:
        return _dt.datetime.fromisoformat(v)
    except ValueError:
        return None


def new_uid() -> str:
    return str(uuid.uuid4())


def meta(obj: dict) -> dict:
    m = obj.get("metadata")
    if not isinstance(m, dict):
        m = {}
        obj["metadata"] = m
    return m


def name_of(obj: dict) -> str:
    return (obj.get("metadata") or {}).get("name") or ""


def namespace_of(obj: dict) -> str:
    return (obj.get("metadata") or {}).get("namespace") or ""


def labels_of(obj: dict) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def owner_uids(obj: dict) -> list[str]:
    return [o.get("uid", "") for o in (obj.get("metadata") or {}).get("ownerReferences") or []]


def controller_ref(obj: dict) -> dict | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def is_controlled_by(obj: dict, owner: dict) -> bool:
    ref = controller_ref(obj)
    return bool(ref and ref.get("uid") == (owner.get("metadata") or {}).get("uid"))


def make_controller_ref(owner: dict, block: bool = True) -> dict:
    m = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": m["name"],
        "uid": m["uid"],
        "controller": True,
        "blockOwnerDeletion": block,
    }
