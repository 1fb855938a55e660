"""Shared fixtures: a real k3py server per test module (`server`) or per test (`fresh_server`);
and the markers by folder, so a test under tests/unit is `unit` even if its module forgets."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import ServerProcess

_MARK_BY_FOLDER = {"unit": pytest.mark.unit, "integration": pytest.mark.integration,
                   "e2e": pytest.mark.integration}  # the demos' run.sh, for real
_TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = item.path.relative_to(_TESTS).parts[0] if item.path.is_relative_to(_TESTS) else ""
        mark = _MARK_BY_FOLDER.get(folder)
        if mark is not None and item.get_closest_marker(mark.name) is None:
            item.add_marker(mark)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("k3py"))
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def fresh_server(tmp_path):
    srv = ServerProcess(tmp_path / "k3py")
    try:
        yield srv
    finally:
        srv.stop()
