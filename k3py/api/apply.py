"""Server-side apply and managed fields: field sets in upstream's FieldsV1 encoding (`f:`, `k:`,
`v:`), ownership per manager, conflicts (409 with FieldManagerConflict causes) and removal.

A simplified structured-merge-diff: list and map semantics come from the schema's
x-kubernetes-list-type / map-type / patch metadata; kinds without a schema are merged as maps
with atomic lists."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from k3py.api import errors
from k3py.api.memo import ValueMemo
from k3py.api.objects import now_rfc3339
from k3py.api.schema import Schema, find_unknown_fields, schema_for, schema_from_structural

__all__ = ["server_side_apply", "update_managed_fields", "field_set", "encode_fields",
           "decode_fields", "path_string"]

Path = tuple[str, ...]
SchemaLookup = Callable[[str, str], Schema | None] | Schema | None

# Fields the field manager never tracks (upstream strips them before computing sets).
_IGNORED_META = ("name", "namespace", "uid", "resourceVersion", "generation",
                 "creationTimestamp", "selfLink", "managedFields", "deletionTimestamp",
                 "deletionGracePeriodSeconds")
_IGNORED_TOP = ("apiVersion", "kind", "status")

# Defaults of list-map key fields: upstream keys `ports` items by containerPort+protocol even
# when the configuration leaves protocol out, because the schema defaults it.
_KEY_DEFAULTS = {"protocol": "TCP"}


def _item_keys(item: dict, keys: list[str]) -> dict:
    return {k: item[k] if k in item else _KEY_DEFAULTS[k] for k in keys
            if k in item or k in _KEY_DEFAULTS}


def _key_elem(keys: dict) -> str:
    try:
        return "k:" + orjson.dumps(keys, option=orjson.OPT_SORT_KEYS).decode()
    except (orjson.JSONEncodeError, TypeError):  # e.g. an int over 64 bits (from YAML)
        return "k:" + json.dumps(dict(sorted(keys.items())), separators=(",", ":"),
                                 ensure_ascii=False)


def _value_elem(value: Any) -> str:
    if type(value) is str:  # most set items (finalizers): orjson writes what json would
        return "v:" + orjson.dumps(value).decode()
    return "v:" + json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _list_kind(schema: Schema | None, parent: Schema | None, name: str) -> tuple[str, list[str]]:
    """("map", keys) | ("set", []) | ("atomic", []) for the list field `name`."""
    if schema is not None:
        list_type, keys = schema.list_meta()
        if list_type == "map" and keys:
            return "map", keys
        if list_type in ("set", "atomic"):
            return list_type, []
    if parent is not None:
        strategy, merge_key = parent.patch_meta(name)
        if "merge" in strategy.split(","):
            return ("map", [merge_key]) if merge_key else ("set", [])
    return "atomic", []


def _strip_ignored(obj: dict) -> dict:
    out = {k: v for k, v in obj.items() if k not in _IGNORED_TOP}
    meta = out.get("metadata")
    if isinstance(meta, dict):
        meta = {k: v for k, v in meta.items() if k not in _IGNORED_META}
        if meta:
            out["metadata"] = meta
        else:
            out.pop("metadata")
    return out


def _differing_parts(old: dict, new: dict) -> tuple[dict, dict]:
    """`old` and `new` cut down to their top-level fields (and metadata fields) that differ:
    a field equal in both owns the same paths with the same values in both."""
    o, n = _strip_ignored(old), _strip_ignored(new)
    keys = [k for k in {**o, **n} if o.get(k) != n.get(k)]
    o_part = {k: o[k] for k in keys if k in o}
    n_part = {k: n[k] for k in keys if k in n}
    om, nm = o_part.get("metadata"), n_part.get("metadata")
    if isinstance(om, dict) and isinstance(nm, dict):
        mkeys = [k for k in {**om, **nm} if om.get(k) != nm.get(k)]
        for part, md in ((o_part, om), (n_part, nm)):
            part["metadata"] = {k: md[k] for k in mkeys if k in md}
            if not part["metadata"]:  # (never empty in a whole object: see _strip_ignored)
                del part["metadata"]
    return o_part, n_part


def field_set(obj: dict, schema: Schema | None) -> set[Path]:
    """Every owned path of `obj` (leaves, granular maps, list items), as upstream's ToFieldSet."""
    out: set[Path] = set()
    _walk(_strip_ignored(obj), schema, (), out)
    return out


