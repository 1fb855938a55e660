"""admission.apply_patch on a custom resource: a strategic merge patch (kubectl patch's
default) is refused with upstream's 415 and its list of accepted types; a merge patch and a
JSON patch apply."""

from __future__ import annotations

import pytest

from k3py.api import errors
from k3py.api.resources import Resource
from k3py.server import admission

pytestmark = pytest.mark.unit

WIDGET = Resource(group="example.com", version="v1", kind="Widget", plural="widgets", crd=True)
CUR = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
       "spec": {"items": [{"name": "a"}], "size": 1}}


def test_a_strategic_merge_patch_of_a_custom_resource_is_415():
    with pytest.raises(errors.StatusError) as refused:
        admission.apply_patch(WIDGET, CUR, b'{"spec":{"size":2}}', "strategic", "m", False)
    assert refused.value.code == 415 and refused.value.reason == "UnsupportedMediaType"
    assert "application/merge-patch+json" in refused.value.message
    assert "strategic" not in refused.value.message


def test_merge_and_json_patches_of_a_custom_resource_apply():
    merged = admission.apply_patch(WIDGET, CUR, b'{"spec":{"items":[{"name":"b"}]}}', "merge",
                                   "m", False)
    assert merged["spec"] == {"items": [{"name": "b"}], "size": 1}  # lists replaced whole
    patched = admission.apply_patch(
        WIDGET, CUR, b'[{"op":"replace","path":"/spec/size","value":3}]', "json", "m", False)
    assert patched["spec"]["size"] == 3 and CUR["spec"]["size"] == 1
