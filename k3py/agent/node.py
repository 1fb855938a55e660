"""The agent's Node: registration (labels, taints, capacity, addresses, nodeInfo), the Ready
condition and Lease heartbeats in kube-node-lease every 10 s.

Heartbeats as upstream's kubelet sends them since node leases (KEP-589): the Lease is renewed
every 10 s; the Node's status is computed as often but posted only when it changed (heartbeat
times aside), when 5 minutes passed since it was last posted, at each (re)connect, after this
loop stalled past the lease's duration, or when the server asks (tunnel OP_NODE_STATUS: its
part of the Node's status was changed by someone else, say the node lifecycle controller
marked the node Unknown while its link stayed up). Towards a server that does not ask (older
than protocol.FEATURE_NODE_STATUS), an unchanged status still goes every 10 s.

Everything goes up through the tunnel (edgehub reliable messages, coalesced by key), not as
direct API calls: the agent needs one outbound connection only, as a KubeEdge edge node."""

from __future__ import annotations

import asyncio
import datetime as _dt
import os
import platform
import random
import shutil
import time
from collections.abc import Callable

from k3py import __version__
from k3py.aio import cancel_and_wait
from k3py.tunnel.message import EDGE, GROUP_RESOURCE, OP_INSERT, OP_UPDATE, new_message

__all__ = ["NodeReporter", "node_object", "parse_taint", "status_changed", "KUBELET_VERSION"]

KUBELET_VERSION = f"k3py/v{__version__}"  # shown by kubectl get nodes and the dashboard
# One tick for both: upstream's lease renew interval (nodeLeaseDurationSeconds / 4) and its
# nodeStatusUpdateFrequency (how often the kubelet computes the node's status) are both 10 s.
HEARTBEAT_SECONDS = 10.0
# upstream's nodeStatusReportFrequency: an unchanged status is posted this often. After a
# post that was not a periodic one (a registration, a change, a stall, the server asking) the
# next periodic one comes at a random 50-150 % of it, as upstream's kubelet since
# kubernetes#130919: a fleet that registered at once (a server restart) would otherwise post
# in the same 10 s every 5 minutes for good (kubernetes#124202: API CPU 14 -> 64 % each time).
STATUS_REPORT_SECONDS = 300.0
LEASE_DURATION = 40  # nodeLeaseDurationSeconds


def _clock() -> float:
    """Seconds on a monotonic clock that also counts the time the machine was suspended."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm"}


def _now(micro: bool = False) -> str:
    now = _dt.datetime.now(_dt.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def parse_taint(text: str) -> dict:
    """key=value:Effect or key:Effect (the --node-taint syntax of K3s and kubectl taint)."""
    body, _, effect = text.rpartition(":")
    if not body or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise ValueError(f"invalid taint {text!r}: want key[=value]:NoSchedule|"
                         f"PreferNoSchedule|NoExecute")
    key, _, value = body.partition("=")
    taint = {"key": key, "effect": effect}
    if value:
        taint["value"] = value
    return taint


def _without_heartbeats(status: dict) -> dict:
    return {**status, "conditions": [{k: v for k, v in c.items() if k != "lastHeartbeatTime"}
                                     for c in status.get("conditions") or []]}


def status_changed(posted: dict | None, status: dict) -> bool:
    """Whether `status` differs from the one `posted` last (None: none yet), the conditions'
    lastHeartbeatTime aside, as upstream's kubelet compares before it patches."""
    return posted is None or _without_heartbeats(posted) != _without_heartbeats(status)


def _memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def node_object(*, name: str, node_ip: str, labels: dict[str, str], taints: list[dict],
                runtime_version: str, data_dir: str, more_ips: list[str] | None = None) -> dict:
    """The Node this agent registers; its role label is the server's to give (a node may not
    set node-role.kubernetes.io/ labels: NodeRestriction). `more_ips`: a dual-stack node's
    address of the other family (--node-ip v4,v6), a second InternalIP as upstream."""
    more_ips = more_ips or []
    arch = _ARCH.get(platform.machine(), platform.machine())
    all_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": arch, "beta.kubernetes.io/os": "linux",
                  "beta.kubernetes.io/arch": arch}
    all_labels.update(labels)
    mem = _memory_bytes()
    try:
        disk = shutil.disk_usage(data_dir).total
    except OSError:
        disk = 0
    capacity = {"cpu": str(os.cpu_count() or 1), "memory": f"{mem // 1024}Ki",
                "pods": "110", "ephemeral-storage": f"{disk // 1024}Ki"}
    uname = platform.uname()
    spec: dict = {}
    if taints:
        spec["taints"] = taints
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": all_labels,
                     "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                                     "k3py.io/node-ip": node_ip}},
        "spec": spec,
        "status": {
            "capacity": capacity, "allocatable": dict(capacity),
            "addresses": [{"type": "InternalIP", "address": ip}
                          for ip in (node_ip, *more_ips)] + [
                              {"type": "Hostname", "address": name}],
            "nodeInfo": {"architecture": arch, "operatingSystem": "linux",
                         "kernelVersion": uname.release, "osImage": _os_image(),
                         "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": KUBELET_VERSION,
                         "containerRuntimeVersion": f"podman://{runtime_version}",
                         "machineID": _machine_id(), "systemUUID": "", "bootID": ""},
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "conditions": [],
        },
    }


