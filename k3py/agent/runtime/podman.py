"""Podman as the container runtime, driven through the `podman` CLI (asyncio subprocesses).

Each Kubernetes pod is a podman pod; every pod and container carries io.k3py.* labels so the
agent adopts what it started before a restart. The CLI was chosen over the `podman` Python
package for now: no extra dependency or service socket, and it never blocks the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import tempfile
from collections.abc import AsyncIterator

__all__ = ["Podman", "RuntimeError_", "reap", "LABEL_UID", "LABEL_NS", "LABEL_NAME", "LABEL_CONTAINER",
           "pod_name_for", "container_name_for"]

log = logging.getLogger("k3py.runtime")

LABEL_UID = "io.k3py.pod-uid"
LABEL_NS = "io.k3py.pod-namespace"
LABEL_NAME = "io.k3py.pod-name"
LABEL_CONTAINER = "io.k3py.container"
LABEL_NODE = "io.k3py.node"

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
    out["NetworkSettings"] = {
        "IPAddress": (item.get("NetworkSettings") or {}).get("IPAddress") or ""}
    return out


class Podman:
    def __init__(self, *, binary: str = "podman", node_name: str = "",
                 extra_args: tuple[str, ...] = ()) -> None:
        self.binary = binary
        self.node_name = node_name
        self.extra_args = extra_args  # e.g. --root/--runroot for a per-agent storage
        self._images: set[str] = set()  # seen present: no `image exists` per start

    async def _run_captured(self, args: tuple[str, ...] | list[str], timeout: float,
                            merge_stderr: bool = False) -> tuple[int, bytes, bytes]:
        """Run podman; (exit code, stdout, stderr). Output goes to temporary files, not
        pipes: `podman start` leaves conmon running, and under uvloop (the server's loop, so
        the embedded agent) conmon inherits the pipe ends, so reading to EOF would wait for
        the container to exit. A timeout or cancellation kills podman."""
        with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
            proc = await asyncio.create_subprocess_exec(
                self.binary, *self.extra_args, *args, stdin=asyncio.subprocess.DEVNULL,
                stdout=out_f, stderr=subprocess.STDOUT if merge_stderr else err_f)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
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

    async def load_images(self, directory: str, state_path: str | None = None) -> list[str]:
        """Import the image tarballs in `directory` not imported before (the K3s airgap
        images convention; k3py.agent.images has the formats and the skip-on-restart)."""
        from k3py.agent import images
        return await images.import_dir(self, directory, state_path)

    async def ensure_image(self, image: str, policy: str) -> str:
        """Make `image` present per the pull policy: "present" (nothing pulled), "pulled",
        or "offline" (Always, but the pull failed and the local copy is used, like an
        air-gapped kubelet). Raises ErrImageNeverPull / ErrImagePull."""
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

    # ---------------------------------------------------------------- pods

    async def list_pods(self) -> dict[str, dict]:
        """Pods started by k3py on this node, by Kubernetes pod uid."""
        args = ["pod", "ps", "--format", "json", "--filter", f"label={LABEL_UID}"]
        if self.node_name:
            args += ["--filter", f"label={LABEL_NODE}={self.node_name}"]
        out = await self.run(*args)
        pods = json.loads(out or "[]") or []
        return {p["Labels"][LABEL_UID]: p for p in pods if (p.get("Labels") or {}).get(LABEL_UID)}

    def _own_filter(self) -> str:
        """One podman `label=` filter for what this agent started."""
        return f"label={LABEL_NODE}={self.node_name}" if self.node_name else f"label={LABEL_UID}"

    async def list_containers(self) -> list[dict]:
        """`podman ps -a` entries (infra containers included) of k3py's pods on this node:
        one command for every pod, with state, start/exit times and exit code."""
        out = await self.run("ps", "-a", "--format", "json", "--filter", self._own_filter())
        return [c for c in json.loads(out or "[]") or []
                if (c.get("Labels") or {}).get(LABEL_UID)]

    async def inspect(self, *names_or_ids: str) -> list[dict]:
        """`podman inspect` of pods and/or containers in one command; the ones that vanished
        meanwhile are left out rather than failing the rest."""
        if not names_or_ids:
            return []
        out = await self.run("inspect", *names_or_ids, check=False)
        try:
            found = json.loads(out or "[]") or []
        except ValueError:
            return []
        return [_slim(x) for x in (found if isinstance(found, list) else [found])
                if isinstance(x, dict)]

    async def events(self) -> AsyncIterator[dict]:
        """Follow `podman events` for k3py's containers on this node (one long-lived process,
        idle when nothing happens); yields each event as a dict until the process ends."""
        proc = await asyncio.create_subprocess_exec(
            self.binary, *self.extra_args, "events", "--format", "json", "--filter",
            self._own_filter(), "--filter", "type=container",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, limit=1 << 20)
        assert proc.stdout is not None
        try:
            async for line in proc.stdout:
                with contextlib.suppress(ValueError):
                    ev = json.loads(line)
                    if isinstance(ev, dict):
                        yield ev
        finally:
            await reap(proc)

    def _labels(self, pod: dict) -> list[str]:
        md = pod["metadata"]
        return [f"{LABEL_UID}={md['uid']}", f"{LABEL_NS}={md['namespace']}",
                f"{LABEL_NAME}={md['name']}", f"{LABEL_NODE}={self.node_name}"]

    async def create_sandbox(self, pod: dict) -> str:
        """Create the podman pod (network, hostname, host ports) that the containers join;
        returns its name. Its infra container starts with the first container run in it."""
        md, spec = pod["metadata"], pod.get("spec") or {}
        name = pod_name_for(pod)
        args = ["pod", "create", "--name", name]
        for label in self._labels(pod):
            args += ["--label", label]
        if spec.get("hostNetwork"):
            args += ["--network", "host"]
        else:
            args += ["--hostname", md["name"][:63]]
            for c in spec.get("containers") or []:
                for p in c.get("ports") or []:
                    if p.get("hostPort"):
                        proto = (p.get("protocol") or "TCP").lower()
                        args += ["-p", f"{p['hostPort']}:{p['containerPort']}/{proto}"]
        await self.run(*args)
        return name

    async def run_container(self, pod: dict, c: dict, *, limits: dict | None = None,
                            grace: int = 30) -> bool:
        """Create and start one container in the pod's sandbox, never restarted by podman
        (the agent restarts it, with backoff). `c`: {name, image, entrypoint, args, env,
        workdir, mounts: [(host, container, ro)], privileged, user, tty, stdin}; `limits`:
        {cpus: str, memory: int}. Returns False when the limits had to be dropped because
        podman refused them (e.g. a cgroup setup without those controllers)."""
        cname = container_name_for(pod, c["name"])
        # ensure_image did any pull, so podman itself never pulls here
        cargs = ["run", "-d", "--pull", "never", "--pod", pod_name_for(pod), "--name", cname,
                 "--restart", "no", "--stop-timeout", str(max(0, grace)),
                 "--label", f"{LABEL_CONTAINER}={c['name']}"]
        for label in self._labels(pod):
            cargs += ["--label", label]
        for k, v in c.get("env") or []:
            cargs += ["--env", f"{k}={v}"]
        if c.get("workdir"):
            cargs += ["--workdir", c["workdir"]]
        for host, target, ro in c.get("mounts") or []:
            cargs += ["--volume", f"{host}:{target}{':ro' if ro else ''}"]
        if c.get("privileged"):
            cargs.append("--privileged")
        if c.get("user"):
            cargs += ["--user", c["user"]]
        if c.get("tty"):
            cargs.append("--tty")
        if c.get("stdin"):
            cargs.append("--interactive")
        if c.get("entrypoint"):
            cargs += ["--entrypoint", json.dumps(c["entrypoint"])]
        tail = [c["image"], *[str(a) for a in c.get("args") or []]]
        lim: list[str] = []
        if limits and limits.get("cpus"):
            lim += ["--cpus", str(limits["cpus"])]
        if limits and limits.get("memory"):
            lim += ["--memory", str(limits["memory"])]
        try:
            await self._run_new(cname, c.get("workdir") or "", cargs, lim, tail)
            return True
        except RuntimeError_ as e:
            await self.run("rm", "-f", "-t", "0", cname, check=False)
            if lim and any(w in str(e).lower() for w in ("cgroup", "cpu", "memory", "swap")):
                # the host cannot limit: run unlimited
                await self._run_new(cname, c.get("workdir") or "", cargs, [], tail)
                return False
            self._images.discard(c["image"])  # check it again on the retry
            raise RuntimeError_(str(e), "CreateContainerError") from None

    async def _run_new(self, cname: str, workdir: str, cargs: list[str], lim: list[str],
                       tail: list[str]) -> None:
        """`podman run -d`; a workingDir missing from the image is created first, as
        Kubernetes runtimes do (podman 4.3 refuses to start in a directory that does not exist):
        create the container, copy an empty directory to that path, then start it."""
        try:
            await self.run(*cargs, *lim, *tail)
            return
        except RuntimeError_ as e:
            if not (workdir and "workdir" in str(e) and "does not exist" in str(e)):
                raise
        await self.run("rm", "-f", "-t", "0", cname, check=False)
        await self.run("create", *cargs[2:], *lim, *tail)  # cargs = ["run", "-d", ...]
        with tempfile.TemporaryDirectory() as empty:
            await self.run("cp", empty, f"{cname}:{workdir}")
        await self.run("start", cname)

    async def start_container(self, name: str) -> None:
        """Start an exited container again (a restart: same container, same logs)."""
        await self.run("start", name)

    async def stop_container(self, name: str, grace: int) -> None:
        """SIGTERM (the image's stop signal), SIGKILL after `grace` seconds."""
        await self.run("stop", "-t", str(max(0, grace)), name, check=False, timeout=grace + 30)

    async def exec_check(self, container: str, argv: list[str], timeout: float
                         ) -> tuple[int, str]:
        """`podman exec` for probes: (exit code, output); TimeoutError past `timeout`."""
        rc, out, _ = await self._run_captured(["exec", container, *argv], timeout,
                                              merge_stderr=True)
        return rc, out[:4096].decode(errors="replace")

    async def remove_pod(self, name_or_id: str, grace: int = 30) -> None:
        await self.run("pod", "stop", "-t", str(max(0, grace)), name_or_id, check=False,
                       timeout=grace + 30)
        await self.run("pod", "rm", "-f", "-t", "0", name_or_id, check=False)

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
