"""Air-gapped images for real: docker-archive and oci-archive tarballs, plain, gzip and zstd,
imported into a podman storage of the test's own (--podman-root), by the agent's importer and
by `k3py airgap import`; tarballs already imported are skipped on the next start, re-imported
once their images are gone, and a broken tarball is one warning line that stops nothing; an
image a tarball carries is never pulled."""

from __future__ import annotations

import asyncio
import gzip
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from k3py.agent.runtime import images
from k3py.agent.runtime.podman import Podman
from k3py.config import podman_storage_args
from tests.integration.agents import build_test_image

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "k3py.local/busybox:latest"


@pytest.fixture(scope="module")
def tarballs(tmp_path_factory):
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    tmp = tmp_path_factory.mktemp("airgap")
    docker = tmp / "bb.tar"
    build_test_image(docker)
    oci = tmp / "bb-oci.tar"
    subprocess.run(["podman", "save", "-q", "--format", "oci-archive", "-o", str(oci), IMAGE],
                   check=True, capture_output=True)
    out = {"docker.tar": docker, "oci.tar": oci}
    with open(docker, "rb") as src, gzip.open(tmp / "bb.tar.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    out["docker.tar.gz"] = tmp / "bb.tar.gz"
    if shutil.which("zstd"):
        for name, src in (("docker.tar.zst", docker), ("oci.tar.zst", oci)):
            dst = tmp / f"{name}"
            subprocess.run(["zstd", "-q", "-f", str(src), "-o", str(dst)], check=True)
            out[name] = dst
    return out


@pytest.fixture
def podman_root(tmp_path):
    root = tmp_path / "podman"
    yield root
    args = podman_storage_args(str(root))
    subprocess.run(["podman", *args, "rmi", "-a", "-f"], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(args[args.index("--runroot") + 1], ignore_errors=True)


def _exists(root: Path) -> bool:
    return subprocess.run(["podman", *podman_storage_args(str(root)), "image", "exists", IMAGE],
                          capture_output=True).returncode == 0


def _rmi(root: Path) -> None:
    subprocess.run(["podman", *podman_storage_args(str(root)), "rmi", "-f", IMAGE],
                   capture_output=True, check=True)


@pytest.mark.parametrize("kind", ["docker.tar", "oci.tar", "docker.tar.gz", "docker.tar.zst",
                                  "oci.tar.zst"])
def test_each_format_imports(tarballs, podman_root, kind):
    if kind not in tarballs:
        pytest.skip("zstd is not installed")
    runtime = Podman(extra_args=podman_storage_args(str(podman_root)))
    names = asyncio.run(images.import_tarball(runtime, str(tarballs[kind])))
    assert IMAGE in " ".join(names) or names, names
    assert _exists(podman_root)


def test_images_dir_skips_imported_tarballs(tarballs, podman_root, tmp_path, caplog):
    images_dir = tmp_path / "agent" / "images"
    images_dir.mkdir(parents=True)
    shutil.copy(tarballs["docker.tar.gz"], images_dir / "busybox.tar.gz")
    (images_dir / "broken.tar").write_bytes(b"not a tarball at all")
    (images_dir / "README.txt").write_text("not an image")
    runtime = Podman(extra_args=podman_storage_args(str(podman_root)))
    with caplog.at_level(logging.INFO, logger="k3py.images"):
        first = asyncio.run(images.import_dir(runtime, str(images_dir)))
    assert first == [str(images_dir / "busybox.tar.gz")]
    assert _exists(podman_root)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "broken.tar" in warnings[0] and "\n" not in warnings[0]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert f"imported image {IMAGE} from busybox.tar.gz" in infos, infos
    assert (tmp_path / "agent" / images.STATE_FILE).exists()

    # a restart: nothing to import, even if the file was touched (same bytes), and what the
    # tarball carries is never pulled, even with policy Always (a pull of k3py.local/ fails,
    # and the outcome would then be "offline")
    (images_dir / "busybox.tar.gz").touch()
    restarted = Podman(extra_args=podman_storage_args(str(podman_root)))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="k3py.images"):
        assert asyncio.run(images.import_dir(restarted, str(images_dir))) == []
    assert any("already imported" in r.getMessage() for r in caplog.records)
    assert asyncio.run(restarted.ensure_image(IMAGE, "Always")) == "present"
    # the image was removed from podman's storage: imported again
    _rmi(podman_root)
    assert asyncio.run(images.import_dir(runtime, str(images_dir))) == [str(images_dir /
                                                                     "busybox.tar.gz")]
    assert _exists(podman_root)


def test_airgap_import_command(tarballs, podman_root, tmp_path):
    kind = "docker.tar.zst" if "docker.tar.zst" in tarballs else "docker.tar.gz"
    out = subprocess.run([sys.executable, "-m", "k3py", "airgap", "import", "--podman-root",
                          str(podman_root), str(tarballs[kind])],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"imported {tarballs[kind]}: {IMAGE}" in out.stdout
    assert _exists(podman_root)
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"nope")
    out = subprocess.run([sys.executable, "-m", "k3py", "airgap", "import", "--podman-root",
                          str(podman_root), str(bad)],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "import failed: " in lines[0] and "bad.tar" in lines[0], lines
