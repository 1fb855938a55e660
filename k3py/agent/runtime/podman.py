"""The `podman` CLI (asyncio subprocesses), for what the agent still runs podman for: image
tarball loads (at start and `k3py airgap import`), the image checks they need, and logs with
nanosecond timestamps. It is the base of the libpod API runtime (libpod.py), which runs the
pods; the names and labels both share are here.

Each Kubernetes pod is a podman pod; every pod and container carries io.k3py.* labels so the
agent adopts what it started before a restart: the pod's uid, namespace and name, the node and
the cluster (LABEL_CLUSTER, from the server CA), so that several clusters on one host, even
with the same node name, never list, adopt or remove each other's pods."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import AsyncIterator

__all__ = ["Podman", "RuntimeError_", "reap", "ip_address", "ipv6_address", "LABEL_UID", "LABEL_NS", "LABEL_NAME", "LABEL_CONTAINER",
           "LABEL_NODE", "LABEL_CLUSTER", "pod_name_for", "container_name_for", "loaded_names"]

log = logging.getLogger("k3py.runtime")

LABEL_UID = "io.k3py.pod-uid"
LABEL_NS = "io.k3py.pod-namespace"
LABEL_NAME = "io.k3py.pod-name"
LABEL_CONTAINER = "io.k3py.container"
LABEL_NODE = "io.k3py.node"
LABEL_CLUSTER = "io.k3py.cluster"

class RuntimeError_(Exception):
    """A podman command failed; `reason` is the Kubernetes waiting reason to report."""

    def __init__(self, message: str, reason: str = "CreateContainerError") -> None:
        super().__init__(message)
        self.reason = reason


async def reap(proc: asyncio.subprocess.Process) -> None:
    """Kill `proc` unless it has exited, and wait for it (no zombie, no orphaned podman)."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    await proc.wait()


def loaded_names(output: str) -> list[str]:
    """Image names from `podman load` output ("Loaded image: a" or "Loaded image(s): a,b")."""
    names: list[str] = []
    for line in output.splitlines():
        if line.startswith("Loaded image"):
            rest = line.split(":", 1)[1] if ":" in line else ""
            names += [n.strip() for n in rest.split(",") if n.strip()]
    return names


def full_reference(image: str) -> str:
    """An image reference as podman names it once loaded: a registry host (docker.io, and
    library/ for one-word names, when none is given) and a tag (:latest when there is no tag
    or digest), so `busybox` and `docker.io/library/busybox:latest` compare equal."""
    first, slash, rest = image.partition("/")
    if not slash:
        image = f"docker.io/library/{image}"
    elif not ("." in first or ":" in first or first == "localhost"):
        image = f"docker.io/{image}"
    last = image.rsplit("/", 1)[1]
    if "@" not in last and ":" not in last:
        image += ":latest"
    return image


def pod_name_for(pod: dict) -> str:
    md = pod["metadata"]
    return f"{md['namespace']}_{md['name']}_{md['uid'][:8]}"


def container_name_for(pod: dict, container: str) -> str:
    md = pod["metadata"]
    return f"{md['namespace']}_{md['name']}_{container}_{md['uid'][:8]}"


# what the agent reads of a container's inspect: it caches one per container, and a full
# inspect (~25 KB of Python objects) times 60 containers is megabytes of an agent's RSS
_KEEP = ("Id", "Name", "Pod", "IsInfra", "Image", "ImageName", "Created", "RestartCount",
         "State")


def _slim(item: dict) -> dict:
    if not isinstance(item.get("State"), dict):
        return item  # a pod's inspect: its State is a string; read once per start
    out = {k: item[k] for k in _KEEP if k in item}
    out["Config"] = {"Labels": (item.get("Config") or {}).get("Labels") or {}}
    settings = item.get("NetworkSettings") or {}
    out["NetworkSettings"] = {"IPAddress": ip_address(settings),
                              "GlobalIPv6Address": ipv6_address(settings)}
    return out


def ip_address(settings: dict) -> str:
    """The container's IPv4 address: podman fills the top-level one only on its default
    network; on another (the node's pod CIDR bridge) it is that network's."""
    return _address(settings, "IPAddress")


def ipv6_address(settings: dict) -> str:
    """The container's global IPv6 address on a dual-stack network ("" when none)."""
    return _address(settings, "GlobalIPv6Address")


def _address(settings: dict, key: str) -> str:
    if settings.get(key):
        return settings[key]
    for net in (settings.get("Networks") or {}).values():
        if isinstance(net, dict) and net.get(key):
            return net[key]
    return ""


