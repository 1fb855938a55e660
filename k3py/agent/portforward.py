"""Port-forward, agent side: connect to a port on localhost INSIDE the pod's network
namespace, like kubelet/CRI do, so a server bound to 127.0.0.1 in the pod is reachable.

The socket is created by a short-lived thread that setns()es into the infra container's
network namespace (a socket belongs to the namespace it was created in) and straight back;
connecting and relaying then happen on the event loop as for any socket. hostNetwork pods
share the host's namespace, so their socket is an ordinary one."""

from __future__ import annotations

import asyncio
import ctypes
import errno as errno_
import os
import socket
import threading

from k3py.agent.edgehub import EdgeHub
from k3py.agent.runtime.libpod import LibpodAPI
from k3py.agent.runtime.podman import RuntimeError_, pod_name_for
from k3py.agent.streamrelay import relay_stream
from k3py.tunnel.message import EDGE, stream_frame
from k3py.tunnel.protocol import (
    FRAME_ERROR,
)

__all__ = ["forward_port", "sockets_in_netns"]

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
# pod uid -> infra pid: saves two podman calls per forwarded connection
_infra_pids: dict[str, int] = {}


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


def _sockets_here(families: tuple[int, ...]) -> list[socket.socket]:
    return [socket.socket(f, socket.SOCK_STREAM) for f in families]


def _sockets_in(pid: int, families: tuple[int, ...]) -> list[socket.socket]:
    """Runs in its own thread: setns is per thread, and a thread that could not switch back
    must not serve anything else (it just ends)."""
    own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    except OSError:
        os.close(own)
        raise
    try:
        _setns(target)
        try:
            return _sockets_here(families)
        finally:
            _setns(own)
    finally:
        os.close(own)
        os.close(target)


async def sockets_in_netns(pid: int, families: tuple[int, ...]) -> list[socket.socket]:
    """Unconnected TCP sockets of `families` in the network namespace of process `pid`."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future = loop.create_future()

    def work() -> None:
        try:
            result = _sockets_in(pid, families)
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
            err = e
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_exception(err))
            return

        def deliver() -> None:
            if fut.done():
                for s in result:
                    s.close()
            else:
                fut.set_result(result)
        loop.call_soon_threadsafe(deliver)
    threading.Thread(target=work, name="k3py-netns", daemon=True).start()
    return await fut


async def _infra_pid(runtime: LibpodAPI, pod: dict) -> int:
    uid = pod["metadata"]["uid"]
    pid = _infra_pids.get(uid)
    if pid and os.path.exists(f"/proc/{pid}/ns/net"):
        return pid
    found = await runtime.inspect(pod_name_for(pod))
    infra = (found[0].get("InfraContainerID") or "") if found else ""
    if not infra:
        raise OSError(errno_.ENOENT, "the pod has no infra container")
    found = await runtime.inspect(infra)
    pid = int(((found[0].get("State") or {}).get("Pid") or 0) if found else 0)
    if pid <= 0:
        raise OSError(errno_.ESRCH, "the pod's infra container is not running")
    _infra_pids[uid] = pid
    return pid


async def _connect(runtime: LibpodAPI, pod: dict, port: int) -> socket.socket:
    """A socket connected to localhost:port as seen from inside the pod (IPv4, then IPv6)."""
    families = (socket.AF_INET, socket.AF_INET6)
    if (pod.get("spec") or {}).get("hostNetwork"):
        socks = _sockets_here(families)
    else:
        pid = await _infra_pid(runtime, pod)
        try:
            socks = await sockets_in_netns(pid, families)
        except OSError:
            _infra_pids.pop(pod["metadata"]["uid"], None)
            raise
    loop = asyncio.get_running_loop()
    last: OSError | None = None
    for s, host in zip(socks, ("127.0.0.1", "::1"), strict=True):
        s.setblocking(False)
        try:
            await loop.sock_connect(s, (host, port))
        except OSError as e:
            s.close()
            last = last or e
            continue
        for other in socks:
            if other is not s:
                other.close()
        return s
    assert last is not None
    _infra_pids.pop(pod["metadata"]["uid"], None)  # a stale pid must not stick around
    raise last


async def forward_port(hub: EdgeHub, runtime: LibpodAPI, sid: str, pod: dict, port: int, *,
                       flow: bool) -> None:
    """Relay tunnel stream `sid` to localhost:`port` in the pod: "data" frames both ways,
    flow controlled when `flow` (the request's: "credit" frames, as connect streams; an older
    server sends none), "data-close" half-closes toward the pod, "close" when the pod side
    ends, "error" when the connection cannot be made."""
    if not 0 < port < 65536:
        hub.send_live(stream_frame(sid, FRAME_ERROR, {"message": f"invalid port {port}"},
                                   source=EDGE))
        return
    try:
        sock = await _connect(runtime, pod, port)
    except (OSError, RuntimeError_, ValueError) as e:
        msg = os.strerror(e.errno).lower() if isinstance(e, OSError) and e.errno else str(e)
        hub.send_live(stream_frame(sid, FRAME_ERROR, {
            "message": f"failed to connect to localhost:{port} inside namespace of pod "
                       f"{pod['metadata']['name']}: {msg}"}, source=EDGE))
        return
    reader, writer = await asyncio.open_connection(sock=sock)
    await relay_stream(hub, sid, hub.stream_input(sid), reader, writer, flow_control=flow)
