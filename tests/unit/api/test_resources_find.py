"""ResourceRegistry.find through its (group, plural) index: the first registered version,
kept current as versions are added, replaced and removed."""

from __future__ import annotations

import pytest

from k3py.api.resources import Resource, ResourceRegistry, builtin_registry

pytestmark = pytest.mark.unit


def _crd(version: str, kind: str = "Widget") -> Resource:
    return Resource(group="example.com", version=version, kind=kind, plural="widgets", crd=True)


def test_find_is_the_first_registered_version_through_changes() -> None:
    reg = ResourceRegistry()
    assert reg.find("example.com", "widgets") is None
    v1, v2 = _crd("v1"), _crd("v2")
    reg.add(v1)
    reg.add(v2)
    assert reg.find("example.com", "widgets") is v1
    v1_again = _crd("v1", kind="Widget2")
    reg.add(v1_again)  # the same version replaced keeps its place
    assert reg.find("example.com", "widgets") is v1_again
    reg.remove_group_resource("example.com", "widgets")
    assert reg.find("example.com", "widgets") is None
    reg.add(v2)
    assert reg.find("example.com", "widgets") is v2


def test_find_agrees_with_a_scan_for_every_builtin() -> None:
    reg = builtin_registry()
    for res in reg:
        first = next(r for r in reg if r.group == res.group and r.plural == res.plural)
        assert reg.find(res.group, res.plural) is first