def _walk(value: Any, schema: Schema | None, prefix: Path, out: set[Path],
          parent: Schema | None = None, name: str = "") -> None:
    if isinstance(value, dict):
        if schema is not None and schema.is_atomic() and prefix:
            out.add(prefix)
            return
        if not value or (schema is not None and schema.is_granular_map() and prefix):
            if prefix:
                out.add(prefix)
        for key, sub in value.items():
            if type(sub) is dict or type(sub) is list:
                _walk(sub, schema.field(key) if schema else None, prefix + ("f:" + key,), out,
                      schema, key)
            elif sub is not None:  # a scalar: an owned leaf
                out.add(prefix + ("f:" + key,))
    elif isinstance(value, list):
        kind, keys = _list_kind(schema, parent, name)
        items = schema.items() if schema else None
        if kind == "map" and all(isinstance(i, dict) for i in value):
            for item in value:
                elem = prefix + (_key_elem(_item_keys(item, keys)),)
                out.add(elem)
                _walk(item, items, elem, out)
        elif kind == "set":
            for item in value:
                out.add(prefix + (_value_elem(item),))
        else:
            out.add(prefix)
    else:
        out.add(prefix)


# ------------------------------------------------------------------ FieldsV1 encoding


class _Duplicate(Exception):
    """Two items of a list share a key: fields_v1 leaves such an object to the set walk."""


def fields_v1(obj: dict, schema: Schema | None) -> dict:
    """encode_fields(field_set(obj, schema)) built in one walk, without the set of paths (an
    object's create: every field is the creator's)."""
    try:
        return _node(*_tree(_strip_ignored(obj), schema, None, "", True)) or {}
    except _Duplicate:
        return encode_fields(field_set(obj, schema))


# A top-level field's FieldsV1 node (encoded) by (schema, field, its JSON): the objects a
# controller makes from one template (a Deployment's pods, a Job's) carry the same spec, and
# its walk is most of a create's field tracking.
_TOP_MEMO: ValueMemo[bytes] = ValueMemo()


def _top_field_node(sub: dict | list, schema: Schema | None, key: str) -> dict | None:
    """The FieldsV1 node of the top-level field `key` (not metadata, whose name and labels
    differ from object to object), from the memo when the same value was walked before."""
    memo_key = _TOP_MEMO.key(schema, key, sub)
    encoded = _TOP_MEMO.get(memo_key)
    if encoded is None:
        node = _node(*_tree(sub, schema.field(key) if schema else None, schema, key))
        if memo_key is not None:
            _TOP_MEMO.put(memo_key, orjson.dumps(node))
        return node
    return orjson.loads(encoded)  # a copy of its own: the caller's object may be changed


def _node(owned: bool, children: dict) -> dict | None:
    """A FieldsV1 node as encode_fields writes it; None when no path reaches it."""
    if not children:
        return {} if owned else None
    out: dict = {".": {}} if owned else {}
    for k in sorted(children):
        out[k] = children[k]
    return out


def _tree(value: Any, schema: Schema | None, parent: Schema | None, name: str,
          top: bool = False) -> tuple[bool, dict]:
    """(whether the path of `value` is itself owned, its children's nodes): _walk's rules."""
    if isinstance(value, dict):
        if schema is not None and schema.atomic and not top:
            return True, {}
        owned = not top and (not value or (schema is not None and schema.granular_map))
        children: dict = {}
        for key, sub in value.items():
            if type(sub) is dict or type(sub) is list:
                n = _top_field_node(sub, schema, key) if top and key != "metadata" else \
                    _node(*_tree(sub, schema.field(key) if schema else None, schema, key))
                if n is not None:
                    children["f:" + key] = n
            elif sub is not None:  # a scalar: an owned leaf
                children["f:" + key] = {}
        return owned, children
    if isinstance(value, list):
        kind, keys = _list_kind(schema, parent, name)
        if kind == "map" and all(isinstance(i, dict) for i in value):
            items = schema.items() if schema else None
            children = {}
            for item in value:
                elem = _key_elem(_item_keys(item, keys))
                if elem in children:
                    raise _Duplicate
                children[elem] = _node(True, _tree(item, items, None, "")[1])
            return False, children
        if kind == "set":
            return False, {_value_elem(item): {} for item in value}
    return True, {}


