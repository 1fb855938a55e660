"""Patch application: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic merge
patch with upstream's merge keys and directives ($patch, $retainKeys,
$deleteFromPrimitiveList, $setElementOrder). Pure; errors are Status errors."""

from __future__ import annotations

import copy
from typing import Any

from k3py.api import errors

__all__ = ["apply_json_patch", "apply_merge_patch", "apply_strategic_merge_patch",
           "schema_lookup", "MERGE_KEYS"]

# list field -> merge key (None: a set-like primitive list merged by value)
MERGE_KEYS: dict[str, str | None] = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "env": "name", "volumes": "name", "volumeMounts": "mountPath",
    "volumeDevices": "devicePath", "imagePullSecrets": "name", "hostAliases": "ip",
    "conditions": "type", "ownerReferences": "uid", "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name", "schedulingGates": "name", "finalizers": None,
    "secrets": "name", "ephemeralContainerStatuses": "name", "containerStatuses": "name",
    "initContainerStatuses": "name", "podIPs": "ip", "addresses": "type",
}


def schema_lookup(api_version: str, kind: str) -> Any:
    """Patch metadata source for a kind; the field-name table serves every built-in."""
    return MERGE_KEYS


def _ptr_tokens(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise errors.bad_request(f'json patch path "{path}" must start with "/"')
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _resolve(doc: Any, tokens: list[str], op: str) -> tuple[Any, str]:
    cur = doc
    for t in tokens[:-1]:
        if isinstance(cur, dict):
            if t not in cur:
                raise _json_patch_error(op, f"missing path: {'/'.join(tokens)}")
            cur = cur[t]
        elif isinstance(cur, list):
            try:
                cur = cur[int(t)]
            except (ValueError, IndexError):
                raise _json_patch_error(op, f"unable to access invalid index: {t}") from None
        else:
            raise _json_patch_error(op, "path traverses a non-container value")
    return cur, tokens[-1]


def _json_patch_error(op: str, msg: str) -> errors.StatusError:
    return errors.StatusError(422, "Invalid", f"the server rejected our request due to an "
                              f"error in our request: {op} operation does not apply: {msg}")


def _get(doc: Any, path: str, op: str) -> Any:
    cur = doc
    for t in _ptr_tokens(path):
        if isinstance(cur, dict) and t in cur:
            cur = cur[t]
        elif isinstance(cur, list):
            try:
                cur = cur[int(t)]
            except (ValueError, IndexError):
                raise _json_patch_error(op, f"missing path: {path}") from None
        else:
            raise _json_patch_error(op, f"missing path: {path}")
    return cur


def _add(doc: Any, path: str, value: Any, op: str = "add") -> Any:
    tokens = _ptr_tokens(path)
    if not tokens:
        return value
    parent, last = _resolve(doc, tokens, op)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            try:
                i = int(last)
            except ValueError:
                raise _json_patch_error(op, f"invalid index {last}") from None
            if i < 0 or i > len(parent):
                raise _json_patch_error(op, f"index out of range: {i}")
            parent.insert(i, value)
    else:
        raise _json_patch_error(op, f"missing path: {path}")
    return doc


def _remove(doc: Any, path: str, op: str = "remove") -> tuple[Any, Any]:
    tokens = _ptr_tokens(path)
    parent, last = _resolve(doc, tokens, op)
    if isinstance(parent, dict):
        if last not in parent:
            raise _json_patch_error(op, f"missing path: {path}")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        try:
            return doc, parent.pop(int(last))
        except (ValueError, IndexError):
            raise _json_patch_error(op, f"missing path: {path}") from None
    raise _json_patch_error(op, f"missing path: {path}")


def apply_json_patch(doc: Any, ops: list) -> Any:
    for raw in ops:
        if not isinstance(raw, dict) or "op" not in raw:
            raise errors.bad_request("json patch operation must be an object with an \"op\"")
        op, path = raw["op"], raw.get("path", "")
        if op == "add":
            doc = _add(doc, path, copy.deepcopy(raw.get("value")))
        elif op == "remove":
            doc, _ = _remove(doc, path)
        elif op == "replace":
            doc, _ = _remove(doc, path, "replace")
            doc = _add(doc, path, copy.deepcopy(raw.get("value")), "replace")
        elif op == "move":
            doc, value = _remove(doc, raw.get("from", ""), "move")
            doc = _add(doc, path, value, "move")
        elif op == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, raw.get("from", ""), "copy")), "copy")
        elif op == "test":
            if _get(doc, path, "test") != raw.get("value"):
                raise _json_patch_error("test", f"testing value {path} failed")
        else:
            raise errors.bad_request(f'Unexpected kind: {op}')
    return doc


