"""A pod's log read from its node: the request a pods/log query makes of the node (the
container chosen and checked as the kubelet does) and the log's bytes as they come.

`node_log` reads it through the node's tunnel held here; `peer_log` through the server that
holds it, on a shared datastore (its own pods/log, asked with the peers' certificates:
PeerRelay.streamed_get). Used by streams.serve_log (GET pods/<name>/log, which a peer also serves)
and the dashboard's "logs" feed (k3py.server.dashboard.logs)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from urllib.parse import quote, urlencode

import aiohttp

from k3py.api import errors
from k3py.server.edge.cloudhub import CloudHub
from k3py.server.edge.peerrelay import PeerRelay
from k3py.server.edge.streamrelay import next_frame
from k3py.tunnel.protocol import (
    FRAME_CLOSE,
    FRAME_DATA,
    FRAME_ERROR,
    STREAM_LOG,
    LogRequest,
    content_data,
)

__all__ = ["log_request", "log_query", "node_log", "peer_log"]

# the kubelet's words for the common pending failures (validateContainerLogStatus)
_WAITING_WORDS = {"ErrImagePull": "image can't be pulled",
                  "ImagePullBackOff": "trying and failing to pull image"}
_CHUNK = 64 * 1024
# s: how often a quiet followed log asks whether its client is still there (aiohttp does not
# cancel a handler whose client went; a write to it would fail, but a quiet pod writes nothing)
IDLE_CHECK = 5.0


def log_request(pod: dict, query: Mapping[str, str]) -> LogRequest:
    """What the node is asked for a pods/log `query` (its string values, as kubectl sends
    them) of `pod`; 400 Status when no container is named and the pod has several, or when
    the container has not run yet and the previous run is not asked for."""
    meta = pod.get("metadata") or {}
    name = meta.get("name") or ""
    containers = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
    container = query.get("container") or (containers[0] if len(containers) == 1 else "")
    if not container:
        raise errors.bad_request(
            f"a container name must be specified for pod {name}, choose one of: "
            f"[{' '.join(containers)}]")
    waiting = _waiting_to_start(pod, container, name)
    if waiting and query.get("previous") != "true":
        raise errors.bad_request(waiting)
    return LogRequest(
        namespace=meta.get("namespace") or "", pod=name, uid=meta.get("uid") or "",
        container=container, follow=query.get("follow") == "true",
        tail_lines=query.get("tailLines"), since_seconds=query.get("sinceSeconds"),
        since_time=query.get("sinceTime"), timestamps=query.get("timestamps") == "true",
        previous=query.get("previous") == "true", limit_bytes=query.get("limitBytes"))


def log_query(params: LogRequest) -> dict[str, str]:
    """The pods/log query that asks for `params` again (at a peer)."""
    query = {"container": params.container}
    for key, on in (("follow", params.follow), ("timestamps", params.timestamps),
                    ("previous", params.previous)):
        if on:
            query[key] = "true"
    for key, value in (("tailLines", params.tail_lines), ("sinceSeconds", params.since_seconds),
                       ("sinceTime", params.since_time), ("limitBytes", params.limit_bytes)):
        if value not in (None, ""):
            query[key] = str(value)
    return query


def _waiting_to_start(pod: dict, container: str, name: str) -> str:
    """The kubelet's 400 message when the container has not run yet (waiting, no terminated
    run before): there are no logs to read. Empty when it has run or its status is not known."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    cs = next((c for c in statuses if c.get("name") == container), None)
    if cs is None:
        return ""
    waiting = (cs.get("state") or {}).get("waiting")
    if waiting is None or (cs.get("lastState") or {}).get("terminated"):
        return ""
    reason = waiting.get("reason") or ""
    return (f'container "{container}" in pod "{name}" is waiting to start: '
            f'{_WAITING_WORDS.get(reason, reason)}')


async def _node_chunks(queue: asyncio.Queue, client_gone: Callable[[], bool] | None
                       ) -> AsyncIterator[bytes]:
    while True:
        try:  # asyncio.timeout, not wait_for: on 3.11 that could swallow a cancel
            async with asyncio.timeout(IDLE_CHECK if client_gone is not None else None):
                kind, content = await next_frame(queue)
        except TimeoutError:
            if client_gone is not None and client_gone():
                return
            continue
        if kind == FRAME_ERROR:
            raise errors.StatusError(int(content.get("code") or 500),
                                     content.get("reason") or "InternalError",
                                     content.get("message") or "log stream failed")
        if kind == FRAME_CLOSE:
            return
        if kind == FRAME_DATA:
            yield content_data(content)


@contextlib.asynccontextmanager
async def node_log(hub: CloudHub, node: str, params: LogRequest,
                   client_gone: Callable[[], bool] | None = None
                   ) -> AsyncIterator[AsyncIterator[bytes]]:
    """The log's chunks through `node`'s tunnel here, to its end (the node's error raised as
    its Status); 503 on entering when the node's tunnel is not here. The node's stream is
    closed on leaving, however it is left; with `client_gone`, also once it says the client
    went (asked every IDLE_CHECK seconds while the log is quiet)."""
    session, stream_id, queue = await hub.open_stream(node, STREAM_LOG, params.to_content())
    try:
        yield _node_chunks(queue, client_gone)
    finally:
        await hub.close_stream(session, stream_id)


async def _peer_chunks(response: aiohttp.ClientResponse, peer: str) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.content.iter_chunked(_CHUNK):
            yield chunk
    except (OSError, aiohttp.ClientError) as e:
        raise errors.service_unavailable(
            f"the log through server {peer} ended: {e or type(e).__name__}") from None


@contextlib.asynccontextmanager
async def peer_log(relay: PeerRelay, node: str, params: LogRequest
                   ) -> AsyncIterator[AsyncIterator[bytes]]:
    """The log's chunks through the peer that holds `node`'s tunnel (its pods/log); 503 on
    entering when no peer does, the peer's refusal as its Status. The request (and so the
    node's stream) is closed on leaving."""
    path = (f"/api/v1/namespaces/{quote(params.namespace, safe='')}/pods/"
            f"{quote(params.pod, safe='')}/log?{urlencode(log_query(params))}")
    async with relay.streamed_get(path, node) as (peer, response):
        yield _peer_chunks(response, peer)