class Podman:
    def __init__(self, *, binary: str = "podman", node_name: str = "",
                 extra_args: tuple[str, ...] = ()) -> None:
        self.binary = binary
        self.node_name = node_name
        self.extra_args = extra_args  # e.g. --root/--runroot for a per-agent storage
        self._images: set[str] = set()  # seen present: no `image exists` per start
        # what the air-gap tarballs carry (full references): never pulled, whatever the policy
        self.airgap_images: set[str] = set()

    async def _run_captured(self, args: tuple[str, ...] | list[str], timeout: float
                            ) -> tuple[int, bytes, bytes]:
        """Run podman; (exit code, stdout, stderr). Output goes to temporary files, not
        pipes: `podman start` leaves conmon running, and under uvloop (the server's loop, so
        the embedded agent) conmon inherits the pipe ends, so reading to EOF would wait for
        the container to exit. A timeout or cancellation kills podman."""
        with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
            proc = await asyncio.create_subprocess_exec(
                self.binary, *self.extra_args, *args, stdin=asyncio.subprocess.DEVNULL,
                stdout=out_f, stderr=err_f)
            try:
                async with asyncio.timeout(timeout):
                    await proc.wait()
            except (TimeoutError, asyncio.CancelledError):
                await reap(proc)
                raise
            out_f.seek(0)
            err_f.seek(0)
            return proc.returncode or 0, out_f.read(), err_f.read()

    async def run(self, *args: str, check: bool = True, timeout: float = 120.0) -> str:
        rc, out, err = await self._run_captured(args, timeout)
        if check and rc != 0:
            raise RuntimeError_(err.decode(errors="replace").strip() or
                                f"podman {args[0]} exited with {rc}")
        return out.decode(errors="replace")

    async def version(self) -> str:
        try:
            return (await self.run("version", "--format", "{{.Client.Version}}")).strip()
        except (OSError, RuntimeError_):
            return "unknown"

    # ---------------------------------------------------------------- images

    async def load_archive(self, path: str) -> list[str]:
        """`podman load` one docker-archive / oci-archive tarball; the image names it held.
        Raises RuntimeError_ with podman's error (images.py retries compressed ones)."""
        return loaded_names(await self.run("load", "-q", "-i", path, timeout=600))

    async def ensure_image(self, image: str, policy: str) -> str:
        """Make `image` present per the pull policy: "present" (nothing pulled), "pulled",
        or "offline" (Always, but the pull failed and the local copy is used, like an
        air-gapped kubelet). Raises ErrImageNeverPull / ErrImagePull. An image that an
        air-gap tarball carries is never pulled: present, or ErrImageNeverPull."""
        if full_reference(image) in self.airgap_images:
            if image in self._images or await self.image_exists(image):
                self._images.add(image)
                return "present"
            raise RuntimeError_(f'Container image "{image}" comes from an air-gap tarball but '
                                f'is no longer in podman\'s storage: restart the agent to '
                                f'import it again', "ErrImageNeverPull")
        if policy != "Always" and image in self._images:
            return "present"  # the container is run with --pull never: if it vanished, that fails
        exists = await self.image_exists(image)
        if exists and policy != "Always":
            self._images.add(image)
            return "present"
        if policy == "Never":
            raise RuntimeError_(f'Container image "{image}" is not present with pull policy '
                                f'of Never', "ErrImageNeverPull")
        try:
            await self._pull(image)
        except RuntimeError_ as e:
            if exists:
                return "offline"
            raise RuntimeError_(f'failed to pull and unpack image "{image}": {e}',
                                "ErrImagePull") from None
        self._images.add(image)
        return "pulled"

    async def image_exists(self, image: str) -> bool:
        return (await self._rc("image", "exists", image)) == 0

    async def _pull(self, image: str) -> None:
        """Pull `image`; RuntimeError_ with the registry's error when it cannot."""
        await self.run("pull", "-q", image, timeout=600)

    async def _rc(self, *args: str) -> int:
        proc = await asyncio.create_subprocess_exec(
            self.binary, *self.extra_args, *args, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        return await proc.wait()

    # ---------------------------------------------------------------- streams

    async def logs(self, container: str, *, follow: bool = False, tail: int | None = None,
                   since: str | None = None, until: str | None = None,
                   timestamps: bool = False) -> AsyncIterator[bytes]:
        args = ["logs"]
        if follow:
            args.append("--follow")
        if tail is not None:
            args += ["--tail", str(tail)]
        if since:
            args += ["--since", since]
        if until:
            args += ["--until", until]
        if timestamps:
            args.append("--timestamps")
        args.append(container)
        proc = await asyncio.create_subprocess_exec(
            self.binary, *self.extra_args, *args, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        assert proc.stdout is not None
        try:
            while True:
                chunk = await proc.stdout.read(32768)
                if not chunk:
                    break
                yield chunk
        finally:
            await reap(proc)
