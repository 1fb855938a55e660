"""Shared fixtures: a real k3py server per test module (`server`) or per test (`fresh_server`)."""

from __future__ import annotations

import pytest

from tests.harness import ServerProcess


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