def encode_fields(paths: Iterable[Path]) -> dict:
    root: dict = {}
    for path in paths:
        node = root
        for elem in path:
            node = node.setdefault(elem, {})
        node["."] = {}
    return _finish(root)


def _finish(node: dict) -> dict:
    children = {k: _finish(v) for k, v in node.items() if k != "."}
    if not children:
        return {}
    out: dict = {".": {}} if "." in node else {}
    for k in sorted(children):
        out[k] = children[k]
    return out


def decode_fields(fields: Any, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    if not isinstance(fields, dict):
        return out
    for key, sub in fields.items():
        if key == ".":
            if prefix:
                out.add(prefix)
            continue
        child = prefix + (key,)
        if not sub:
            out.add(child)
        else:
            out |= decode_fields(sub, child)
    return out


def path_string(path: Path) -> str:
    """Upstream's printed form: `.spec.containers[name="nginx"].image`."""
    out = ""
    for elem in path:
        kind, _, rest = elem.partition(":")
        if kind == "f":
            out += "." + rest
        elif kind == "k":
            try:
                keys = json.loads(rest)
                out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in keys.items()) + "]"
            except ValueError:
                out += f"[{rest}]"
        elif kind == "v":
            out += f"[={rest}]"
        else:
            out += f"[{rest}]"
    return out


# ------------------------------------------------------------------ values at paths


_ABSENT = object()


def _find_item(items: list, elem: str, index: dict | None = None) -> int | None:
    """The position of the list item a path element names (k: keys, v: value, i: index).
    With `index` (a dict kept for one walk over lists that do not change meanwhile) each list
    is indexed once, so looking up n paths in a list of n items is linear, not n * n."""
    kind, _, rest = elem.partition(":")
    try:
        want = json.loads(rest)
    except ValueError:
        return None
    if kind == "i":
        return want if isinstance(want, int) and 0 <= want < len(items) else None
    if kind == "k" and not isinstance(want, dict):
        return None
    if index is None:
        return _scan(items, kind, want)
    names = tuple(sorted(want)) if kind == "k" else ()
    by_item = index.get((id(items), names))
    if by_item is None:
        by_item = index[(id(items), names)] = _index_items(items, names, kind == "k")
    try:
        return by_item.get(_item_id(want, names) if kind == "k" else _hashable(want))
    except TypeError:  # nothing hashable names it: look as without an index
        return _scan(items, kind, want)


def _scan(items: list, kind: str, want: Any) -> int | None:
    for i, item in enumerate(items):
        if kind == "k" and isinstance(item, dict) and all(
                item.get(k, _KEY_DEFAULTS.get(k, _ABSENT)) == v for k, v in want.items()):
            return i
        if kind == "v" and item == want:
            return i
    return None


def _index_items(items: list, names: tuple[str, ...], by_keys: bool) -> dict:
    """First position of each item by its keys `names` (map lists) or its value (sets)."""
    out: dict = {}
    for i, item in enumerate(items):
        if by_keys and not isinstance(item, dict):
            continue
        with contextlib.suppress(TypeError):
            out.setdefault(_item_id(item, names) if by_keys else _hashable(item), i)
    return out


def _item_id(item: dict, names: tuple[str, ...]) -> tuple:
    return tuple(_hashable(item.get(k, _KEY_DEFAULTS.get(k, _ABSENT))) for k in names)


