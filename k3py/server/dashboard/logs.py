"""The dashboard's "logs" feed on the tab's websocket (live.py): the logs of one pod, or of a
workload's pods in one stream, on the tab's one connection (a browser opens at most six
HTTP/1.1 connections to a server, so a stream per pod would cap the pods shown).

The tab asks {"op": "logs", "id": ID, "namespace": NS, "pods": [NAME, ...] (at most
MAX_PODS, as `kubectl logs -f -l` refuses more than --max-log-requests), "container": C?
(else each pod's first), "follow": bool?, "previous": bool?, "tailLines": N?}; each pod is
authorized as GET pods/<name>/log is (`get pods/log`), all before any is opened. Each pod's
log is read with timestamps as podlogs.py reads it for kubectl: through its node's tunnel
here, or through the server that holds it (on a shared datastore: at most
MAX_PEER_LOGS_PER_USER of a user's logs at once, whatever tabs they are in; a pod's log beyond
ends with the 429's message). The tab gets {"reset": true} first (after a reconnect it shows
the log afresh), then at most MAX_FLUSHES_PER_SECOND batches a second (LogBatch): {"lines":
[[POD, "TIMESTAMP text"], ...], "dropped": n?, "ended": [[POD, ""|error], ...]?}, POD the
pod's index in "pods". A batch holds at most MAX_BATCH_BYTES; when the tab falls behind the
oldest lines go and "dropped" counts them. Every pod's stream is closed when the tab cancels,
the socket closes or the session ends (the feed's task is cancelled)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from k3py.aio import cancel_and_wait
from k3py.api import errors
from k3py.server.apiserver.auth import AuthorizerChain, User
from k3py.server.edge.cloudhub import CloudHub
from k3py.server.edge.peerrelay import PeerRelay
from k3py.server.edge.podlogs import log_request, node_log, peer_log
from k3py.server.edge.streamrelay import scheduled_pod
from k3py.server.quota import Quota

__all__ = ["LogsFeed", "LogsQuery", "LogBatch", "MAX_PODS", "MAX_TAIL_LINES",
           "MAX_BATCH_BYTES", "MAX_LINE_BYTES", "MAX_PEER_LOGS_PER_USER"]

log = logging.getLogger("k3py.dashboard")

MAX_PODS = 50  # streams one feed opens
# a user's logs through the other servers at once, whatever tabs they are in: this server opens
# MAX_STREAMED_GETS to them for all its users together, so one user's two workload views
# cannot take them all
MAX_PEER_LOGS_PER_USER = 50
MAX_TAIL_LINES = 10_000  # per pod
MAX_NAME = 253
MAX_BATCH_BYTES = 2 * 1024 * 1024  # held for the tab between two flushes (with _LINE_COST)
_LINE_COST = 128  # a line's memory beside its text (its tuple and str objects)
MAX_LINE_BYTES = 16 * 1024  # longer lines are cut there, as "…" says


@dataclass(frozen=True, slots=True)
class LogsQuery:
    """A "logs" message, checked: 400 Status saying what is wrong."""

    namespace: str
    pods: tuple[str, ...]
    container: str = ""
    follow: bool = False
    previous: bool = False
    tail_lines: int | None = None

    @classmethod
    def parse(cls, msg: dict) -> LogsQuery:
        namespace, pods = msg.get("namespace"), msg.get("pods")
        if not _name(namespace):
            raise errors.bad_request('logs need a "namespace"')
        if not isinstance(pods, list) or not pods or not all(_name(p) for p in pods):
            raise errors.bad_request('logs need "pods": a list of pod names')
        if len(pods) > MAX_PODS:
            raise errors.bad_request(f"logs of {len(pods)} pods asked: at most {MAX_PODS} "
                                     "in one stream")
        if len(set(pods)) != len(pods):
            raise errors.bad_request('"pods" names a pod twice')
        container = msg.get("container") or ""
        if container and not _name(container):
            raise errors.bad_request('"container" is a container name')
        flags = {key: msg.get(key, False) for key in ("follow", "previous")}
        if not all(isinstance(v, bool) for v in flags.values()):
            raise errors.bad_request('"follow" and "previous" are true or false')
        tail = msg.get("tailLines")
        if tail is not None and (isinstance(tail, bool) or not isinstance(tail, int)
                                 or not 0 <= tail <= MAX_TAIL_LINES):
            raise errors.bad_request(f'"tailLines" is a whole number from 0 to '
                                     f'{MAX_TAIL_LINES}')
        return cls(namespace, tuple(pods), container, flags["follow"], flags["previous"],
                   tail)

    def pod_query(self, pod: dict) -> dict[str, str]:
        """The pods/log query for one pod (its first container unless one is named)."""
        containers = (pod.get("spec") or {}).get("containers") or [{}]
        query = {"container": self.container or containers[0].get("name") or "",
                 "timestamps": "true"}
        if self.previous:
            query["previous"] = "true"
        elif self.follow:
            query["follow"] = "true"
        if self.tail_lines is not None:
            query["tailLines"] = str(self.tail_lines)
        return query


def _name(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_NAME


class _PodLines:
    """One pod's line still being written (bytes after its last newline), and whether the
    rest of a line too long is being skipped."""

    __slots__ = ("partial", "skipping")

    def __init__(self) -> None:
        self.partial = b""
        self.skipping = False


class LogBatch:
    """The lines the pods' streams gave since the tab's last batch (no I/O: the feed's
    readers `add` and `end`, its sender `take`s). Lines are split on newlines, each pod's own,
    cut at MAX_LINE_BYTES; at most `budget` bytes are held (a line costs its text and
    _LINE_COST), the oldest dropped beyond that."""

    def __init__(self, pods: int, budget: int = MAX_BATCH_BYTES,
                 max_line: int = MAX_LINE_BYTES) -> None:
        self.budget, self.max_line = budget, max_line
        self._pods = [_PodLines() for _ in range(pods)]
        self._lines: deque[tuple[int, str]] = deque()
        self._held = 0
        self._dropped = 0
        self._ended: list[list] = []
        self.open = pods  # streams not ended yet
        self.ready = asyncio.Event()  # something to take

    def add(self, pod: int, chunk: bytes) -> None:
        state = self._pods[pod]
        *lines, rest = (state.partial + chunk).split(b"\n")
        for raw in lines:
            if not state.skipping:
                self._line(pod, raw)
            state.skipping = False
        if len(rest) > self.max_line and not state.skipping:
            self._line(pod, rest)  # cut there; the rest of it is skipped
            state.skipping = True
        state.partial = b"" if state.skipping else rest

    def end(self, pod: int, error: str = "") -> None:
        """The pod's stream ended: its last line, unless empty, and why (an error, or "")."""
        state = self._pods[pod]
        if state.partial:
            self._line(pod, state.partial)
        state.partial, state.skipping = b"", False
        self._ended.append([pod, error])
        self.open -= 1
        self.ready.set()

    @property
    def done(self) -> bool:
        """Every stream ended and all was taken."""
        return self.open == 0 and not self._lines and not self._ended and not self._dropped

    def take(self) -> dict:
        """The batch for the tab, emptied here (the next starts)."""
        batch: dict = {"lines": [list(line) for line in self._lines]}
        if self._dropped:
            batch["dropped"] = self._dropped
        if self._ended:
            batch["ended"] = self._ended
        self._lines, self._held, self._dropped, self._ended = deque(), 0, 0, []
        self.ready.clear()
        return batch

    def _line(self, pod: int, raw: bytes) -> None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        text = raw[:self.max_line].decode("utf-8", "replace")
        if len(raw) > self.max_line:
            text += "…"
        self._lines.append((pod, text))
        self._held += len(text) + _LINE_COST
        while self._held > self.budget:
            _, old = self._lines.popleft()
            self._held -= len(old) + _LINE_COST
            self._dropped += 1
        self.ready.set()


