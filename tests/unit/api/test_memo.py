"""ValueMemo, the bounded memo of the apply and schema walks: at most `entries` results, the
one stored first dropped first whatever was read since; a value too large, holding `skip` or
not encodable as JSON is not remembered."""

from __future__ import annotations

import pytest

from k3py.api.memo import ValueMemo

pytestmark = pytest.mark.unit


def test_the_first_stored_goes_first_once_full() -> None:
    memo: ValueMemo[int] = ValueMemo(entries=2)
    keys = [memo.key("schema", "spec", {"n": n}) for n in range(3)]
    memo.put(keys[0], 0)
    memo.put(keys[1], 1)
    assert memo.get(keys[0]) == 0  # read: not kept any longer for it
    memo.put(keys[2], 2)
    assert [memo.get(k) for k in keys] == [None, 1, 2]


def test_where_and_path_are_part_of_the_key() -> None:
    memo: ValueMemo[str] = ValueMemo()
    memo.put(memo.key("pod", "spec", {"a": 1}), "pod spec")
    assert memo.get(memo.key("pod", "spec", {"a": 1})) == "pod spec"
    assert memo.get(memo.key("job", "spec", {"a": 1})) is None
    assert memo.get(memo.key("pod", "status", {"a": 1})) is None


def test_values_not_remembered_have_no_key() -> None:
    memo: ValueMemo[bool] = ValueMemo(max_bytes=16)
    assert memo.key("s", "spec", {"a": "x" * 16}) is None  # over max_bytes encoded
    assert memo.key("s", "spec", {"a": None}, skip=b"null") is None
    assert memo.key("s", "spec", {"a": 1 << 64}) is None  # no JSON for it in orjson
    memo.put(None, True)  # nothing stored, nothing found
    assert memo.get(None) is None