def _hashable(v: Any) -> Any:
    """A hashable stand-in equal exactly when the JSON values are (==)."""
    if isinstance(v, dict):
        return ("{}", frozenset((k, _hashable(x)) for k, x in v.items()))
    if isinstance(v, list):
        return ("[]", tuple(_hashable(x) for x in v))
    return v


def _value_at(obj: Any, path: Path, index: dict | None = None) -> Any:
    node = obj
    for elem in path:
        if elem.startswith("f:"):
            if not isinstance(node, dict) or elem[2:] not in node:
                return _ABSENT
            node = node[elem[2:]]
        elif isinstance(node, list):
            i = _find_item(node, elem, index)
            if i is None:
                return _ABSENT
            node = node[i]
        else:
            return _ABSENT
    return node


def _remove_path(obj: Any, path: Path) -> None:
    if not path:
        return
    parent = _value_at(obj, path[:-1])
    last = path[-1]
    if last.startswith("f:") and isinstance(parent, dict):
        parent.pop(last[2:], None)
    elif isinstance(parent, list):
        i = _find_item(parent, last)
        if i is not None:
            del parent[i]


def _leaves(paths: set[Path]) -> set[Path]:
    parents = {p[:i] for p in paths for i in range(1, len(p))}
    return {p for p in paths if p not in parents}


def _changed(old: Any, new: Any, paths: set[Path]) -> set[Path]:
    """Paths of `paths` whose value differs between old and new (non-leaf paths only when they
    appear: owning a map or list item is not changed by edits to its members)."""
    leaves = _leaves(paths)
    out: set[Path] = set()
    index: dict = {}  # neither object changes during the walk
    for p in paths:
        before = _value_at(old, p, index)
        if before is _ABSENT:
            out.add(p)
        elif p in leaves and before != _value_at(new, p, index):
            out.add(p)
    return out


# ------------------------------------------------------------------ managed fields entries


class _Entry:
    """One managedFields entry; `raw` is the FieldsV1 it was read from, written back as it was
    while its fields are unchanged (whoever changes `fields` sets `raw` to None)."""

    __slots__ = ("manager", "operation", "api_version", "subresource", "time", "fields", "raw")

    def __init__(self, manager: str, operation: str, api_version: str, subresource: str,
                 time: str | None, fields: set[Path], raw: dict | None = None) -> None:
        self.manager, self.operation, self.api_version = manager, operation, api_version
        self.subresource, self.time, self.fields = subresource, time, fields
        self.raw = raw

    @property
    def ident(self) -> tuple[str, str, str, str]:
        # upstream keys Update entries by apiVersion as well; Apply entries by manager only
        version = self.api_version if self.operation == "Update" else ""
        return self.manager, self.operation, version, self.subresource

    def to_dict(self) -> dict:
        out: dict = {"manager": self.manager, "operation": self.operation,
                     "apiVersion": self.api_version}
        if self.time:
            out["time"] = self.time
        out["fieldsType"] = "FieldsV1"
        out["fieldsV1"] = self.raw if self.raw is not None else encode_fields(self.fields)
        if self.subresource:
            out["subresource"] = self.subresource
        return out

    def printed(self) -> str:
        s = json.dumps(self.manager)
        if self.subresource:
            s += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == "Update":
            s += f" using {self.api_version}"
            if self.time:
                s += f" at {self.time}"
        return s


def _entries(obj: dict | None) -> list[_Entry]:
    out: list[_Entry] = []
    for e in ((obj or {}).get("metadata") or {}).get("managedFields") or ():
        if not isinstance(e, dict) or not e.get("manager") and not e.get("fieldsV1"):
            continue
        out.append(_Entry(str(e.get("manager", "")), str(e.get("operation", "Update")),
                          str(e.get("apiVersion", "")), str(e.get("subresource", "")),
                          e.get("time"), decode_fields(e.get("fieldsV1")),
                          e["fieldsV1"] if isinstance(e.get("fieldsV1"), dict) else None))
    return out


