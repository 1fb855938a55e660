"""The demos' e2e tests build the mapper image once per session from this checkout, keep only
its tarball (each cluster's agent imports it from its images directory, as on a real node) and
remove the image at the end (podman is shared by everything on the machine)."""

from __future__ import annotations

import subprocess

import pytest

from tests.e2e.demos import MAPPER_IMAGE, build_mapper_image


@pytest.fixture(scope="session")
def mapper_image(tmp_path_factory):
    tar = build_mapper_image(tmp_path_factory.mktemp("image") / "k3py-mapper.tar")
    subprocess.run(["podman", "rmi", "-f", MAPPER_IMAGE], capture_output=True)
    try:
        yield tar
    finally:
        subprocess.run(["podman", "rmi", "-f", MAPPER_IMAGE], capture_output=True)
