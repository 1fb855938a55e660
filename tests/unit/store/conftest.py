"""Fixtures for the store tests: `store` opens a Backend on fresh storage, reopenable for restarts.

Each driver is a param of `store_factory`: SQLite on a temp file (bare, and under the encryption
layer), PostgreSQL on a fresh database of one throwaway cluster per session (tests/pg.py); test_backend_contract.py uses only the
Backend protocol through these fixtures."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from k3py.server.store.backend import Backend
from k3py.server.store.encryption import EncryptingBackend, EncryptionKeys
from k3py.server.store.sqlite import SQLiteBackend
from tests.pg import SKIP_REASON, PostgresCluster, pg_bindir

_databases = itertools.count()


class StoreFactory:
    """Opens backends on one storage location; every one opened is closed at teardown."""

    def __init__(self, kind: str, where: Path | str) -> None:
        self.kind = kind
        self.where = where  # a folder (sqlite) or a database endpoint (postgres)
        self.opened: list[Any] = []

    async def open(self, **options: Any) -> Backend:
        options.setdefault("compact_interval", 0)  # tests compact explicitly unless asked
        options.setdefault("checkpoint_interval", 0)
        if self.kind == "sqlite":
            backend: Any = SQLiteBackend(str(Path(self.where) / "state.db"), **options)
        elif self.kind == "sqlite-encrypted":  # every value through the encryption layer
            where = Path(self.where)
            keys = EncryptionKeys.load_or_create(str(where / "cred" / "keys.json"), enable=True)
            backend = EncryptingBackend(SQLiteBackend(str(where / "state.db"), **options),
                                        keys, prefix="/")
        else:
            from k3py.server.store.postgres import PostgresBackend
            backend = PostgresBackend(str(self.where), **options)
        await backend.start()
        self.opened.append(backend)
        return backend

    async def close_all(self) -> None:
        for b in self.opened:
            await b.close()
        self.opened.clear()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    if pg_bindir() is None:
        pytest.skip(SKIP_REASON)
    cluster = PostgresCluster(fsync=False)
    try:
        yield cluster.start()
    finally:
        cluster.destroy()


@pytest.fixture(params=["sqlite", "sqlite-encrypted", "postgres"])
async def store_factory(request: pytest.FixtureRequest,
                        tmp_path: Path) -> AsyncIterator[StoreFactory]:
    if request.param == "postgres":
        cluster = request.getfixturevalue("pg_cluster")
        where: Path | str = cluster.create_db(f"contract{next(_databases)}")
    else:
        where = tmp_path
    factory = StoreFactory(request.param, where)
    try:
        yield factory
    finally:
        await factory.close_all()


@pytest.fixture
async def store(store_factory: StoreFactory) -> Backend:
    return await store_factory.open()
