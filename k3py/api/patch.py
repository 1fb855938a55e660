"""The three PATCH bodies of the Kubernetes API applied to a JSON document: JSON patch (RFC 6902),
JSON merge patch (RFC 7386) and strategic merge patch, with upstream's error codes (pure).

Strategic merge reads patch strategies and merge keys from the generated schema definitions;
kinds without a definition (custom resources) get merge-patch semantics, like upstream."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import orjson

from k3py.api import errors
from k3py.api.schema import Schema, schema_for
from k3py.api.schema import find_unknown_fields as _find_unknown_fields

__all__ = ["apply_json_patch", "apply_merge_patch", "apply_strategic_merge_patch",
           "schema_lookup", "schema_for", "find_unknown_fields", "MAX_JSON_PATCH_OPERATIONS"]

MAX_JSON_PATCH_OPERATIONS = 10000
# kube-apiserver's JSONPatchMaxCopyBytes: what `copy` operations may add to a document, in total
MAX_JSON_PATCH_COPY_BYTES = 3 * 1024 * 1024

SchemaArg = Schema | Callable[[str, str], Schema | None] | None


def schema_lookup(api_version: str, kind: str) -> Schema | None:
    """The strategic-merge / apply schema of a built-in kind (None for custom resources)."""
    return schema_for(api_version, kind)


def find_unknown_fields(api_version: str, kind: str, obj: Any) -> list[str]:
    """Paths of fields a built-in kind does not define (fieldValidation Strict / Warn)."""
    return _find_unknown_fields(api_version, kind, obj)


def _rejected(detail: str) -> errors.StatusError:
    # upstream wraps patch-application errors in NewGenericServerResponse(422): the detail is
    # not shown to the client
    err = errors.StatusError(422, "Invalid",
                             "the server rejected our request due to an error in our request")
    err.detail = detail  # type: ignore[attr-defined]
    return err


# ------------------------------------------------------------------ JSON patch (RFC 6902)


class _PatchFailed(Exception):
    pass


def _tokens(path: Any) -> list[str]:
    if not isinstance(path, str):
        raise _PatchFailed("path must be a string")
    if path == "":
        return []
    if not path.startswith("/"):
        raise _PatchFailed(f"invalid path {path!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _index(token: str, length: int, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return length
    if not token.lstrip("-").isdigit() or (token.startswith("0") and token != "0"):
        raise _PatchFailed(f"invalid array index {token!r}")
    i = int(token)
    if i < 0:
        i += length + (1 if allow_end else 0)
    if i < 0 or i > length or (i == length and not allow_end):
        raise _PatchFailed(f"array index {token} out of bounds")
    return i


def _parent(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for t in tokens[:-1]:
        if isinstance(node, dict):
            if t not in node:
                raise _PatchFailed("doc is missing path")
            node = node[t]
        elif isinstance(node, list):
            node = node[_index(t, len(node), False)]
        else:
            raise _PatchFailed("doc is missing path")
    return node


def _get(doc: Any, tokens: list[str]) -> tuple[bool, Any]:
    node = doc
    for t in tokens:
        if isinstance(node, dict):
            if t not in node:
                return False, None
            node = node[t]
        elif isinstance(node, list):
            try:
                node = node[_index(t, len(node), False)]
            except _PatchFailed:
                return False, None
        else:
            return False, None
    return True, node


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent, last = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(last, len(parent), True), value)
    else:
        raise _PatchFailed("doc is missing path")
    return doc


def _remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise _PatchFailed("cannot remove the whole document")
    parent, last = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _PatchFailed("Unable to remove nonexistent key")
        del parent[last]
    elif isinstance(parent, list):
        del parent[_index(last, len(parent), False)]
    else:
        raise _PatchFailed("doc is missing path")
    return doc


def _replace(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent, last = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _PatchFailed("replace operation does not apply: doc is missing key")
        parent[last] = value
    elif isinstance(parent, list):
        parent[_index(last, len(parent), False)] = value
    else:
        raise _PatchFailed("doc is missing path")
    return doc


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def apply_json_patch(doc: Any, ops: Any) -> Any:
    """Apply RFC 6902 operations. Malformed patches are 400, failing operations 422 (upstream)."""
    if not isinstance(ops, list) or not all(isinstance(o, dict) for o in ops):
        raise errors.bad_request("json: cannot unmarshal object into Go value of type "
                                 "jsonpatch.Patch")
    if len(ops) > MAX_JSON_PATCH_OPERATIONS:
        raise errors.request_entity_too_large(
            f"The allowed maximum operations in a JSON patch is "
            f"{MAX_JSON_PATCH_OPERATIONS}, got {len(ops)}")
    copied = [0]
    for op in ops:
        try:
            doc = _apply_op(doc, op, copied)
        except _PatchFailed as e:
            raise _rejected(str(e)) from None
    return doc


def _apply_op(doc: Any, op: dict, copied: list[int]) -> Any:
    kind = op.get("op")
    tokens = _tokens(op.get("path"))
    if kind in ("add", "replace", "test") and "value" not in op:
        raise _PatchFailed(f"missing value for {kind} operation")
    if kind == "add":
        return _add(doc, tokens, copy.deepcopy(op["value"]))
    if kind == "remove":
        return _remove(doc, tokens)
    if kind == "replace":
        return _replace(doc, tokens, copy.deepcopy(op["value"]))
    if kind in ("move", "copy"):
        src = _tokens(op.get("from"))
        found, value = _get(doc, src)
        if not found:
            raise _PatchFailed(f"{kind} operation does not apply: doc is missing from path")
        if kind == "move":
            if tokens[:len(src)] == src and len(tokens) > len(src):
                raise _PatchFailed("move operation: from is an ancestor of path")
            doc = _remove(doc, src)
        else:
            # counted before copying: doubling a value a few dozen times is gigabytes
            copied[0] += len(orjson.dumps(value))
            if copied[0] > MAX_JSON_PATCH_COPY_BYTES:
                raise _PatchFailed(
                    f"Unable to complete the copy, the accumulated size increase of copy is "
                    f"{copied[0]}, exceeding the limit {MAX_JSON_PATCH_COPY_BYTES}")
            value = copy.deepcopy(value)
        return _add(doc, tokens, value)
    if kind == "test":
        found, value = _get(doc, tokens)
        if not found and op["value"] is None:
            return doc
        if not found or not _equal(value, op["value"]):
            raise _PatchFailed("testing value failed")
        return doc
    raise _PatchFailed(f"Unexpected kind: {kind}")


# ------------------------------------------------------------------ merge patch (RFC 7386)


def apply_merge_patch(doc: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    target = doc if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = apply_merge_patch(target.get(key), value)
    return target


# ------------------------------------------------------------------ strategic merge patch

_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"
_SET_ORDER = "$setElementOrder/"


def apply_strategic_merge_patch(doc: dict, patch: dict, schema: SchemaArg = None) -> dict:
    """Strategic merge `patch` into `doc` (mutated and returned).

    `schema` is the kind's root Schema, or a lookup `(apiVersion, kind) -> Schema | None`, or
    None (looked up from the document). Without a schema this is a JSON merge patch."""
    if not isinstance(patch, dict):
        raise errors.bad_request("patch must be a JSON object")
    if callable(schema):
        schema = schema(str(doc.get("apiVersion", "")), str(doc.get("kind", "")))
    elif schema is None and isinstance(doc, dict):
        schema = schema_for(str(doc.get("apiVersion", "")), str(doc.get("kind", "")))
    if schema is None:
        return apply_merge_patch(doc, patch)
    return _merge_map(doc if isinstance(doc, dict) else {}, patch, schema)


def _merge_map(original: dict, patch: dict, schema: Schema | None) -> dict:
    patch = dict(patch)
    directive = patch.pop(_DIRECTIVE, None)
    if directive == "replace":
        return _strip(patch, schema)
    if directive == "delete":
        return {}
    if directive not in (None, "merge"):
        raise errors.bad_request(f"unknown patch type: {directive} in map")

    retain = patch.pop(_RETAIN_KEYS, None)
    if retain is not None:
        if not isinstance(retain, list):
            raise errors.bad_request("invalid patch format of retainKeys")
        for key in patch:
            if not key.startswith("$") and key not in retain:
                raise _rejected("doesn't match $retainKeys")
        for key in [k for k in original if k not in retain]:
            del original[key]

    orders: dict[str, list] = {}
    for key in [k for k in patch if k.startswith("$")]:
        value = patch.pop(key)
        if key.startswith(_DELETE_PRIMITIVE):
            field = key[len(_DELETE_PRIMITIVE):]
            if not isinstance(value, list):
                raise errors.bad_request("Invalid format for primitive list")
            current = original.get(field)
            if isinstance(current, list):
                original[field] = [v for v in current if v not in value]
        elif key.startswith(_SET_ORDER):
            if not isinstance(value, list):
                raise errors.bad_request("invalid patch format of setElementOrder list")
            orders[key[len(_SET_ORDER):]] = value
        # other $-keys are unknown directives; upstream ignores them as well

    for key, value in patch.items():
        sub = schema.field(key) if schema else None
        if value is None:
            original.pop(key, None)
            continue
        current = original.get(key)
        if isinstance(value, dict):
            original[key] = _merge_map(current if isinstance(current, dict) else {}, value, sub)
        elif isinstance(value, list):
            strategy, merge_key = schema.patch_meta(key) if schema else ("", "")
            if "merge" in strategy.split(",") and isinstance(current, list):
                original[key] = _merge_list(current, value, sub, merge_key)
            else:
                original[key] = _strip_list(value, sub, merge_key)
        else:
            original[key] = copy.deepcopy(value)

    for field, order in orders.items():
        strategy, merge_key = schema.patch_meta(field) if schema else ("", "")
        if isinstance(original.get(field), list):
            original[field] = _apply_order(original[field], order, merge_key)
    return original


def _strip(value: Any, schema: Schema | None) -> Any:
    """A patch value taken as is: directives removed, nulls dropped."""
    if isinstance(value, dict):
        return _merge_map({}, value, schema)
    if isinstance(value, list):
        return _strip_list(value, schema, "")
    return copy.deepcopy(value)


def _strip_list(items: list, schema: Schema | None, merge_key: str) -> list:
    item_schema = schema.items() if schema else None
    out = []
    for item in items:
        if isinstance(item, dict):
            if item.get(_DIRECTIVE) == "delete" or item == {_DIRECTIVE: "replace"}:
                continue  # directives with nothing to act on
            out.append(_merge_map({}, item, item_schema))
        elif isinstance(item, list):
            out.append(copy.deepcopy(item))
        else:
            out.append(item)  # a scalar: nothing to copy
    return out


def _key_of(item: Any, merge_key: str) -> Any:
    return item.get(merge_key, _MISSING) if isinstance(item, dict) else _MISSING


_MISSING = object()


def _merge_list(original: list, patch: list, schema: Schema | None, merge_key: str) -> list:
    if any(isinstance(p, dict) and p.get(_DIRECTIVE) == "replace" for p in patch):
        return _strip_list([p for p in patch if not (
            isinstance(p, dict) and p.get(_DIRECTIVE) == "replace")], schema, merge_key)
    if not patch:
        return original
    if not any(isinstance(p, dict) for p in patch) and not any(
            isinstance(o, dict) for o in original):
        out = list(original)  # primitive list with merge strategy: a set, original order first
        seen = {_freeze(o) for o in out}  # linear: 60k finalizers once blocked the loop 22 s
        for v in patch:
            if _freeze(v) not in seen:
                seen.add(_freeze(v))
                out.append(copy.deepcopy(v))
        return out
    if not merge_key:
        return _strip_list(patch, schema, merge_key)
    item_schema = schema.items() if schema else None
    out: list = list(original)
    where: dict[Any, list[int]] = {}  # merge key -> live positions in `out`, first one merged
    for i, o in enumerate(out):
        key = _key_of(o, merge_key)
        if key is not _MISSING:
            where.setdefault(_freeze(key), []).append(i)
    for item in patch:
        if not isinstance(item, dict):
            raise errors.bad_request("unable to merge a non-object item into a list of maps")
        key = _key_of(item, merge_key)
        if key is _MISSING:
            raise errors.StatusError(
                500, "", f"map: {_go_map(item)} does not contain declared merge key: {merge_key}")
        positions = where.get(_freeze(key))
        if item.get(_DIRECTIVE) == "delete":
            for i in where.pop(_freeze(key), ()):
                out[i] = _MISSING
            continue
        if not positions:
            where[_freeze(key)] = [len(out)]
            out.append(_merge_map({}, item, item_schema))
        else:
            out[positions[0]] = _merge_map(out[positions[0]], item, item_schema)
    return [o for o in out if o is not _MISSING]


def _go_map(item: dict) -> str:
    return "map[" + " ".join(f"{k}:{v}" for k, v in sorted(item.items())) + "]"


def _apply_order(items: list, order: list, merge_key: str) -> list:
    """$setElementOrder: listed items in the given order; others keep their relative place."""
    def ident(v: Any) -> Any:
        if merge_key and isinstance(v, dict):
            return _freeze(v.get(merge_key))
        return _freeze(v)

    wanted = [ident(o) for o in order]
    rank = {k: i for i, k in enumerate(wanted)}
    listed = sorted((it for it in items if ident(it) in rank), key=lambda it: rank[ident(it)])
    result: list = []
    li = 0
    for it in items:
        if ident(it) in rank:
            result.append(listed[li])
            li += 1
        else:
            result.append(it)
    return result


def _freeze(v: Any) -> Any:
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v
