"""Request body decoding with the bounds kube-apiserver applies: nesting depth, YAML alias
expansion, and only the values JSON can carry. Used by the API server's body and patch readers.

No I/O: bytes in, plain JSON-shaped Python values out, or an `errors.StatusError` (400)."""

from __future__ import annotations

from typing import Any

import orjson
import yaml

from k3py.api import errors

__all__ = ["MAX_DEPTH", "load_json", "load_yaml", "check_depth"]

# orjson decodes 1,024 levels but encodes only 255: anything deeper could be stored and then
# never served. Upstream allows 10,000; no Kubernetes object (CRD schemas included) comes near 200.
MAX_DEPTH = 200

_INT_MIN, _INT_MAX = -(2 ** 63), 2 ** 64 - 1  # what JSON numbers become on the Go side

# go-yaml's "excessive aliasing" rule (yaml.v2 decode.go): once more than 100 of over 1,000
# decoded nodes come from aliases, the share allowed from aliases scales from 99 % (up to
# 400,000 nodes) down to 10 % (4,000,000 nodes and more).
_ALIAS_LOW, _ALIAS_HIGH = 400_000, 4_000_000

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _bad(what: str, detail: str) -> errors.StatusError:
    return errors.bad_request(f"error decoding {what}: {detail}")


def check_depth(obj: Any, what: str = "JSON body", limit: int = MAX_DEPTH) -> None:
    """Refuse values nested deeper than `limit` (iteratively: no recursion to exhaust)."""
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            raise _bad(what, f"nesting deeper than {limit} levels")
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


def load_json(body: bytes, what: str = "JSON body") -> Any:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise _bad(what, str(e)) from None
    if body.count(b"{") + body.count(b"[") > MAX_DEPTH:  # else no walk: each level opens one
        check_depth(value, what)
    return value


def _allowed_alias_ratio(decoded: int) -> float:
    if decoded <= _ALIAS_LOW:
        return 0.99
    if decoded >= _ALIAS_HIGH:
        return 0.10
    return 0.99 - 0.89 * (decoded - _ALIAS_LOW) / (_ALIAS_HIGH - _ALIAS_LOW)


def _scan_events(body: bytes, what: str) -> None:
    """Depth and document count from the parser's event stream, before any tree is built
    (libyaml's composer recurses in C and would not stop at Python's recursion limit)."""
    depth = documents = 0
    try:
        for event in yaml.parse(body, Loader=_Loader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _bad(what, f"nesting deeper than {MAX_DEPTH} levels")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
            elif isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise _bad(what, "expected a single YAML document")
    except yaml.YAMLError as e:
        raise _bad(what, str(e)) from None


def _check_aliasing(root: yaml.Node, what: str) -> None:
    """Count the nodes the document expands to (each alias counted in full, as a decoder that
    copies would see it) without expanding anything: one visit per distinct node."""
    expanded: dict[int, int] = {}
    in_progress: set[int] = set()
    distinct = 0
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            in_progress.discard(key)
            if isinstance(node, yaml.MappingNode):
                kids = [n for pair in node.value for n in pair]
            else:
                kids = node.value
            expanded[key] = 1 + sum(expanded[id(k)] for k in kids)
            continue
        if key in expanded:
            continue
        if key in in_progress:
            raise _bad(what, "a YAML alias refers to a node that contains it")
        distinct += 1
        if isinstance(node, yaml.ScalarNode):
            expanded[key] = 1
            continue
        in_progress.add(key)
        stack.append((node, True))
        kids = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) \
            else node.value
        stack.extend((k, False) for k in kids if id(k) not in expanded)
    total = expanded[id(root)]
    aliased = total - distinct
    if aliased > 100 and total > 1000 and aliased / total > _allowed_alias_ratio(total):
        raise _bad(what, "yaml: document contains excessive aliasing")


class _JSONShapedLoader(_Loader):  # type: ignore[misc, valid-type]
    """The safe loader, narrowed to what converts to JSON the way upstream's yaml->json does:
    timestamps stay strings; sets, binary, ordered pairs and non-string keys are refused."""


def _timestamp_as_string(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    return loader.construct_scalar(node)


def _refuse(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    raise yaml.constructor.ConstructorError(
        None, None, f"the YAML type {node.tag} has no JSON equivalent", node.start_mark)


def _int_in_range(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    try:
        value = yaml.SafeLoader.construct_yaml_int(loader, node)
    except ValueError:  # Python's own limit on digits (4,300)
        value = _INT_MAX + 1
    if not _INT_MIN <= value <= _INT_MAX:
        raise yaml.constructor.ConstructorError(
            None, None, "integer out of the 64-bit range", node.start_mark)
    return value


def _float_finite(loader: yaml.SafeLoader, node: yaml.Node) -> float:
    value = yaml.SafeLoader.construct_yaml_float(loader, node)
    if value != value or value in (float("inf"), float("-inf")):
        raise yaml.constructor.ConstructorError(
            None, None, "NaN and infinity have no JSON equivalent", node.start_mark)
    return value


def _mapping_with_string_keys(loader: yaml.SafeLoader, node: yaml.MappingNode):
    data: dict[str, Any] = {}
    yield data
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=False)
        if not isinstance(key, str):
            raise yaml.constructor.ConstructorError(
                None, None, f"map keys must be strings, not {type(key).__name__}",
                key_node.start_mark)
        data[key] = loader.construct_object(value_node, deep=False)


_JSONShapedLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_string)
_JSONShapedLoader.add_constructor("tag:yaml.org,2002:int", _int_in_range)
_JSONShapedLoader.add_constructor("tag:yaml.org,2002:float", _float_finite)
_JSONShapedLoader.add_constructor("tag:yaml.org,2002:map", _mapping_with_string_keys)
for _tag in ("set", "binary", "omap", "pairs"):
    _JSONShapedLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse)


def load_yaml(body: bytes, what: str = "YAML body") -> Any:
    """One YAML document as JSON-shaped values; a bad or hostile document is a 400."""
    _scan_events(body, what)
    loader = _JSONShapedLoader(body)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check_aliasing(root, what)
        return loader.construct_document(root)
    except yaml.YAMLError as e:
        raise _bad(what, str(e)) from None
    finally:
        loader.dispose()