def _store(obj: dict, entries: list[_Entry]) -> None:
    meta = obj.setdefault("metadata", {})
    kept = [e.to_dict() for e in entries if e.fields]
    if kept:
        meta["managedFields"] = kept
    else:
        meta.pop("managedFields", None)


def _schema(lookup: SchemaLookup, obj: dict) -> Schema:
    found = lookup if isinstance(lookup, Schema) or lookup is None else lookup(
        str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
    # kinds without a definition (custom resources): metadata typed, the rest deduced
    return found if found is not None else schema_from_structural(None)


# ------------------------------------------------------------------ merging applied config


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _merge(live: Any, applied: Any, schema: Schema | None, parent: Schema | None = None,
           name: str = "") -> Any:
    if isinstance(live, dict) and isinstance(applied, dict) and not (
            schema is not None and schema.is_atomic()):
        for key, value in applied.items():
            sub = schema.field(key) if schema else None
            live[key] = _merge(live.get(key, _ABSENT), value, sub, schema, key)
        return live
    if isinstance(live, list) and isinstance(applied, list):
        kind, keys = _list_kind(schema, parent, name)
        items = schema.items() if schema else None
        if kind == "map" and all(isinstance(i, dict) for i in live + applied):
            out = list(live)
            for item in applied:
                elem = _key_elem(_item_keys(item, keys))
                i = _find_item(out, elem)
                if i is None:
                    out.append(copy.deepcopy(item))
                else:
                    out[i] = _merge(out[i], item, items)
            return out
        if kind == "set":
            out = list(live)
            out.extend(copy.deepcopy(v) for v in applied if v not in out)
            return out
    return copy.deepcopy(applied)


def _conflict_error(conflicts: list[tuple[_Entry, Path]]) -> errors.StatusError:
    causes = [{"type": "FieldManagerConflict", "message": f"conflict with {e.printed()}",
               "field": path_string(p)} for e, p in conflicts]
    if len(conflicts) == 1:
        e, p = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {e.printed()}: {path_string(p)}"
    else:
        by_manager: dict[str, list[Path]] = {}
        for e, p in conflicts:
            by_manager.setdefault(e.printed(), []).append(p)
        lines = []
        for who in sorted(by_manager):
            lines.append(f"conflicts with {who}:")
            lines.extend(f"- {path_string(p)}" for p in by_manager[who])
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return errors.StatusError(409, "Conflict", message, {"causes": causes})


def server_side_apply(live: dict | None, applied: dict, manager: str, force: bool,
                      schema_lookup: SchemaLookup) -> dict:
    """The object after `manager` applies `applied` to `live` (None: create).

    Raises 409 Conflict when the apply would change fields other managers own and `force` is
    false; with `force` those managers lose the fields."""
    if not isinstance(applied, dict):
        raise errors.bad_request("apply patch must be an object")
    applied = _drop_nulls(applied)
    api_version = str(applied.get("apiVersion") or (live or {}).get("apiVersion", ""))
    schema = _schema(schema_lookup, {"apiVersion": api_version,
                                     "kind": applied.get("kind") or (live or {}).get("kind")})
    kind = str(applied.get("kind") or (live or {}).get("kind", ""))
    unknown = find_unknown_fields(api_version, kind, applied)
    if unknown:  # apply needs a typed object: upstream rejects undeclared fields outright
        group, _, version = api_version.rpartition("/")
        raise errors.bad_request(f"failed to create typed patch object ({group}/{version}, "
                                 f"Kind={kind}): .{unknown[0]}: field not declared in schema")
    entries = _entries(live)
    applied_set = field_set(applied, schema)

    mine = next((e for e in entries if e.manager == manager and e.operation == "Apply"
                 and not e.subresource), None)
    others = [e for e in entries if e is not mine]

    merged: dict = copy.deepcopy(live) if live else {}
    body = {k: v for k, v in applied.items() if k != "metadata"}
    meta = {k: v for k, v in (applied.get("metadata") or {}).items() if k != "managedFields"}
    if live:
        meta = {k: v for k, v in meta.items() if k not in ("resourceVersion", "uid",
                                                            "creationTimestamp", "generation")}
    _merge(merged, {**body, "metadata": meta}, schema)

    if live:
        changed = _changed(live, merged, applied_set)
        conflicts = [(e, p) for e in others for p in sorted(changed & e.fields)]
        if conflicts and not force:
            raise _conflict_error(conflicts)
        for e, p in conflicts:
            e.fields.discard(p)
            e.raw = None

    # fields this manager applied before and no longer applies go, unless someone else owns them
    if mine is not None:
        owned_by_others = set().union(*(e.fields for e in others)) if others else set()
        other_prefixes = {p[:i] for p in owned_by_others for i in range(1, len(p) + 1)}
        applied_prefixes = {a[:i] for a in applied_set for i in range(1, len(a) + 1)}
        removed: list[Path] = []
        # parents first: a removed list item takes its fields with it (they key the lookup)
        for p in sorted(mine.fields - applied_set, key=len):
            if p in other_prefixes or p in applied_prefixes:
                continue
            if any(p[:len(r)] == r for r in removed):
                continue
            _remove_path(merged, p)
            removed.append(p)

    new_entry = _Entry(manager, "Apply", api_version, "", now_rfc3339(), applied_set)
    if mine is not None and mine.fields == applied_set and mine.api_version == api_version:
        new_entry.time = mine.time
    ordered = [new_entry if e is mine else e for e in entries]
    if mine is None:
        ordered.append(new_entry)
    merged.setdefault("metadata", {})
    # a resourceVersion in the configuration is a precondition; otherwise none is implied
    applied_rv = (applied.get("metadata") or {}).get("resourceVersion")
    if live and applied_rv:
        merged["metadata"]["resourceVersion"] = applied_rv
    elif live:
        merged["metadata"].pop("resourceVersion", None)
    _store(merged, ordered)
    return merged


def update_managed_fields(old: dict | None, new: dict, manager: str,
                          operation: str = "Update", subresource: str = "") -> dict:
    """Record in `new.metadata.managedFields` (in place; also returned) that `manager` changed
    the fields that differ from `old`, taking them over from other managers."""
    meta = new.setdefault("metadata", {})
    sent = meta.get("managedFields")
    old_entries_raw = ((old or {}).get("metadata") or {}).get("managedFields")
    if isinstance(sent, list) and len(sent) == 1 and sent[0] == {}:
        meta.pop("managedFields", None)  # [{}] resets managed fields (upstream)
        return new
    if isinstance(sent, list) and sent and sent != old_entries_raw:
        entries = _entries(new)  # the client set them explicitly
    else:
        entries = _entries(old)
    schema = _schema(schema_for, new)
    if old is None and not entries:  # a create: one entry with every field
        created = _Entry(manager, operation, str(new.get("apiVersion", "")), subresource,
                         now_rfc3339(), set(), fields_v1(new, schema))
        if created.raw:
            meta["managedFields"] = [created.to_dict()]
        else:
            meta.pop("managedFields", None)
        return new
    if old is None:
        new_set = field_set(new, schema)
        changed, removed = new_set, set()
    else:
        # only the parts that differ can hold changed or removed fields: walk just those
        old_part, new_part = _differing_parts(old, new)
        new_set = field_set(new_part, schema)
        changed = _changed(old, new, new_set)
        removed = field_set(old_part, schema) - new_set
    if not changed and not removed:
        _store(new, entries)
        return new
    api_version = str(new.get("apiVersion", ""))
    mine = next((e for e in entries if e.manager == manager and e.operation == operation
                 and e.api_version == api_version and e.subresource == subresource), None)
    for e in entries:
        before = len(e.fields)
        if e is not mine:
            e.fields -= changed
        e.fields -= removed
        if len(e.fields) != before:
            e.raw = None
    if changed:
        if mine is None:
            mine = _Entry(manager, operation, api_version, subresource, None, set())
            entries.append(mine)
        before = len(mine.fields)
        mine.fields |= changed
        if len(mine.fields) != before:
            mine.raw = None
        mine.time = now_rfc3339()
    _store(new, entries)
    return new

