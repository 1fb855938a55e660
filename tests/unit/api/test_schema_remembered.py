"""The decode-type and unknown-field walks remember a top-level field found clean (objects
from one template share it): the same answers the second time, and what was not clean (an
unknown field, a wrong type, a null the walk removes) is found again every time."""

from __future__ import annotations

import copy

import pytest

from k3py.api.schema import find_unknown_fields, wrong_type

pytestmark = pytest.mark.unit

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
       "spec": {"containers": [{"name": "remembered-c", "image": "busybox:1.36",
                                "ports": [{"containerPort": 80}]}]}}


def test_a_clean_spec_stays_clean_and_a_dirty_one_is_found_every_time() -> None:
    for _ in range(2):
        assert wrong_type("v1", "Pod", copy.deepcopy(POD)) is None
        assert find_unknown_fields("v1", "Pod", copy.deepcopy(POD)) == []
    unknown = copy.deepcopy(POD)
    unknown["spec"]["containers"][0]["bogus"] = 1
    wrong = copy.deepcopy(POD)
    wrong["spec"]["containers"][0]["ports"][0]["containerPort"] = "80"
    for _ in range(2):
        assert find_unknown_fields("v1", "Pod", copy.deepcopy(unknown)) == \
            ["spec.containers[0].bogus"]
        assert "Pod.spec.containers.ports.containerPort of type int64" in \
            wrong_type("v1", "Pod", copy.deepcopy(wrong))


def test_a_spec_with_a_null_is_walked_every_time() -> None:
    for _ in range(2):
        pod = copy.deepcopy(POD)
        pod["spec"]["hostname"] = None
        assert wrong_type("v1", "Pod", pod) is None
        assert "hostname" not in pod["spec"]  # a struct field's null is the field absent
