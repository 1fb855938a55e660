"""Small helpers on Kubernetes objects as plain dicts: metadata access, timestamps, JSON.

Used by the registry, the apiserver handlers, controllers and the agent; the one JSON codec."""

from __future__ import annotations

import datetime as _dt
import os
import threading
import time
from typing import Any

import orjson

__all__ = [
    "ADDON_ANNOTATION",
    "dumps", "loads", "now_rfc3339", "parse_time", "new_uid", "new_id", "meta", "name_of",
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


# Random bytes for new ids, drawn from os.urandom a block at a time: os.urandom lets go of the
# GIL for its system call, and the event loop, which makes an id for every object, Event and
# tunnel message it writes, then waits for a store thread to hand the GIL back (a few ms under
# load). One call per _ID_BLOCK ids instead of one per id; the bytes are the same kernel CSPRNG's.
_ID_BLOCK = 256 * 16
_id_bytes = memoryview(b"")
_id_pos = 0
_id_lock = threading.Lock()  # two threads must never take the same 16 bytes


def _random16() -> bytes:
    global _id_bytes, _id_pos
    with _id_lock:
        pos = _id_pos
        if pos + 16 > len(_id_bytes):
            _id_bytes, pos = memoryview(os.urandom(_ID_BLOCK)), 0
        _id_pos = pos + 16
        return bytes(_id_bytes[pos:pos + 16])


def _forget_id_bytes() -> None:
    global _id_bytes, _id_pos, _id_lock
    _id_bytes, _id_pos, _id_lock = memoryview(b""), 0, threading.Lock()


os.register_at_fork(after_in_child=_forget_id_bytes)  # a child never repeats its parent's ids


def new_id() -> str:
    """128 random bits as 32 hex digits (tunnel message and stream ids)."""
    return _random16().hex()


def new_uid() -> str:
    """A random (version 4) UUID as text, as uuid.uuid4() makes it."""
    b = bytearray(_random16())
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


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
