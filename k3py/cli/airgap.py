"""`k3py airgap import FILE...`: import image tarballs (docker-archive or oci-archive) into the
node's podman, as the agent does at start for <data-dir>/agent/images/."""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Awaitable, Callable
from typing import Any

from k3py import PROGRAM
from k3py.cli.flags import HelpRequested, UsageError

__all__ = ["airgap_command"]

USAGE = f"""USAGE:
   {PROGRAM} airgap import FILE [FILE...]

Imports image tarballs (docker save / podman save, .tar or compressed) into this node's podman.
At start the agent imports every tarball in <data-dir>/agent/images/ the same way."""


def _importer() -> Callable[[str], Any]:
    """The runtime's tarball importer; podman load through the Podman runtime until
    k3py.agent.runtime.images lands."""
    try:
        from k3py.agent.runtime.images import import_tarball  # type: ignore[import-not-found]
        return import_tarball
    except ImportError:
        pass
    try:
        from k3py.agent.runtime.podman import Podman
    except ImportError:
        raise UsageError(f"'{PROGRAM} airgap import' is not available yet in this build; "
                         f"copy the tarballs to <data-dir>/agent/images/ instead") from None
    runtime = Podman(node_name="")

    def load(path: str) -> Awaitable[str]:
        return runtime.run("load", "-q", "-i", path, timeout=600)
    return load


async def _import_all(files: list[str]) -> None:
    importer = _importer()
    for path in files:
        result = importer(path)
        if inspect.isawaitable(result):
            await result
        print(f"imported {path}")


def airgap_command(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        raise HelpRequested(USAGE)
    if argv[0] != "import":
        raise UsageError(f"unknown airgap command {argv[0]!r}; usage: {PROGRAM} airgap "
                         f"import FILE [FILE...]")
    files = argv[1:]
    if not files:
        raise UsageError(f"no tarball given; usage: {PROGRAM} airgap import FILE [FILE...]")
    for path in files:
        if not os.path.isfile(path):
            raise UsageError(f"no such file: {path}; give the path of an images tarball")
    try:
        asyncio.run(_import_all(files))
    except UsageError:
        raise
    except Exception as e:  # noqa: BLE001 - podman's message, folded into one line
        raise UsageError(f"import failed: {e}; check that podman works "
                         f"('{PROGRAM} check-config')") from None
    return 0
