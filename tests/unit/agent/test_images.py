"""Air-gap tarball helpers: which files count as image tarballs, compression told by content
(not by name), and the image names read from `podman load` output."""

from __future__ import annotations

import gzip
import lzma

import pytest

from k3py.agent.runtime.images import compression_of, tarballs_in
from k3py.agent.runtime.podman import full_reference, loaded_names

pytestmark = pytest.mark.unit


def test_tarballs_in(tmp_path):
    for name in ("b.tar", "a.tar.zst", "c.tar.gz", "d.tgz", "e.tar.xz", "notes.txt", "x.zip"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "dir.tar").mkdir()
    assert [p.rsplit("/", 1)[1] for p in tarballs_in(str(tmp_path))] == \
        ["a.tar.zst", "b.tar", "c.tar.gz", "d.tgz", "e.tar.xz"]
    assert tarballs_in(str(tmp_path / "missing")) == []


def test_compression_by_content(tmp_path):
    (tmp_path / "plain.tar.gz").write_bytes(b"ustar" + b"\0" * 100)  # misnamed: plain
    (tmp_path / "g").write_bytes(gzip.compress(b"x"))
    (tmp_path / "z").write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 8)
    (tmp_path / "x").write_bytes(lzma.compress(b"x"))
    assert [compression_of(str(tmp_path / n)) for n in ("plain.tar.gz", "g", "z", "x")] == \
        ["", "gzip", "zstd", "xz"]


def testloaded_names():
    assert loaded_names("Loaded image: k3py.local/busybox:latest\n") == \
        ["k3py.local/busybox:latest"]
    assert loaded_names("Getting image source signatures\nLoaded image(s): a:1,b:2\n") == \
        ["a:1", "b:2"]
    assert loaded_names("") == []


def test_full_reference_names_an_image_as_podman_does():
    # the air-gap set and a pod's image compare in this form
    assert full_reference("busybox") == "docker.io/library/busybox:latest"
    assert full_reference("library/busybox:1.36") == "docker.io/library/busybox:1.36"
    assert full_reference("k3py.local/mapper") == "k3py.local/mapper:latest"
    assert full_reference("localhost:5000/app") == "localhost:5000/app:latest"
    assert full_reference("quay.io/a/b@sha256:00") == "quay.io/a/b@sha256:00"
