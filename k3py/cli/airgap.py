"""`k3py airgap import FILE...`: import image tarballs (docker-archive or oci-archive) into the
node's podman, as the agent does at start for <data-dir>/agent/images/."""

from __future__ import annotations

import asyncio
import os
import shutil

from k3py import PROGRAM
from k3py.cli.flags import AIRGAP, HelpRequested, UsageError, parse

__all__ = ["airgap_command"]

USAGE = f"""USAGE:
   {PROGRAM} airgap import [--podman-root DIR] FILE [FILE...]

Imports image tarballs (docker-archive or oci-archive: .tar, .tar.gz, .tar.zst, .tar.xz) into
this node's podman (--podman-root / K3PY_PODMAN_ROOT / config key podman-root: the agent's
own podman storage; -c/--config FILE as for the agent).
At start the agent imports every tarball in <data-dir>/agent/images/ the same way."""


async def _import_all(files: list[str], podman_root: str) -> list[str]:
    """Import each file; returns one error line per file that failed."""
    from k3py.agent.runtime import images
    from k3py.agent.runtime.podman import Podman
    from k3py.config import podman_storage_args
    runtime = Podman(extra_args=podman_storage_args(podman_root))
    failed = []
    for path in files:
        try:
            names = await images.import_tarball(runtime, path)
        except (images.ImportError_, OSError) as e:
            failed.append(f"{path}: {e}")
            continue
        print(f"imported {path}: {', '.join(names) or '(no image names)'}")
    return failed


def airgap_command(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        raise HelpRequested(USAGE)
    if argv[0] != "import":
        raise UsageError(f"unknown airgap command {argv[0]!r}; usage: {PROGRAM} airgap "
                         f"import FILE [FILE...]")
    if any(arg in ("-h", "--help") for arg in argv[1:]):
        raise HelpRequested(USAGE)
    files: list[str] = []
    podman_root = parse(argv[1:], AIRGAP, positional=files).get("podman_root", "")
    if not files:
        raise UsageError(f"no tarball given; usage: {PROGRAM} airgap import FILE [FILE...]")
    for path in files:
        if not os.path.isfile(path):
            raise UsageError(f"no such file: {path}; give the path of an images tarball")
    if shutil.which("podman") is None:
        raise UsageError("podman is not installed (not found on PATH)")
    failed = asyncio.run(_import_all(files, podman_root))
    if failed:
        raise UsageError("import failed: " + " | ".join(failed))
    return 0