def apply_merge_patch(doc: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(doc) if isinstance(doc, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = apply_merge_patch(out.get(k), v)
    return out


def _merge_key_for(field: str, items: list) -> str | None | bool:
    """Merge key for list `field`; False = replace the list (atomic)."""
    if field == "ports":
        sample = next((i for i in items if isinstance(i, dict)), None)
        if sample is None:
            return False
        return "containerPort" if "containerPort" in sample else "port"
    if field in MERGE_KEYS:
        return MERGE_KEYS[field]
    return False


def _merge_list(field: str, cur: list, patch: list, delete_prims: list | None,
                order: list | None) -> list:
    key = _merge_key_for(field, list(patch) + list(cur))
    if key is False:
        for item in patch:
            if isinstance(item, dict) and item.get("$patch") == "replace":
                return [i for i in patch if not (isinstance(i, dict) and "$patch" in i)]
        return [_strip(i) for i in patch]
    if key is None:  # primitive set
        out = list(cur)
        for item in patch:
            if item not in out:
                out.append(item)
        if delete_prims:
            out = [i for i in out if i not in delete_prims]
        return out
    out = [copy.deepcopy(i) for i in cur]
    for item in patch:
        if not isinstance(item, dict):
            continue
        directive = item.get("$patch")
        if directive == "replace":
            return [_strip(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
        kv = item.get(key)
        idx = next((n for n, o in enumerate(out) if isinstance(o, dict) and o.get(key) == kv),
                   None)
        if directive == "delete":
            if idx is not None:
                out.pop(idx)
            continue
        if idx is None:
            out.append(_strip(item))
        else:
            out[idx] = _smp(out[idx], item)
    if order:
        rank = {(o.get(key) if isinstance(o, dict) else o): n for n, o in enumerate(order)}
        out.sort(key=lambda o: rank.get(o.get(key) if isinstance(o, dict) else o, len(rank)))
    return out


def _strip(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _strip(x) for k, x in v.items() if not k.startswith("$")}
    if isinstance(v, list):
        return [_strip(x) for x in v]
    return v


def _smp(cur: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return _strip(patch)
    if patch.get("$patch") == "delete":
        return None
    out = dict(cur) if isinstance(cur, dict) else {}
    retain = patch.get("$retainKeys")
    for k, v in patch.items():
        if k.startswith("$"):
            continue
        if v is None:
            out.pop(k, None)
        elif isinstance(v, list):
            old = out.get(k) if isinstance(out.get(k), list) else []
            out[k] = _merge_list(k, old, v, patch.get(f"$deleteFromPrimitiveList/{k}"),
                                 patch.get(f"$setElementOrder/{k}"))
        elif isinstance(v, dict):
            merged = _smp(out.get(k), v)
            if merged is None:
                out.pop(k, None)
            else:
                out[k] = merged
        else:
            out[k] = v
    for k, v in patch.items():
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            if field not in patch and isinstance(out.get(field), list):
                out[field] = [i for i in out[field] if i not in v]
        elif k.startswith("$setElementOrder/"):
            field = k.split("/", 1)[1]
            if field not in patch and isinstance(out.get(field), list):
                out[field] = _merge_list(field, out[field], [], None, v)
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out


def apply_strategic_merge_patch(doc: Any, patch: dict, schema: Any = None) -> Any:
    if not isinstance(patch, dict):
        raise errors.bad_request("strategic merge patch must be a JSON object")
    return _smp(doc, patch)