class LogsFeed:
    """The "logs" feed (LiveSocket's `feeds`), over CloudHub's node tunnels and, on a shared
    datastore, the peers'."""

    def __init__(self, authorizer: AuthorizerChain, hub: CloudHub, interval: float,
                 peers: PeerRelay | None = None) -> None:
        self.authorizer, self.hub, self.interval, self.peers = authorizer, hub, interval, peers
        self.peer_logs = Quota(  # user name -> logs read through the other servers
            MAX_PEER_LOGS_PER_USER,
            f"at most {MAX_PEER_LOGS_PER_USER} logs per user are followed through the other "
            "servers at once: close another log view (in any tab) first")

    async def feed(self, user: User, msg: dict) -> AsyncGenerator[dict, None]:
        query = LogsQuery.parse(msg)
        for name in query.pods:
            self.authorizer.authorize(user, "get", "", "pods", query.namespace, name, "log")
        batch = LogBatch(len(query.pods))
        readers = [asyncio.create_task(self._read(user, batch, index, query))
                   for index in range(len(query.pods))]
        try:
            yield {"reset": True}
            while not batch.done:
                await batch.ready.wait()
                yield batch.take()
                await asyncio.sleep(self.interval)
        finally:
            for reader in readers:
                await cancel_and_wait(reader)

    async def _read(self, user: User, batch: LogBatch, index: int, query: LogsQuery) -> None:
        """One pod's log into `batch`, to its end; an error ends it with its message."""
        error = ""
        try:
            pod, node = await scheduled_pod(self.hub, query.namespace, query.pods[index])
            params = log_request(pod, query.pod_query(pod))
            source = node_log(self.hub, node, params) \
                if self.peers is None or self.hub.node_connected(node) \
                else self.peer_logs.around(user.name, peer_log(self.peers, node, params))
            async with source as chunks:
                async for chunk in chunks:
                    batch.add(index, chunk)
        except errors.StatusError as e:
            error = e.message
        except Exception as e:  # noqa: BLE001 - one pod's failure ends that pod's log only
            log.exception("the dashboard's log of pod %s/%s", query.namespace,
                          query.pods[index])
            error = f"internal error: {e or type(e).__name__}"
        finally:  # also when cancelled: the feed is ending then, nothing waits for the pod
            batch.end(index, error)
