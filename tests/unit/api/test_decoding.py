"""Body decoding bounds: depth, YAML aliasing, values without a JSON equivalent (no I/O)."""

from __future__ import annotations

import pytest

from k3py.api import decoding, errors

pytestmark = pytest.mark.unit


def _bomb(levels: int, fan: int = 9) -> bytes:
    lines = ["a0: &a0 [" + ",".join(['"x"'] * fan) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * fan) + "]")
    return "\n".join(lines).encode()


def _fails(body: bytes, words: str) -> None:
    with pytest.raises(errors.StatusError) as e:
        decoding.load_yaml(body)
    assert e.value.code == 400 and words in str(e.value)


def test_alias_bomb_refused_without_expanding_it():
    _fails(_bomb(9), "excessive aliasing")
    _fails(_bomb(30, 2), "excessive aliasing")


def test_moderate_alias_use_is_kept_and_shared():
    doc = decoding.load_yaml(b"base: &b {cpu: 1}\nx: *b\ny: *b\n")
    assert doc == {"base": {"cpu": 1}, "x": {"cpu": 1}, "y": {"cpu": 1}}
    assert decoding.load_yaml(_bomb(3)) is not None  # 9^3 nodes: below go-yaml's threshold


def test_depth_limit_same_for_json_and_yaml():
    ok = decoding.MAX_DEPTH
    assert decoding.load_json(b"[" * ok + b"]" * ok) is not None
    assert decoding.load_yaml(b"[" * ok + b"]" * ok) is not None
    with pytest.raises(errors.StatusError, match="nesting deeper"):
        decoding.load_json(b"[" * (ok + 1) + b"]" * (ok + 1))
    _fails(b"[" * (ok + 1) + b"]" * (ok + 1), "nesting deeper")
    _fails(b"{a: " * 5000 + b"1" + b"}" * 5000, "nesting deeper")


@pytest.mark.parametrize("body, words", [
    (b"a: !!set {x, y}", "no JSON equivalent"),
    (b"a: !!binary aGk=", "no JSON equivalent"),
    (b"a: !!omap [{x: 1}]", "no JSON equivalent"),
    (b"1: x", "map keys must be strings"),
    (b"~: x", "map keys must be strings"),
    (b"[1, 2]: x", "map keys must be strings"),
    (b"a: " + b"7" * 5000, "64-bit range"),
    (b"a: 18446744073709551616", "64-bit range"),
    (b"a: .nan", "no JSON equivalent"),
    (b"a: -.inf", "no JSON equivalent"),
    (b"a: 1\n---\nb: 2", "single YAML document"),
    (b"&a [*a]", "contains it"),
    (b"a: [1, 2", "while parsing"),
])
def test_refused(body, words):
    _fails(body, words)


def test_json_shaped_values():
    assert decoding.load_yaml(b"t: 2020-01-01T00:00:00Z\nd: 2020-01-01") == {
        "t": "2020-01-01T00:00:00Z", "d": "2020-01-01"}
    assert decoding.load_yaml(b"a: 18446744073709551615\nb: -9223372036854775808") == {
        "a": 2 ** 64 - 1, "b": -(2 ** 63)}
    assert decoding.load_yaml(b"") is None
    assert decoding.load_yaml(b"{<<: {k: v}, z: 1}") == {"k": "v", "z": 1}


def test_bad_json_is_400():
    with pytest.raises(errors.StatusError) as e:
        decoding.load_json(b"{", "patch")
    assert e.value.code == 400 and "error decoding patch" in str(e.value)
