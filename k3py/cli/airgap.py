"""`k3py airgap import FILE...`: import image tarballs (docker-archive / oci-archive, .tar,
.tar.gz, .tar.zst) into the local podman, as the agent does at start for agent/images/."""

from __future__ import annotations

import asyncio
import os

from k3py.cli.flags import UsageError

__all__ = ["airgap_command"]


def airgap_command(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "import":
        raise UsageError("usage: k3py airgap import FILE [FILE...]")
    files = argv[1:]
    for f in files:
        if not os.path.isfile(f):
            raise UsageError(f"no such file: {f}")
    from k3py.agent.runtime.podman import Podman

    async def run() -> int:
        runtime = Podman(node_name="")
        for f in files:
            await runtime.run("load", "-q", "-i", f, timeout=600)
            print(f"imported {f}")
        return 0
    try:
        return asyncio.run(run())
    except Exception as e:  # noqa: BLE001 - report the podman error in one line
        raise UsageError(f"import failed: {e}".replace("\n", " ")) from None
