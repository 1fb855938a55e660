"""Podman through its libpod REST API: the pod lifecycle, inspection, events, logs and probe
execs go over the API socket of a `podman system service`; what stays on the CLI is what
the API makes no simpler: image tarball loads, and logs with nanosecond timestamps (the
CLI base class, podman.py). Interactive exec and attach use the same API through a hijacked
connection (libpod_streams.py).

Why the API: a pod start costs one podman process less per step (create + start of a
container is two requests, not a `podman run` that loads podman's whole state), and a probe
exec is a request instead of a podman process. Requests go through aiohttp, which the agent
already has, over the unix socket: the `podman` Python package would add requests/urllib3 to
an agent whose idle memory budget is 45 MB, and it blocks the event loop.

The socket: `--container-runtime-endpoint unix:///PATH` when given; else a running system
service (CONTAINER_HOST, /run/podman/podman.sock, $XDG_RUNTIME_DIR/podman/podman.sock)
when the agent uses podman's default storage; else the agent starts its own
`podman system service` on <data-dir>/agent/podman.sock. That service exits by itself a
minute after its last connection closes, so an agent killed with -9 leaves no process
behind for long, and an agent restarted within the minute reuses it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import struct
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from urllib.parse import quote

import aiohttp

from k3py.agent.logwindow import fmt_ns
from k3py.agent.network.dnsconfig import pod_dns_settings
from k3py.agent.runtime.podman import (
    LABEL_CLUSTER,
    LABEL_CONTAINER,
    LABEL_NAME,
    LABEL_NODE,
    LABEL_NS,
    LABEL_UID,
    Podman,
    RuntimeError_,
    _slim,
    container_name_for,
    pod_name_for,
)

__all__ = ["Frames", "LibpodAPI", "ping", "socket_path_for", "system_sockets"]

log = logging.getLogger("k3py.runtime")

API = "http://d/v4.0.0/libpod"
SERVICE_IDLE_SECONDS = 60
_FRAME = struct.Struct(">BxxxI")  # stream (1 stdout, 2 stderr), payload size


def socket_path_for(agent_dir: str) -> str:
    """<agent_dir>/podman.sock, or a path under /run (or the temp dir) named by its hash when
    that is longer than a unix socket path may be."""
    path = os.path.join(os.path.abspath(agent_dir), "podman.sock")
    if len(path) <= 100:
        return path
    base = "/run" if os.access("/run", os.W_OK) else tempfile.gettempdir()
    return os.path.join(base, "k3py-podman-" + hashlib.sha256(path.encode()).hexdigest()[:12]
                        + ".sock")


def system_sockets() -> list[str]:
    out = []
    host = os.environ.get("CONTAINER_HOST", "")
    if host.startswith("unix://"):
        out.append(host[len("unix://"):])
    if os.geteuid() == 0:
        out.append("/run/podman/podman.sock")
    elif os.environ.get("XDG_RUNTIME_DIR"):
        out.append(os.path.join(os.environ["XDG_RUNTIME_DIR"], "podman", "podman.sock"))
    return out


async def ping(path: str) -> bool:
    """Whether a libpod API answers its _ping on the unix socket `path`."""
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path)) as s:
            async with s.get(f"{API}/_ping", timeout=aiohttp.ClientTimeout(total=5)) as r:
                return r.status == 200
    except (TimeoutError, OSError, aiohttp.ClientError):
        return False


def _error(status: int, body: bytes) -> str:
    try:
        doc = json.loads(body)
        return str(doc.get("message") or doc.get("cause") or doc)
    except (ValueError, AttributeError):
        return body.decode(errors="replace").strip() or f"podman API answered {status}"


# podman reports, in the stderr stream, that conmon reset the attach socket when the
# process is gone before podman's last read of its output or write of its stdin: noise about
# podman's own plumbing, never the process's output
_CONMON_RESET = re.compile(rb"^Error: (?:read|write) unixpacket [^\n]*/attach: (?:read|write): "
                           rb"(?:connection reset by peer|broken pipe)\n?$")


class Frames:
    """podman's multiplexed stream (logs, execs, attach without a tty) cut into (fd, payload),
    fd 1 or 2. Bytes are fed as they come; an incomplete frame waits for the rest. With
    `attach_noise`, podman's own attach-socket reset messages are dropped (an exec's stream;
    never a log, which is the container's own output)."""

    def __init__(self, attach_noise: bool = True) -> None:
        self._buf = bytearray()
        self._noise = attach_noise

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out = []
        while len(self._buf) >= _FRAME.size:
            stream, size = _FRAME.unpack_from(self._buf)
            end = _FRAME.size + size
            if len(self._buf) < end:
                break
            payload = bytes(self._buf[_FRAME.size:end])
            del self._buf[:end]
            if self._noise and stream == 2 and _CONMON_RESET.match(payload):
                continue
            if payload:
                out.append((2 if stream == 2 else 1, payload))
        return out