def _os_image() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def _machine_id() -> str:
    try:
        with open("/etc/machine-id") as f:
            return f.read().strip()
    except OSError:
        return ""


class NodeReporter:
    """Registers the node once per connection, then renews its lease and, when due, posts its
    status."""

    def __init__(self, node: dict, send, *,
                 server_asks: Callable[[], bool] = lambda: False,
                 rand: Callable[[], float] = random.random) -> None:
        self.node = node
        self.name = node["metadata"]["name"]
        self.send = send  # async (Message) -> None
        # whether the server asks for the status of a node it sees Unknown (a server older
        # than that does not: an unchanged status then goes every 10 s, as before)
        self.server_asks = server_asks
        self._transition = _now()
        self._task: asyncio.Task | None = None
        self._posted: dict | None = None  # the status posted last
        self._posted_at = 0.0             # when (_clock)
        self._rand = rand
        self._report_after = STATUS_REPORT_SECONDS  # an unchanged status goes again after
        self._renewed = _clock()          # when the lease was last renewed

    def _ready_status(self) -> dict:
        status = dict(self.node["status"])
        now = _now()
        status["conditions"] = [
            {"type": t, "status": "False", "reason": r, "message": m,
             "lastHeartbeatTime": now, "lastTransitionTime": self._transition}
            for t, r, m in (("MemoryPressure", "KubeletHasSufficientMemory", "enough memory"),
                            ("DiskPressure", "KubeletHasNoDiskPressure", "no disk pressure"),
                            ("PIDPressure", "KubeletHasSufficientPID", "enough PIDs"))
        ] + [{"type": "Ready", "status": "True", "reason": "KubeletReady",
              "message": "k3py agent is posting ready status", "lastHeartbeatTime": now,
              "lastTransitionTime": self._transition}]
        return status

    def _posting(self, status: dict, periodic: bool = False) -> dict:
        self._posted, self._posted_at = status, _clock()
        self._report_after = STATUS_REPORT_SECONDS * (1 if periodic else 0.5 + self._rand())
        return status

    async def register(self) -> None:
        node = dict(self.node, status=self._posting(self._ready_status()))
        await self.send(new_message(source=EDGE, group=GROUP_RESOURCE, operation=OP_INSERT,
                                    resource=f"nodes//{self.name}", content=node, key="node"))
        # runs on every (re)connect: a fresh lease at once, not at the next 10 s tick
        await self.renew_lease()

    async def annotate(self, key: str, value: str) -> None:
        """Set one annotation of this node's Node (kept for every later registration)."""
        self.node["metadata"].setdefault("annotations", {})[key] = value
        await self.register()

    async def renew_lease(self) -> None:
        self._renewed = _clock()
        await self.send(new_message(
            source=EDGE, group=GROUP_RESOURCE, operation=OP_UPDATE,
            resource=f"leases/kube-node-lease/{self.name}", key="lease",
            content={"holderIdentity": self.name, "leaseDurationSeconds": LEASE_DURATION,
                     "renewTime": _now(micro=True)}))

    async def post_status(self) -> None:
        """Post the node's status now (also when the server asks for it)."""
        await self._post(self._ready_status())

    async def _post(self, status: dict, periodic: bool = False) -> None:
        await self.send(new_message(source=EDGE, group=GROUP_RESOURCE, operation=OP_UPDATE,
                                    resource=f"nodes//{self.name}/status",
                                    content=self._posting(status, periodic), key="node-status"))

    def report_due(self, status: dict, stalled: bool) -> tuple[bool, bool]:
        """Whether `status` is to be posted now, and whether that post is a periodic one."""
        if stalled or status_changed(self._posted, status):
            return True, False
        if not self.server_asks():  # a server that does not ask: every tick, as before
            return True, True
        return _clock() - self._posted_at >= self._report_after, True

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="node-heartbeat")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _loop(self) -> None:
        await self.register()
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            # this loop (or the machine) stood still for longer than the lease lasts: the
            # node may have been marked Unknown meanwhile; its status goes with the lease
            stalled = _clock() - self._renewed > LEASE_DURATION
            await self.renew_lease()
            status = self._ready_status()
            due, periodic = self.report_due(status, stalled)
            if due:
                await self._post(status, periodic)
