"""Fixtures of the agent's unit tests: a real MetaManager on SQLite in the test's tmp dir."""

from __future__ import annotations

import pytest

from k3py.agent.metamanager import MetaManager


@pytest.fixture
async def meta(tmp_path):
    m = MetaManager(str(tmp_path / "agent" / "meta.db"))
    await m.open()
    yield m
    await m.close()
