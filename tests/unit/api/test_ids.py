"""New ids and UIDs (k3py.api.objects.new_id / new_uid): random bytes taken from a block of
os.urandom, never the same 16 bytes twice, whichever thread asks, and version 4 UUIDs."""

from __future__ import annotations

import threading
import uuid

import pytest

from k3py.api.objects import new_id, new_uid

pytestmark = pytest.mark.unit


def test_ids_from_several_threads_are_all_different() -> None:
    made: list[list[str]] = [[] for _ in range(4)]

    def make(into: list[str]) -> None:
        for _ in range(5000):
            into.append(new_id())
    threads = [threading.Thread(target=make, args=(out,)) for out in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for out in made for i in out]
    assert len(set(every)) == len(every) == 20000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in every[:10])


def test_uids_are_version_4_uuids() -> None:
    for _ in range(600):  # across a refill of the block
        u = uuid.UUID(new_uid())
        assert u.version == 4 and u.variant == uuid.RFC_4122
