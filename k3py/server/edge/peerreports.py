"""The nodes' live reports shared between servers on one datastore, so that each sees every
node as metrics-server does: the usage reports (kubectl top, the HPA controller on the leader,
the dashboard's metrics history) and the MQTT summaries (the dashboard's MQTT figures) that the
nodes connected here send up their tunnel, and their tunnels' figures on each change (the
dashboard's tunnel column, peertunnels.py; a link going down too) go to every peer (PeerRelay's servers with a current
apiserver Lease, authenticated both ways as for streams).

A server batches what its own nodes reported in the last SEND_EVERY seconds, the newest per
node and kind, into one POST to PEER_REPORTS_PATH on each peer (at most MAX_ENTRIES reports
and MAX_BODY bytes a POST); a peer records them as if from the node, the newest winning, and
never sends them on, so a report crosses one hop and nothing loops. A peer seen for the first
time, or reachable again after failing, is sent the newest report of every node connected
here, so it does not wait for the nodes' next reports (an MQTT summary may be 30 s away). A
shared MQTT summary or tunnel goes when its server is no longer a live peer or has not
refreshed it for a while (SUMMARY_STALE, peertunnels.TUNNEL_STALE). A
peer that fails costs one warning per outage; the tunnel only ever puts a report in a dict.

Fed by CloudHub.report_listeners (the node tunnel); the route is served to peers only (403
for any other user, even an admin). Installed by k3py.server.bootstrap on a shared datastore."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from k3py.aio import cancel_and_wait
from k3py.api import errors
from k3py.server.edge.mqttstats import MqttFigures
from k3py.server.edge.peerrelay import PeerError, PeerRelay
from k3py.server.edge.peertunnels import TUNNEL_KIND, TUNNEL_STALE, PeerTunnels, TunnelReport
from k3py.server.store.backend import StoreError
from k3py.tunnel.mqtt import MQTT_KIND, MqttSummary
from k3py.tunnel.protocol import METRICS_KIND, UsageReport

if TYPE_CHECKING:
    from k3py.server.metrics.store import UsageStore

__all__ = ["PeerReports", "SharedReport", "PEER_REPORTS_PATH", "SEND_EVERY", "MAX_ENTRIES",
           "MAX_BODY", "encode_batches", "decode_batch"]

log = logging.getLogger("k3py.edge")

PEER_REPORTS_PATH = "/v1-k3py/peer-reports"
SEND_EVERY = 1.0  # seconds between batches to a peer
PEERS_EVERY = 5.0  # seconds between looks at the apiserver Leases for the live peers
RETRY_EVERY = 5.0  # seconds between tries of a peer that failed
POST_TIMEOUT = 5.0  # seconds a POST may take
MAX_ENTRIES = 100  # reports a POST: reading 100 of 20 pods each holds the loop ~45 ms
MAX_BODY = 2 * 1024 * 1024  # bytes of one POST (the API takes up to 3 MiB)
OWN_KEPT = 120.0  # seconds a node's newest report is kept for the peers seen later
SUMMARY_STALE = 90.0  # a shared MQTT summary not refreshed for 3 of the agent's 30 s is gone
_NAME_LIMIT = 253

_PARSERS: dict[str, Any] = {METRICS_KIND: UsageReport.from_content,
                            MQTT_KIND: MqttSummary.from_content,
                            TUNNEL_KIND: TunnelReport.from_content}


@dataclass(frozen=True, slots=True)
class SharedReport:
    """One node's report of one kind (METRICS_KIND, MQTT_KIND, TUNNEL_KIND: its tunnel's
    figures); `report` None: the node's MQTT summary is gone (its link went down on the
    server that had it)."""

    kind: str
    node: str
    report: UsageReport | MqttSummary | TunnelReport | None

    def to_content(self) -> dict:
        return {"kind": self.kind, "node": self.node,
                "content": self.report.to_content() if self.report is not None else None}

    @classmethod
    def from_content(cls, c: Any) -> SharedReport | None:
        """ValueError when `c` is not a report; None for a kind this server does not know
        (a newer peer may share more)."""
        if not isinstance(c, dict):
            raise ValueError("a report is an object")
        kind, node, content = c.get("kind"), c.get("node"), c.get("content")
        if not isinstance(node, str) or not node or len(node) > _NAME_LIMIT:
            raise ValueError("a report needs the node's name")
        if kind not in _PARSERS:
            return None
        if content is None:
            if kind != MQTT_KIND:
                raise ValueError(f"a {kind} report needs its content")
            return cls(kind, node, None)
        return cls(kind, node, _PARSERS[kind](content))


def encode_batches(server: str, reports: Iterable[SharedReport]) -> Iterator[bytes]:
    """The bodies of the POSTs that carry `reports` from `server` (its advertise address):
    at most MAX_ENTRIES reports and about MAX_BODY bytes each; a report that alone is larger
    is left out, with a warning. Each report is encoded once: the bytes measured are the
    bytes sent (an orjson.Fragment in the body)."""
    chunk: list[orjson.Fragment] = []
    size = 0
    for r in reports:
        try:
            encoded = orjson.dumps(r.to_content())
        except orjson.JSONEncodeError as e:  # parsing bounds its numbers: never expected
            log.warning("node %s: its %s report cannot be shared: %s", r.node, r.kind, e)
            continue
        n = len(encoded) + 1
        if n > MAX_BODY - 1024:
            log.warning("node %s: its %s report (%d bytes) is too large to share with the "
                        "other servers", r.node, r.kind, n)
            continue
        if chunk and (len(chunk) >= MAX_ENTRIES or size + n > MAX_BODY - 1024):
            yield orjson.dumps({"server": server, "reports": chunk})
            chunk, size = [], 0
        chunk.append(orjson.Fragment(encoded))
        size += n
    if chunk:
        yield orjson.dumps({"server": server, "reports": chunk})


def decode_batch(body: bytes) -> tuple[str, list[SharedReport]]:
    """The sending server and its reports (one it cannot read is left out, logged); ValueError
    saying what is wrong with the batch itself."""
    try:
        batch = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(batch, dict) or not isinstance(batch.get("reports"), list):
        raise ValueError('a batch is an object with a list of "reports"')
    server = batch.get("server")
    if not isinstance(server, str) or not server or len(server) > _NAME_LIMIT:
        raise ValueError('a batch names its "server"')
    if len(batch["reports"]) > MAX_ENTRIES:
        raise ValueError(f"a batch holds at most {MAX_ENTRIES} reports")
    out = []
    for i, c in enumerate(batch["reports"]):
        try:
            r = SharedReport.from_content(c)
        except ValueError as e:  # one bad report (a peer of another version) costs only itself
            log.debug("server %s shared a report this server refuses: reports[%d]: %s",
                      server, i, e)
            continue
        if r is not None:
            out.append(r)
    return server, out


Key = tuple[str, str]  # kind, node


class _Link:
    """What is to go to one peer, and the POSTs taking it there, one batch at a time."""

    def __init__(self, owner: PeerReports, peer: str, pending: dict[Key, SharedReport]
                 ) -> None:
        self.owner, self.peer, self.pending = owner, peer, pending
        self.failing = False
        self.next_try = 0.0
        self.task: asyncio.Task | None = None

    def kick(self, now: float) -> None:
        if self.pending and (self.task is None or self.task.done()) and now >= self.next_try:
            self.task = asyncio.create_task(self._send(), name=f"peer-reports-{self.peer}")

    async def _send(self) -> None:
        batch, self.pending = self.pending, {}
        if self.failing:  # it may have missed any report since: the newest of all
            batch = {**self.owner.newest(), **batch}
        try:
            for body in encode_batches(self.owner.relay.address, batch.values()):
                await self.owner.relay.post(self.peer, PEER_REPORTS_PATH, body, POST_TIMEOUT)
        except Exception as e:  # noqa: BLE001 - whatever it was, the link retries
            if not isinstance(e, PeerError):
                log.exception("sharing the nodes' reports with server %s failed", self.peer)
            if not self.failing:
                log.warning("sharing the nodes' reports with server %s: %s (retrying every "
                            "%g s while its apiserver Lease is current)", self.peer, e,
                            RETRY_EVERY)
            self.failing = True
            self.next_try = time.monotonic() + RETRY_EVERY
            return
        if self.failing:
            log.info("sharing the nodes' reports with server %s again", self.peer)
        self.failing = False

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()


class PeerReports:
    """Shares the reports of the nodes connected here (`share`), and records the peers'
    (`receive`) into `usage` (None: metrics-server is disabled here), `mqtt` and `tunnels`."""

    def __init__(self, relay: PeerRelay, usage: UsageStore | None, mqtt: MqttFigures,
                 tunnels: PeerTunnels) -> None:
        self.relay, self.usage, self.mqtt, self.tunnels = relay, usage, mqtt, tunnels
        self._own: dict[Key, tuple[SharedReport, float]] = {}  # newest, its monotonic time
        self._links: dict[str, _Link] = {}
        self._task: asyncio.Task | None = None

    # ---------------------------------------------------------------- this server's nodes

    def share(self, kind: str, node: str,
              report: UsageReport | MqttSummary | TunnelReport | None) -> None:
        """A report a node connected here sent (None: its MQTT summary is gone); for the
        peers in the next batch. Called on the event loop by the tunnel: never waits."""
        r = SharedReport(kind, node, report)
        key = (kind, node)
        if report is None:
            self._own.pop(key, None)
        else:
            self._own[key] = (r, time.monotonic())
        for link in self._links.values():
            link.pending[key] = r

    def newest(self) -> dict[Key, SharedReport]:
        """The newest report of every node connected here lately, by kind."""
        return {key: r for key, (r, _) in self._own.items()}

    # ---------------------------------------------------------------- the loop

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="peer-reports")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        for link in self._links.values():
            await cancel_and_wait(link.task)

    async def _run(self) -> None:
        looked = float("-inf")
        while True:
            now = time.monotonic()
            try:
                if now - looked >= PEERS_EVERY:
                    looked = now
                    await self._look_for_peers(now)
                for link in self._links.values():
                    link.kick(now)
            except Exception:  # noqa: BLE001 - sharing must go on
                log.exception("sharing the nodes' reports with the other servers")
            await asyncio.sleep(SEND_EVERY)

    async def _look_for_peers(self, now: float) -> None:
        """Links to the live peers (a new one starts with every node's newest report); the
        summaries and tunnels shared by servers gone, or not refreshed, and old reports of
        nodes no longer here are dropped."""
        try:
            live = set(await self.relay.peers())
        except (errors.StatusError, StoreError, OSError) as e:  # the datastore is away
            log.debug("the live servers: %s", e)
            return
        for peer in set(self._links) - live:
            self._links.pop(peer).cancel()
        for peer in live - set(self._links):
            self._links[peer] = _Link(self, peer, self.newest())
        for key in [k for k, (_, at) in self._own.items() if now - at > OWN_KEPT]:
            del self._own[key]
        self.mqtt.expire(live, now - SUMMARY_STALE)
        self.tunnels.expire(live, now - TUNNEL_STALE)

    # ---------------------------------------------------------------- the peers' nodes

    async def receive(self, request: web.Request) -> web.Response:
        """POST PEER_REPORTS_PATH: a peer's batch, recorded as if its nodes had sent it."""
        self.relay.require_peer(request, "share node reports")
        if (request.content_length or 0) > MAX_BODY:
            raise errors.request_entity_too_large(f"a batch is at most {MAX_BODY} bytes")
        body = await request.read()
        if len(body) > MAX_BODY:
            raise errors.request_entity_too_large(f"a batch is at most {MAX_BODY} bytes")
        try:
            server, reports = decode_batch(body)
        except ValueError as e:
            raise errors.bad_request(f"node reports: {e}") from None
        for r in reports:
            self._record(server, r)
        return web.Response(status=204)

    def _record(self, server: str, r: SharedReport) -> None:
        if isinstance(r.report, UsageReport):
            if self.usage is not None:
                self.usage.record(r.node, r.report, newer_only=True)
        elif isinstance(r.report, MqttSummary):
            self.mqtt.record(r.node, r.report, via=server)
        elif isinstance(r.report, TunnelReport):
            self.tunnels.record(r.node, server, r.report)
        else:
            self.mqtt.forget(r.node, via=server)