class LibpodAPI(Podman):
    def __init__(self, *, agent_dir: str, endpoint: str = "", node_name: str = "",
                 extra_args: tuple[str, ...] = (), binary: str = "podman") -> None:
        super().__init__(binary=binary, node_name=node_name, extra_args=extra_args)
        self.agent_dir = agent_dir
        self.endpoint = endpoint
        self.socket = ""
        # LABEL_CLUSTER of what this agent starts and owns (join.NodeCredentials.cluster_id);
        # "" (no cluster scope): every pod labelled with this node is ours
        self.cluster = ""
        # () -> (cluster DNS IP, domain) or None: ClusterFirst pods' resolver (set by the
        # agent to its NetworkManager.pod_dns)
        self.cluster_dns: Callable[[], tuple[str, str] | None] | None = None
        # () -> the podman network pods join ("" = podman's default): the node's pod CIDR
        # bridge (set by the agent to its NetworkManager.pod_network)
        self.pod_network: Callable[[], Awaitable[str]] | None = None
        # uids of pods an agent older than the cluster label started for this node, taken
        # over because they are desired here (see list_pods)
        self._adopted: set[str] = set()
        self._service: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None
        self._reviving = asyncio.Lock()

    # ------------------------------------------------------------ the service

    async def open(self) -> str:
        """Find the API socket, or start a service; RuntimeError_ when none answers. Logs
        nothing (the agent opens it while it joins, and a refused join is one line on stderr):
        returns what it did, for the caller to log."""
        if self.endpoint:
            path = self.endpoint.removeprefix("unix://")
            if not await ping(path):
                raise RuntimeError_(f"the podman API at {self.endpoint} does not answer; "
                                    f"start it with 'podman system service' or drop "
                                    f"--container-runtime-endpoint")
            self._use(path)
            return f"podman API at {path}"
        own = socket_path_for(self.agent_dir)
        candidates = [own] if self.extra_args else [*system_sockets(), own]
        for path in candidates:
            if os.path.exists(path) and await ping(path):
                self._use(path)
                return f"podman API at {path}"
        return await self._spawn(own)

    def _use(self, path: str) -> None:
        self.socket = path
        self._session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=path, limit=0),
            timeout=aiohttp.ClientTimeout(total=None))

    async def _spawn(self, path: str) -> str:
        """Start the agent's own service on `path` and use it; what was started, to log."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a stale socket of a service that is gone
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.makedirs(self.agent_dir, exist_ok=True)
        logfile = open(os.path.join(self.agent_dir, "podman-service.log"), "ab")  # noqa: SIM115
        try:
            self._service = await asyncio.create_subprocess_exec(
                self.binary, *self.extra_args, "system", "service",
                f"--time={SERVICE_IDLE_SECONDS}", f"unix://{path}",
                stdin=asyncio.subprocess.DEVNULL, stdout=logfile, stderr=logfile)
        finally:
            logfile.close()
        for _ in range(150):
            if self._service.returncode is not None:
                break
            if os.path.exists(path) and await ping(path):
                self._use(path)
                return f"started podman API service on {path} (pid {self._service.pid})"
            await asyncio.sleep(0.1)
        raise RuntimeError_(f"podman system service did not start on {path}; see "
                            f"{os.path.join(self.agent_dir, 'podman-service.log')}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        proc, self._service = self._service, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    async def _revive(self) -> None:
        """The socket refused us: start a service again when the socket is the agent's own
        (its service was killed, or the one it reused after a restart went away); a system
        service or a given endpoint is left to its owner."""
        async with self._reviving:  # several requests fail at once: one new service
            if self.socket != socket_path_for(self.agent_dir) or await ping(self.socket):
                return
            if self._service is not None and self._service.returncode is None:
                try:  # just killed: let the child watcher see it go
                    async with asyncio.timeout(2):
                        await self._service.wait()
                except TimeoutError:
                    return  # alive but not answering: not ours to replace
            log.warning("the podman API service on %s is gone; starting it again", self.socket)
            if self._session is not None:
                await self._session.close()
                self._session = None
            log.info("%s", await self._spawn(self.socket))

    # ------------------------------------------------------------ requests

    async def _call(self, method: str, path: str, *, params: dict | None = None,
                    body=None, timeout: float | None = 120.0) -> tuple[int, bytes]:
        """One request; (status, body). A refused connection (the service restarting) is
        retried once after reviving it: nothing was sent, so nothing is done twice."""
        for attempt in (0, 1):
            if self._session is None:
                raise RuntimeError_("the podman API is not open")
            try:
                async with self._session.request(
                        method, API + path, params=params, json=body,
                        timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                    return r.status, await r.read()
            except aiohttp.ClientConnectorError as e:
                if attempt:
                    raise RuntimeError_(f"podman API: {e}") from None
                await self._revive()
            except aiohttp.ClientError as e:  # e.g. the service died mid-request
                raise RuntimeError_(f"podman API {method} {path}: {e!r}") from None
        raise AssertionError("unreachable")

    async def _json(self, method: str, path: str, *, params: dict | None = None,
                    body=None, timeout: float | None = 120.0, check: bool = True):
        status, data = await self._call(method, path, params=params, body=body,
                                        timeout=timeout)
        if status >= 300 and status != 304:
            if check:
                raise RuntimeError_(_error(status, data))
            return None
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return None

    @staticmethod
    def _filters(**f: list[str]) -> dict:
        return {"filters": json.dumps(f)}

    # ------------------------------------------------------------ images

    async def image_exists(self, image: str) -> bool:
        status, _ = await self._call("GET", f"/images/{quote(image, safe='')}/exists")
        return status == 204

    async def _pull(self, image: str) -> None:
        status, data = await self._call("POST", "/images/pull",
                                        params={"reference": image, "quiet": "true"},
                                        timeout=600)
        error = _error(status, data) if status >= 300 else ""
        for line in data.splitlines() if not error else ():
            with contextlib.suppress(ValueError, AttributeError):
                error = error or str(json.loads(line).get("error") or "")
        if error:
            raise RuntimeError_(error)

    # ------------------------------------------------------------ listing

    async def list_pods(self, claim: Collection[str] = ()) -> dict[str, dict]:
        """Our podman pods by pod uid: this node's and this cluster's, and those an agent
        older than the cluster label started for this node whose uid is in `claim` (the
        pods desired here). Such a pod is adopted once and stays ours until it is removed;
        one that is not claimed may be another cluster's and is never listed."""
        pods = await self._json("GET", "/pods/json",
                                params=self._filters(label=[self._own_label()])) or []
        out = {}
        for p in pods:
            labels = p.get("Labels") or {}
            uid = labels.get(LABEL_UID)
            if uid and self._ours(labels, claim):
                out[uid] = p
        return out

    async def list_containers(self) -> list[dict]:
        """The containers of our pods (as list_pods last decided for unlabelled ones)."""
        found = await self._json("GET", "/containers/json",
                                 params={"all": "true", **self._filters(
                                     label=[self._own_label()])}) or []
        return [c for c in found if self._ours(c.get("Labels") or {})]

    async def container_stats(self) -> dict[str, dict]:
        """One sample of every running container's counters, by container id: CPUNano
        (CPU time used since start), SystemNano (when sampled), MemUsage (bytes). All running
        containers in one request (asking for named ones fails whole when one just stopped);
        the caller keeps ours."""
        doc = await self._json("GET", "/containers/stats", params={"stream": "false"},
                               timeout=30) or {}
        return {s["ContainerID"]: s for s in doc.get("Stats") or []
                if isinstance(s, dict) and s.get("ContainerID")}

    async def _inspect_one(self, name: str) -> dict | None:
        status, data = await self._call("GET", f"/containers/{quote(name, safe='')}/json")
        if status == 404:
            status, data = await self._call("GET", f"/pods/{quote(name, safe='')}/json")
        if status != 200:
            return None
        with contextlib.suppress(ValueError):
            doc = json.loads(data)
            return doc if isinstance(doc, dict) else None
        return None

    async def inspect(self, *names_or_ids: str) -> list[dict]:
        found = await asyncio.gather(*(self._inspect_one(n) for n in names_or_ids))
        return [_slim(x) for x in found if x is not None]

    async def events(self) -> AsyncIterator[dict]:
        """The API's event stream, in the shape `podman events --format json` gives
        (Status, Attributes, Time), which the pod syncer reads."""
        if self._session is None:
            raise RuntimeError_("the podman API is not open")
        params = {"stream": "true", **self._filters(
            label=[self._own_label()], type=["container"])}
        try:
            r = await self._session.get(f"{API}/events", params=params)
        except aiohttp.ClientConnectorError:
            await self._revive()  # the syncer follows again after its backoff
            raise
        async with r:
            if r.status != 200:
                raise RuntimeError_(_error(r.status, await r.read()))
            async for line in r.content:
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    ev = json.loads(line)
                    actor = ev.get("Actor") or {}
                    if not self._ours(actor.get("Attributes") or {}):
                        continue
                    ns = int(ev.get("timeNano") or int(ev.get("time") or 0) * 10**9)
                    yield {"ID": ev.get("id") or actor.get("ID"),
                           "Status": ev.get("status") or ev.get("Action"),
                           "Type": ev.get("Type"),
                           "Attributes": actor.get("Attributes") or {},
                           "Name": (actor.get("Attributes") or {}).get("name"),
                           "Time": fmt_ns(ns)}

    # ------------------------------------------------------------ pods and containers

    def _own_label(self) -> str:
        """One podman label filter for what this node's agents started (any cluster's:
        `_ours` tells them apart, since podman cannot filter on a label's absence)."""
        return f"{LABEL_NODE}={self.node_name}" if self.node_name else LABEL_UID

    def _ours(self, labels: dict[str, str], claim: Collection[str] = ()) -> bool:
        """Whether a pod or container with these labels belongs to this agent: its cluster's,
        or one without a cluster label adopted now (its uid claimed) or before."""
        uid = labels.get(LABEL_UID)
        if not uid:
            return False
        cluster = labels.get(LABEL_CLUSTER)
        if not self.cluster or cluster == self.cluster:
            return True
        if cluster is not None:
            return False  # another cluster's, on a node of the same name
        if uid not in self._adopted and uid in claim:
            log.info("adopting pod %s/%s (%s), started by an agent before cluster labels",
                     labels.get(LABEL_NS), labels.get(LABEL_NAME), uid)
            self._adopted.add(uid)
        return uid in self._adopted

    def _label_map(self, pod: dict) -> dict[str, str]:
        md = pod["metadata"]
        labels = {LABEL_UID: md["uid"], LABEL_NS: md["namespace"], LABEL_NAME: md["name"],
                  LABEL_NODE: self.node_name}
        if self.cluster:
            labels[LABEL_CLUSTER] = self.cluster
        return labels

    async def create_sandbox(self, pod: dict) -> str:
        md, spec = pod["metadata"], pod.get("spec") or {}
        name = pod_name_for(pod)
        body: dict = {"name": name, "labels": self._label_map(pod)}
        dns = pod_dns_settings(pod, self.cluster_dns() if self.cluster_dns else None)
        if dns is not None:
            body["dns_server"], body["dns_search"], body["dns_option"] = dns
        if spec.get("hostNetwork"):
            body["netns"] = {"nsmode": "host"}
        else:
            body["hostname"] = md["name"][:63]
            network = await self.pod_network() if self.pod_network else ""
            if network:
                body["Networks"] = {network: {}}
            ports = []
            for c in spec.get("containers") or []:
                for p in c.get("ports") or []:
                    if p.get("hostPort"):
                        ports.append({"host_port": int(p["hostPort"]),
                                      "container_port": int(p["containerPort"]),
                                      "protocol": (p.get("protocol") or "TCP").lower()})
            if ports:
                body["portmappings"] = ports
        await self._json("POST", "/pods/create", body=body)
        return name

    async def run_container(self, pod: dict, c: dict, *, limits: dict | None = None,
                            grace: int = 30) -> bool:
        cname = container_name_for(pod, c["name"])
        spec: dict = {
            "name": cname, "pod": pod_name_for(pod), "image": c["image"],
            "labels": {**self._label_map(pod), LABEL_CONTAINER: c["name"]},
            "restart_policy": "no", "stop_timeout": max(0, grace),
            "env": {k: v for k, v in c.get("env") or []},
            "mounts": [{"destination": target, "source": host, "type": "bind",
                        "options": ["rbind", "ro"] if ro else ["rbind"]}
                       for host, target, ro in c.get("mounts") or []],
        }
        if c.get("workdir"):
            # created when the image lacks it, as Kubernetes runtimes do
            spec["work_dir"] = c["workdir"]
            spec["create_working_dir"] = True
        if c.get("privileged"):
            spec["privileged"] = True
        if c.get("user"):
            spec["user"] = c["user"]
        if c.get("tty"):
            spec["terminal"] = True
        if c.get("stdin"):
            spec["stdin"] = True
        if c.get("entrypoint"):
            spec["entrypoint"] = [str(a) for a in c["entrypoint"]]
        if c.get("args"):
            spec["command"] = [str(a) for a in c["args"]]
        lim: dict = {}
        if limits and limits.get("cpus"):
            lim["cpu"] = {"quota": max(1000, int(float(limits["cpus"]) * 100_000)),
                          "period": 100_000}
        if limits and limits.get("memory"):
            lim["memory"] = {"limit": int(limits["memory"])}
        try:
            await self._create_start(cname, {**spec, "resource_limits": lim} if lim else spec)
            return True
        except RuntimeError_ as e:
            await self._remove_container(cname)
            if lim and any(w in str(e).lower() for w in ("cgroup", "cpu", "memory", "swap")):
                await self._create_start(cname, spec)  # the host cannot limit: run unlimited
                return False
            self._images.discard(c["image"])  # check it again on the retry
            raise RuntimeError_(str(e), "CreateContainerError") from None

    async def _create_start(self, cname: str, spec: dict) -> None:
        await self._json("POST", "/containers/create", body=spec)
        await self._json("POST", f"/containers/{quote(cname, safe='')}/start")

    async def _remove_container(self, name: str) -> None:
        await self._json("DELETE", f"/containers/{quote(name, safe='')}",
                         params={"force": "true", "timeout": "0"}, check=False)

    async def start_container(self, name: str) -> None:
        await self._json("POST", f"/containers/{quote(name, safe='')}/start")

    async def stop_container(self, name: str, grace: int) -> None:
        """The kubelet's stop: the container's stop signal, then SIGKILL if it has not
        exited after `grace` seconds (see remove_pod for why podman's own stop does not
        do the waiting)."""
        ref = quote(name, safe="")
        if grace > 0:
            info = await self._json("GET", f"/containers/{ref}/json", check=False) or {}
            sig = (info.get("Config") or {}).get("StopSignal") or "SIGTERM"
            await self._json("POST", f"/containers/{ref}/kill", params={"signal": str(sig)},
                             check=False)
            status = 0
            with contextlib.suppress(TimeoutError, RuntimeError_):
                status, _ = await self._call("POST", f"/containers/{ref}/wait", params={
                    "condition": ["exited", "stopped"]}, timeout=grace)
            if status in (200, 404):
                return  # it exited (or is gone) within its grace period
            if status:  # the wait itself failed: podman's own stop does the waiting
                await self._json("POST", f"/containers/{ref}/stop",
                                 params={"timeout": str(grace)}, timeout=grace + 30,
                                 check=False)
                return
        await self._json("POST", f"/containers/{ref}/stop", params={"timeout": "0"},
                         timeout=30, check=False)

    async def exec_check(self, container: str, argv: list[str], timeout: float
                         ) -> tuple[int, str]:
        """A probe's exec: (exit code, first 4 KB of output); TimeoutError past `timeout`."""
        async with asyncio.timeout(timeout):
            made = await self._json("POST", f"/containers/{quote(container, safe='')}/exec",
                                    body={"AttachStdout": True, "AttachStderr": True,
                                          "Cmd": [str(a) for a in argv]})
            exec_id = (made or {}).get("Id")
            if not exec_id:
                raise RuntimeError_(f"podman API: no exec id for {container}")
            status, data = await self._call("POST", f"/exec/{exec_id}/start",
                                            body={"Detach": False}, timeout=None)
            if status >= 300:
                raise RuntimeError_(_error(status, data))
            info = await self._json("GET", f"/exec/{exec_id}/json") or {}
        out = b"".join(p for _, p in Frames().feed(data))
        code = info.get("ExitCode")
        return (code if isinstance(code, int) else 126), out[:4096].decode(errors="replace")

    async def remove_pod(self, name_or_id: str, grace: int = 30) -> None:
        """Stop the pod's app containers (their stop signal, SIGKILL after `grace` s), then
        remove the pod. Neither podman's pod stop nor its container stop waits out the grace:
        a pod stop holds the pod's lock all along, and listing pods waits for every pod's
        lock (so one slow stop would hold up every pass of the syncer); a container stop
        holds one of the service's few parallel-operation slots (3 per CPU, plus one) all
        along, so a handful of slow stops would hold up every other stop and removal. The
        agent signals, waits for the exit itself, and kills what is left."""
        ref = quote(name_or_id, safe="")
        found = await self._json("GET", "/containers/json", params={
            "all": "true", **self._filters(pod=[name_or_id])}, check=False) or []
        apps = [c["Id"] for c in found if c.get("Id") and not c.get("IsInfra")
                and str(c.get("State") or "").lower() in ("running", "paused", "stopping")]
        await asyncio.gather(*(self.stop_container(cid, grace) for cid in apps))
        await self._json("DELETE", f"/pods/{ref}", params={"force": "true"}, check=False)

    # ------------------------------------------------------------ networks

    async def network_inspect(self, name: str) -> dict | None:
        """The podman network `name` (name, subnets, network_interface, labels), None if
        there is none."""
        return await self._json("GET", f"/networks/{quote(name, safe='')}/json", check=False)

    async def network_list(self) -> list[dict]:
        return await self._json("GET", "/networks/json") or []

    async def network_create(self, name: str, subnets: list[tuple[str, str]],
                             labels: dict[str, str]) -> None:
        """A bridge network on `subnets` ((subnet, gateway) pairs: one, or an IPv4 and an
        IPv6 one for dual-stack), no podman DNS (the node answers cluster DNS itself);
        RuntimeError_ with podman's reason when refused."""
        await self._json("POST", "/networks/create", body={
            "name": name, "driver": "bridge", "labels": labels, "dns_enabled": False,
            "ipv6_enabled": any(":" in subnet for subnet, _ in subnets),
            "subnets": [{"subnet": subnet, "gateway": gateway} for subnet, gateway in subnets]})

    async def network_remove(self, name: str) -> None:
        await self._json("DELETE", f"/networks/{quote(name, safe='')}")

    async def network_users(self, name: str) -> list[dict]:
        """Containers (any state, any owner) attached to the network `name`."""
        return await self._json("GET", "/containers/json", params={
            "all": "true", **self._filters(network=[name])}) or []

    # ------------------------------------------------------------ logs

    async def logs(self, container: str, *, follow: bool = False, tail: int | None = None,
                   since: str | None = None, until: str | None = None,
                   timestamps: bool = False) -> AsyncIterator[bytes]:
        """Logs over the API, demultiplexed. With timestamps it is `podman logs`: the API
        writes whole seconds, and kubectl's --timestamps (and the agent's own log marks)
        need the nanoseconds the CLI gives."""
        if timestamps:
            async for chunk in super().logs(container, follow=follow, tail=tail, since=since,
                                            until=until, timestamps=True):
                yield chunk
            return
        if self._session is None:
            raise RuntimeError_("the podman API is not open")
        params = {"stdout": "true", "stderr": "true"}
        if follow:
            params["follow"] = "true"
        if tail is not None:
            params["tail"] = str(tail)
        if since:
            params["since"] = since
        if until:
            params["until"] = until
        if timestamps:
            params["timestamps"] = "true"
        async with self._session.get(f"{API}/containers/{quote(container, safe='')}/logs",
                                     params=params) as r:
            if r.status != 200:
                raise RuntimeError_(_error(r.status, await r.read()))
            frames = Frames(attach_noise=False)
            async for chunk in r.content.iter_any():
                out = frames.feed(chunk)
                if out:
                    yield b"".join(p for _, p in out)
