"""Decoder for `application/vnd.kubernetes.protobuf` request bodies (client-go typed clients).

Turns the runtime.Unknown envelope + Go-marshalled message into the JSON dict a JSON client sends."""

from __future__ import annotations

import base64
import gzip
import struct
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from importlib import resources
from typing import Any

import orjson

from k3py.api import errors

__all__ = ["MAGIC", "CONTENT_TYPE", "decode_k8s_protobuf", "decode_message", "schema"]

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"

_META = "k8s.io.apimachinery.pkg.apis.meta.v1."
_TIME = _META + "Time"
_MICRO = _META + "MicroTime"
_DURATION = _META + "Duration"
_FIELDS = _META + "FieldsV1"
_QUANTITY = "k8s.io.apimachinery.pkg.api.resource.Quantity"
_INTSTR = "k8s.io.apimachinery.pkg.util.intstr.IntOrString"
_RAW = "k8s.io.apimachinery.pkg.runtime.RawExtension"
_EXT = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1."
_JSON = _EXT + "JSON"
_OR_ARRAY = _EXT + "JSONSchemaPropsOrArray"
_OR_BOOL = _EXT + "JSONSchemaPropsOrBool"
_OR_STRINGS = _EXT + "JSONSchemaPropsOrStringArray"

_REPEATED, _POINTER, _INLINE, _KEEP_ZERO = 1, 2, 4, 8
_VARINT_KINDS = frozenset({"int32", "int64", "uint32", "uint64", "bool", "sint32", "sint64"})
_FIXED64_KINDS = {"fixed64": "<Q", "sfixed64": "<q", "double": "<d"}
_FIXED32_KINDS = {"fixed32": "<I", "sfixed32": "<i", "float": "<f"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Malformed(Exception):
    pass


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The packaged schema (see tools/gen_proto_schema.py), loaded once on first use."""
    data = resources.files("k3py.api").joinpath("data/proto_schema.json.gz").read_bytes()
    return orjson.loads(gzip.decompress(data))


# --- wire format -----------------------------------------------------------------------------

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise _Malformed("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Malformed("varint too long")


def _fields(buf: bytes):
    """Yield (field number, wire type, value) where value is an int or a bytes slice."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise _Malformed("field number 0")
        if wt == 0:
            val, pos = _varint(buf, pos)
        elif wt == 1:
            if pos + 8 > end:
                raise _Malformed("truncated fixed64")
            val, pos = buf[pos:pos + 8], pos + 8
        elif wt == 2:
            n, pos = _varint(buf, pos)
            if pos + n > end:
                raise _Malformed("truncated length-delimited field")
            val, pos = buf[pos:pos + n], pos + n
        elif wt == 5:
            if pos + 4 > end:
                raise _Malformed("truncated fixed32")
            val, pos = buf[pos:pos + 4], pos + 4
        else:
            raise _Malformed(f"unsupported wire type {wt}")
        yield num, wt, val


def _int(kind: str, v: int) -> int | bool:
    if kind == "bool":
        return v != 0
    if kind in ("sint32", "sint64"):
        return (v >> 1) ^ -(v & 1)
    if kind in ("int32", "int64") and v >= 1 << 63:
        v -= 1 << 64
    if kind == "int32":
        v = (v + (1 << 31)) % (1 << 32) - (1 << 31)
    elif kind == "uint32":
        v &= 0xFFFFFFFF
    return v


def _scalars(kind: str, wt: int, val: Any) -> list[Any]:
    """Decode one occurrence of a scalar field (several values when it is packed)."""
    if kind == "string":
        if wt != 2:
            raise _Malformed("string field with non length-delimited wire type")
        try:
            return [bytes(val).decode()]
        except UnicodeDecodeError:
            raise _Malformed("string field is not valid UTF-8") from None
    if kind == "bytes":
        if wt != 2:
            raise _Malformed("bytes field with non length-delimited wire type")
        return [base64.b64encode(val).decode()]
    if kind in _VARINT_KINDS:
        if wt == 0:
            return [_int(kind, val)]
        if wt == 2:  # packed
            out, pos = [], 0
            while pos < len(val):
                v, pos = _varint(val, pos)
                out.append(_int(kind, v))
            return out
        raise _Malformed(f"{kind} field with wire type {wt}")
    fmt = _FIXED64_KINDS.get(kind) or _FIXED32_KINDS.get(kind)
    if fmt is None:
        raise _Malformed(f"unknown scalar kind {kind}")
    size = struct.calcsize(fmt)
    if wt == 2 and len(val) % size == 0:
        return [v for (v,) in struct.iter_unpack(fmt, val)]
    if (wt == 1 and size == 8) or (wt == 5 and size == 4):
        return [struct.unpack(fmt, val)[0]]
    raise _Malformed(f"{kind} field with wire type {wt}")


# --- special message types -------------------------------------------------------------------

def _raw_fields(buf: bytes) -> dict[int, Any]:
    return {num: val for num, _wt, val in _fields(buf)}


def _time(buf: bytes, micro: bool) -> str | None:
    if not buf:
        return None  # Go's zero time: JSON null
    f = _raw_fields(buf)
    secs, nanos = _int("int64", f.get(1, 0)), _int("int32", f.get(2, 0))
    try:
        t = _EPOCH + timedelta(seconds=secs)
    except OverflowError:
        raise _Malformed("timestamp out of range") from None
    if micro:
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{nanos // 1000:06d}Z"
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _fmt_frac(v: int, prec: int) -> str:
    """v / 10**prec without trailing zeros, like Go's time.Duration.String."""
    whole, frac = divmod(v, 10 ** prec)
    s = str(frac).rjust(prec, "0").rstrip("0") if prec else ""
    return f"{whole}.{s}" if s else str(whole)


def go_duration(ns: int) -> str:
    """Format nanoseconds as Go's time.Duration.String() does ("1h0m0s", "1.5s", "300ms")."""
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_fmt_frac(ns, 3)}µs"
    if ns < 1_000_000_000:
        return f"{sign}{_fmt_frac(ns, 6)}ms"
    secs, sub = divmod(ns, 1_000_000_000)
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    out = _fmt_frac(s * 1_000_000_000 + sub, 9) + "s"
    if h:
        return f"{sign}{h}h{m}m{out}"
    if m:
        return f"{sign}{m}m{out}"
    return sign + out


def _raw_json(buf: bytes) -> Any:
    raw = _raw_fields(buf).get(1, b"")
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _Malformed("embedded raw object is not valid JSON") from None


def _special(name: str, buf: bytes) -> tuple[bool, Any]:
    """(handled, value) for message types whose JSON form is not a plain object."""
    if name == _TIME or name == _MICRO:
        return True, _time(buf, name == _MICRO)
    if name == _QUANTITY:
        raw = _raw_fields(buf).get(1)
        return True, bytes(raw).decode() if raw is not None else None
    if name == _INTSTR:
        f = _raw_fields(buf)
        if _int("int64", f.get(1, 0)) == 1:
            return True, bytes(f.get(3, b"")).decode()
        return True, _int("int32", f.get(2, 0))
    if name == _DURATION:
        return True, go_duration(_int("int64", _raw_fields(buf).get(1, 0)))
    if name in (_RAW, _JSON, _FIELDS):
        return True, _raw_json(buf)
    if name == _OR_ARRAY:
        items = [decode_message(_EXT + "JSONSchemaProps", v) for n, _w, v in _fields(buf) if n == 2]
        if items:
            return True, items
        f = _raw_fields(buf)
        return True, decode_message(_EXT + "JSONSchemaProps", f[1]) if 1 in f else None
    if name == _OR_BOOL:
        f = _raw_fields(buf)
        if 2 in f:
            return True, decode_message(_EXT + "JSONSchemaProps", f[2])
        return True, bool(f.get(1, 0))
    if name == _OR_STRINGS:
        strings = [bytes(v).decode() for n, _w, v in _fields(buf) if n == 2]
        f = _raw_fields(buf)
        if 1 in f:
            return True, decode_message(_EXT + "JSONSchemaProps", f[1])
        return True, strings
    return False, None


# --- generic messages ------------------------------------------------------------------------

def _empty(v: Any) -> bool:
    if isinstance(v, (int, float)):
        return not v
    return v is None or v in ("", [], {})


def _value(kind: str, ref: Any, wt: int, val: Any) -> list[Any]:
    if kind == "message":
        if wt != 2:
            raise _Malformed(f"message {ref} with wire type {wt}")
        return [decode_message(ref, val)]
    return _scalars(kind, wt, val)


def _map_entry(spec: list, buf: bytes) -> tuple[Any, Any]:
    kkind, vkind, vref = spec
    key: Any = "" if kkind == "string" else 0
    value: Any = None
    for num, wt, val in _fields(buf):
        if num == 1:
            key = _scalars(kkind, wt, val)[-1]
        elif num == 2:
            value = _value(vkind, vref, wt, val)[-1]
    if value is None:  # absent value: the type's zero value
        if vkind == "message":
            value = decode_message(vref, b"")
        elif vkind in ("string", "bytes"):
            value = ""
        else:
            value = False if vkind == "bool" else 0
    return key, value


def decode_message(name: str, buf: bytes) -> Any:
    """Decode one message of the named type into its JSON form."""
    handled, special = _special(name, buf)
    if handled:
        return special
    msg = schema()["messages"].get(name)
    if msg is None:
        raise _Malformed(f"no protobuf schema for message {name}")
    spec = msg["fields"]
    out: dict[str, Any] = {}
    seen: dict[str, list] = {}
    for num, wt, val in _fields(buf):
        field = spec.get(str(num))
        if field is None:
            continue  # unknown field: ignore, like the Go unmarshaller
        jname, kind, flags, ref = field
        if kind == "map":
            k, v = _map_entry(ref, val)
            out.setdefault(jname, {})[k] = v
            seen[jname] = field
            continue
        values = _value(kind, ref, wt, val)
        if flags & _REPEATED:
            out.setdefault(jname, []).extend(values)
        elif values:
            out[jname] = values[-1]
        seen[jname] = field
    if msg.get("list"):
        return out.get("items", [])
    result: dict[str, Any] = {}
    for jname, v in out.items():
        _j, kind, flags, _r = seen[jname]
        if flags & _INLINE and isinstance(v, dict):
            result.update(v)
        elif flags & _POINTER and not flags & _REPEATED:
            if v is not None:
                result[jname] = v
        elif not _empty(v) or (flags & _KEEP_ZERO and kind not in ("message", "map")
                               and not flags & _REPEATED):
            result[jname] = v
    return result


def _group_message(api_version: str, kind: str) -> str:
    s = schema()
    pkg = s["groups"].get(api_version)
    if pkg and f"{pkg}.{kind}" in s["messages"]:
        return f"{pkg}.{kind}"
    if _META + kind in s["messages"]:  # DeleteOptions, CreateOptions, ... in every group
        return _META + kind
    raise errors.unsupported_media_type(
        f"{CONTENT_TYPE} (no protobuf support for {api_version or '<none>'}, "
        f"Kind={kind or '<none>'})")


def decode_k8s_protobuf(body: bytes, api_version_hint: str = "", kind_hint: str = "") -> dict:
    """Decode a `k8s\\x00`-prefixed runtime.Unknown envelope into a JSON-shaped object dict.

    The envelope's typeMeta picks the message; the hints are used when it is empty."""
    if not body.startswith(MAGIC):
        raise errors.bad_request("error decoding protobuf body: missing the k8s protobuf prefix")
    try:
        # a memoryview: every nested field is a slice of it, not a copy of the rest of the
        # buffer (a few hundred levels of nesting once peaked at 1.8 GB)
        env = {num: val for num, _wt, val in _fields(memoryview(body)[len(MAGIC):])}
        tm = _raw_fields(env.get(1, b""))
        api_version = bytes(tm.get(1, b"")).decode() or api_version_hint
        kind = bytes(tm.get(2, b"")).decode() or kind_hint
        encoding = bytes(env.get(3, b"")).decode()
        content_type = bytes(env.get(4, b"")).decode()
    except (_Malformed, ValueError, TypeError) as e:
        raise errors.bad_request(f"error decoding protobuf envelope: {e}") from None
    if encoding:
        raise errors.unsupported_media_type(f"{CONTENT_TYPE} (contentEncoding {encoding!r})")
    if content_type and content_type != CONTENT_TYPE:
        raise errors.unsupported_media_type(f"{CONTENT_TYPE} (contentType {content_type!r})")
    name = _group_message(api_version, kind)
    try:
        obj = decode_message(name, env.get(2, memoryview(b"")))
    except (_Malformed, RecursionError, ValueError, TypeError, struct.error) as e:
        raise errors.bad_request(f"error decoding protobuf {api_version}/{kind}: {e}") from None
    return {"apiVersion": api_version, "kind": kind, **obj}
