"""Fixtures for the store tests: `store` opens a Backend on fresh storage, reopenable for restarts.

A driver joins the contract tests by adding a param to `store` (postgres.py will add one);
test_backend_contract.py uses only the Backend protocol through this fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from k3py.server.store.backend import Backend
from k3py.server.store.encryption import EncryptingBackend, EncryptionKeys
from k3py.server.store.sqlite import SQLiteBackend


class StoreFactory:
    """Opens backends on one storage location; every one opened is closed at teardown."""

    def __init__(self, kind: str, where: Path) -> None:
        self.kind = kind
        self.where = where
        self.opened: list[Any] = []

    async def open(self, **options: Any) -> Backend:
        options.setdefault("compact_interval", 0)  # tests compact explicitly unless asked
        options.setdefault("checkpoint_interval", 0)
        if self.kind == "sqlite":
            backend: Any = SQLiteBackend(str(self.where / "state.db"), **options)
        elif self.kind == "sqlite-encrypted":  # every value through the encryption layer
            keys = EncryptionKeys.load_or_create(str(self.where / "cred" / "keys.json"),
                                                 enable=True)
            backend = EncryptingBackend(SQLiteBackend(str(self.where / "state.db"),
                                                      **options), keys, prefix="/")
        else:  # pragma: no cover - future drivers
            raise NotImplementedError(self.kind)
        await backend.start()
        self.opened.append(backend)
        return backend

    async def close_all(self) -> None:
        for b in self.opened:
            await b.close()
        self.opened.clear()


@pytest.fixture(params=["sqlite", "sqlite-encrypted"])
async def store_factory(request: pytest.FixtureRequest,
                        tmp_path: Path) -> AsyncIterator[StoreFactory]:
    factory = StoreFactory(request.param, tmp_path)
    try:
        yield factory
    finally:
        await factory.close_all()


@pytest.fixture
async def store(store_factory: StoreFactory) -> Backend:
    return await store_factory.open()
