"""What every pod stream relay shares: the pod and its node, with the Status a kubelet or
kube-apiserver answers when the stream cannot start, and the node's next frame on a stream.

Used by the handlers in streams.py (logs, exec, attach) and portforward.py, and by the
dashboard's logs feed; the frames come from the node's session through CloudHub (cloudhub.py,
nodestreams.py)."""

from __future__ import annotations

import asyncio

from k3py.api import errors
from k3py.server.apiserver.paths import ResourcePath
from k3py.server.edge.cloudhub import CloudHub
from k3py.server.edge.downstream import node_of

__all__ = ["next_frame", "scheduled_pod", "stream_target"]

async def next_frame(queue: asyncio.Queue, until: asyncio.Future | None = None
                      ) -> tuple[str, dict] | None:
    """The node's next frame on a stream as (kind, content dict), or None when `until` (the
    client's side of the relay) ends first."""
    if until is None:
        kind, content = await queue.get()
    else:
        getter = asyncio.ensure_future(queue.get())
        done, _ = await asyncio.wait({getter, until}, return_when=asyncio.FIRST_COMPLETED)
        if getter not in done:
            getter.cancel()
            return None
        kind, content = getter.result()
    return kind, content if isinstance(content, dict) else {"message": str(content)}


async def scheduled_pod(hub: CloudHub, namespace: str | None, name: str | None
                        ) -> tuple[dict, str]:
    """The pod and its node: 404 without the pod, 400 while it is not scheduled."""
    pod = await hub.registry.get(hub.registry.served("", "pods"), namespace, name or "")
    node = node_of(pod)
    if not node:
        raise errors.bad_request(f'pod "{name}" is not scheduled to a node yet')
    return pod, node


async def stream_target(hub: CloudHub, rp: ResourcePath, what: str) -> tuple[dict, str]:
    """The pod and its node, or the Status a kubelet/apiserver would answer: 404 no pod,
    400 not scheduled / completed, 503 node not connected."""
    pod, node = await scheduled_pod(hub, rp.namespace, rp.name)
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        raise errors.bad_request(f"cannot {what} a container in a completed pod; "
                                 f"current phase is {phase}")
    if not hub.node_connected(node):
        raise errors.service_unavailable(f"node {node} is not connected to the server")
    return pod, node
