"""The agent end of the node tunnel: dials wss://server/v1-k3py/tunnel with the node cert,
reconnects with exponential backoff + jitter (capped at 10 s), ACKs after persisting, resends.
While the server's address does not answer at all (a cut link), a TCP probe a second decides
when to dial, so the tunnel is back within about a second of the link; while it refuses (the
server restarting), the probe waits for it to listen again, so a thousand nodes do not come
back up to a backoff's 10 s after it does.

When the server does not answer, the tunnel fails over to the cluster's other servers (the
endpoints of the `kubernetes` Service, as K3s's agent load balancer learns them).

Down messages go to metamanager (persist, then ACK); stream requests go to `stream_handlers`
by operation, and the node opens streams of its own (`open_stream`: connections the server
relays to another node); up messages (`send`) are queued in meta.db until cloudhub ACKs them. The paths,
headers and stream names both ends share are k3py.tunnel.protocol's."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import ssl
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable

import aiohttp
from yarl import URL

from k3py.agent.lifecycle import dropped_events_event
from k3py.agent.metamanager import MetaManager
from k3py.aio import cancel_and_wait, wait_event
from k3py.tunnel import framing
from k3py.tunnel.message import (
    EDGE,
    GROUP_RESOURCE,
    GROUP_STREAM,
    GROUP_TUNNEL,
    OP_ACK,
    OP_HELLO,
    OP_INSERT,
    OP_KEEPALIVE,
    OP_NODE_STATUS,
    Message,
    ack_for,
    keepalive,
    new_message,
    resource_key,
    stream_frame,
)
from k3py.tunnel.protocol import (
    FEATURES,
    FEATURES_HEADER,
    FRAME_CLOSE,
    FRAME_ERROR,
    HEARTBEAT,
    RESUME_HEADER,
    TUNNEL_PATH,
    features_header,
    hello_features,
)
from k3py.tunnel.reliability import RESEND_AFTER, Backoff, ReceivedWindow, SendQueue

__all__ = ["EdgeHub", "server_urls"]

log = logging.getLogger("k3py.edgehub")

# While the server's address does not answer at all (a cut link, no route), one TCP probe a
# second says when it answers again: a dial attempt made during the cut would wait for its SYN
# retransmits (1, 3, 7, 15 s apart) and could come back up to 8 s after the link did.
PROBE_EVERY = 1.0
# A server's first message on a new link is its hello; one older than its keepalive probe
# may send nothing first: after this long the agent takes it for one without features.
FIRST_MESSAGE_WAIT = HEARTBEAT
# After a refusal (the server restarting), every node probes once a second: when the port
# opens, each waits a random part of DIAL_SPREAD before dialling, so that they do not all
# dial (TLS handshake, password check, resync) within the same second.
DIAL_SPREAD = 2.0
_UNREACHABLE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ETIMEDOUT, errno.ENETDOWN,
                errno.EHOSTDOWN}

StreamHandler = Callable[[Message], Awaitable[None]]


class EdgeHub:
    def __init__(self, *, server: str, ssl_context: ssl.SSLContext, meta: MetaManager,
                 session: aiohttp.ClientSession, backoff: Backoff | None = None,
                 headers: dict[str, str] | None = None, node_name: str = "") -> None:
        self.configured = server.rstrip("/")  # --server: the first choice
        self.server = self.configured  # the server dialled now (failover moves it)
        self.headers = dict(headers or {})  # sent on every dial (the node password)
        # set when the server refuses this node for good (409: its name went to another
        # machine); dialling stops and `refused` says why
        self.fatal = asyncio.Event()
        self.refused = ""
        self.ssl = ssl_context
        self.meta = meta
        self.session = session
        self.backoff = backoff or Backoff(base=0.5, cap=10.0)
        self.queue = SendQueue()
        self.window = ReceivedWindow()
        self.connected = asyncio.Event()
        self.stream_handlers: dict[str, StreamHandler] = {}
        self.on_connect: list[Callable[[], None]] = []
        self.on_disconnect: list[Callable[[], None]] = []
        # posts the node's status when the server asks for it (NodeReporter.post_status)
        self.on_status_request: Callable[[], Awaitable[None]] | None = None
        self.connects = 0
        # the tunnel features of the server on this link (its hello; none: an older server)
        self.server_features: frozenset[str] = frozenset()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stream_tasks: dict[str, asyncio.Task] = {}
        # frames the server sends into an open stream (exec stdin, resize), by stream id
        self._stream_inputs: dict[str, asyncio.Queue] = {}
        # streams this node opened (open_stream): the server's frames, by stream id
        self._opened: dict[str, asyncio.Queue] = {}
        self.last_error = ""
        self.dial_errors: Counter[str] = Counter()  # failed dials so far, by error
        self.node_name = node_name  # the Node that an EventsDropped Event is about
        self._dropped_logged = 0    # meta.events_dropped when last logged / reported
        self._dropped_reported = 0
        self._dropped_reports = 0
        self._started = time.time()

    @property
    def url(self) -> str:
        return self.server + TUNNEL_PATH

    def speaks(self, feature: str) -> bool:
        """Whether the server on this link and this agent both have `feature`."""
        return feature in self.server_features and feature in FEATURES

    def servers(self) -> list[str]:
        """--server, then every server of the cluster: the addresses of the `kubernetes`
        Service's EndpointSlice, as the server sent it down (K3s's agent load balancer). With
        one address there, there is one server, reached as --server says (its advertised
        address may not be one this node can reach)."""
        return server_urls(self.configured,
                           self.meta.get("endpointslices", "default", "kubernetes"))

    def _fail_over(self) -> bool:
        """Dial the next server of the cluster from now on; False when there is no other."""
        servers = self.servers()
        if len(servers) < 2:
            return False
        at = servers.index(self.server) if self.server in servers else -1
        self.server = servers[(at + 1) % len(servers)]
        log.info("trying server %s", self.server)
        return True

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        for msg in self.meta.queued():
            self.queue.add(msg)
        self._task = asyncio.create_task(self._run(), name="edgehub")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._end_streams()

    def _end_streams(self) -> None:
        """Cancel the tasks serving streams: a stream lives on one websocket (the server ends
        its side when that closes), so after the link nothing reads or writes it again."""
        for t in list(self._stream_tasks.values()):
            t.cancel()
        for q in self._opened.values():
            q.put_nowait((FRAME_ERROR, {"code": 503, "message": "the tunnel disconnected"}))
        self._opened.clear()

    # ---------------------------------------------------------------- sending

    async def send(self, msg: Message, *, persisted: bool = False) -> None:
        """Reliable: persisted in meta's outbox (`persisted`: the caller did it, with writes
        of its own in the same commit), then sent whenever connected, until cloudhub ACKs.
        Queued Events beyond metamanager's cap are dropped, oldest first, and counted."""
        if not persisted:
            dropped = await self.meta.queue(msg)
            if dropped:
                self.queue.ack(dropped)  # gone from meta.db: not to be sent either
                self._log_dropped()
        self.queue.add(msg)
        self._wakeup.set()

    def _log_dropped(self) -> None:
        total = self.meta.events_dropped
        if total - self._dropped_logged >= 100 or not self._dropped_logged:
            log.warning("%d queued Events dropped so far: more than %d waited for the server",
                        total, self.meta.max_queued_events)
            self._dropped_logged = total

    async def _report_dropped(self) -> None:
        """On a reconnect, a Warning Event on the Node says how many Events were dropped
        (the agent's log said it as it happened). Its key is not an Event's, so the report
        itself never pushes a queued Event out, and a newer report replaces an unsent one."""
        dropped = self.meta.events_dropped
        if dropped <= self._dropped_reported or not self.node_name:
            return
        self._dropped_reported = dropped
        self._dropped_reports += 1
        event = dropped_events_event(
            self.node_name, name=f"{self.node_name}.eventsdropped.{int(self._started * 1e3):x}",
            dropped=dropped, cap=self.meta.max_queued_events, reports=self._dropped_reports,
            first=self._started)
        await self.send(new_message(
            source=EDGE, group=GROUP_RESOURCE, operation=OP_INSERT, key="events-dropped",
            resource=resource_key("events", "default", event["metadata"]["name"]),
            content=event))

    def send_live(self, msg: Message) -> bool:
        if self._ws is None or self._ws.closed:
            return False
        self.queue.add_live(msg)
        self._wakeup.set()
        return True

    def open_stream(self, operation: str, content: dict) -> tuple[str, asyncio.Queue] | None:
        """A stream this node opens (the server serves it: server/edge/noderelay.py):
        (stream id, the queue of the server's (frame, content)), None while not connected.
        A lost link puts an error frame in the queue."""
        sid = uuid.uuid4().hex
        queue: asyncio.Queue = asyncio.Queue()
        self._opened[sid] = queue
        if not self.send_live(new_message(source=EDGE, group=GROUP_STREAM, operation=operation,
                                          content=content, msg_id=sid)):
            del self._opened[sid]
            return None
        return sid, queue

    def close_stream(self, sid: str) -> None:
        """Stop a stream this node opened (once)."""
        if self._opened.pop(sid, None) is not None:
            self.send_live(stream_frame(sid, FRAME_CLOSE, source=EDGE))

    # ---------------------------------------------------------------- the link

    async def _retry_sleep(self, started: float, unreachable: bool = False,
                           refused: bool = False) -> None:
        """Attempts start at most one backoff delay apart: a slow failed attempt (a
        connect timing out on a cut link) counts against the wait. If the server did not
        answer at all, the next attempt waits instead until a probe gets an answer; if it
        refused (nothing listens: the server is restarting), until a probe is accepted,
        at least the backoff's first delay: a refusal costs the server nothing, and a
        backoff grown to 10 s while it restarted would keep nodes away that long after it
        is back (then a random part of DIAL_SPREAD spreads the nodes' dials)."""
        delay = self.backoff.next_delay() - (asyncio.get_running_loop().time() - started)
        if unreachable:
            await self._await_answer()
            return
        if refused:
            await asyncio.sleep(min(max(0.0, delay), self.backoff.base))
            await self._await_answer(listening=True)
            await asyncio.sleep(dial_spread())
            return
        await asyncio.sleep(max(0.0, delay))

    async def _probe(self, server: str = "", listening: bool = False) -> bool:
        """True if the server's address (`server`, else the one dialled now) answers a TCP
        connect (accepted or refused; `listening`: accepted only) within PROBE_EVERY; False if
        nothing answers (link down, no route)."""
        url = URL(server or self.server)
        try:
            async with asyncio.timeout(PROBE_EVERY):
                _, writer = await asyncio.open_connection(url.host, url.port)
        except TimeoutError:
            return False
        except OSError as e:  # refused, reset: the host is there (its server may be down)
            return not listening and e.errno not in _UNREACHABLE
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return True

    async def _await_answer(self, listening: bool = False) -> None:
        """Probe once a second until the server's address answers (`listening`: accepts a
        connection): the dial follows at once (reconnect attempts themselves still back off:
        a failing dial does). With several servers, all are probed at once and the dial goes
        to the current one if it answers, else to the first that does."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            servers = [self.server, *(s for s in self.servers() if s != self.server)]
            answers = await asyncio.gather(*(self._probe(s, listening) for s in servers))
            for server, answered in zip(servers, answers, strict=True):
                if answered:
                    if server != self.server:
                        log.info("server %s answers; dialling it", server)
                        self.server = server
                    return
            await asyncio.sleep(max(0.0, PROBE_EVERY - (loop.time() - started)))

    async def _run(self) -> None:
        while True:
            started = asyncio.get_running_loop().time()
            try:
                ws = await self.session.ws_connect(
                    self.url, ssl=self.ssl if self.ssl is not None else True, heartbeat=HEARTBEAT,
                    protocols=(framing.SUBPROTOCOL,), max_msg_size=framing.MAX_DOWN_FRAME_BYTES,
                    headers={**self.headers,
                             RESUME_HEADER: "1" if self.meta.synced else "0",
                             FEATURES_HEADER: features_header()},
                    timeout=aiohttp.ClientWSTimeout(ws_close=5.0))
            except asyncio.CancelledError:
                raise
            except aiohttp.WSServerHandshakeError as e:
                if e.status == 409:
                    self.refused = (f"the server refused this node's tunnel ({e.status}): its "
                                    f"node name now belongs to another machine (the node was "
                                    f"deleted and the name claimed again); start this agent "
                                    f"with another --node-name or --with-node-id")
                    log.error("%s", self.refused)
                    self.fatal.set()
                    return
                self._failed(f"tunnel handshake refused: {e.status} {e.message}",
                             f"HTTP {e.status}")
                self._fail_over()
                await self._retry_sleep(started)
                continue
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                self._failed(f"cannot reach {self.url}: {e or type(e).__name__}",
                             type(e).__name__)
                moved = self._fail_over()
                await self._retry_sleep(started, _unreachable(e) and not moved,
                                        _refused(e) and not moved)
                continue
            self.connects += 1
            log.info("tunnel connected to %s", self.url)
            self.backoff.reset()
            self.last_error = ""
            try:
                await self._serve(ws)
            except asyncio.CancelledError:
                with contextlib.suppress(BaseException):
                    await asyncio.shield(ws.close())
                raise
            except Exception as e:  # noqa: BLE001 - any failure of a link means: reconnect
                log.warning("tunnel failed: %s", e)
            finally:
                self._ws = None
                self.connected.clear()
                self.queue.link_reset()
                self._end_streams()
                for fn in self.on_disconnect:
                    fn()
            log.warning("tunnel to %s lost; reconnecting", self.url)
            await asyncio.sleep(self.backoff.next_delay())
            await self._await_answer()  # a cut link: dial when it answers, not into the cut

    def _failed(self, why: str, kind: str) -> None:
        self.dial_errors[kind] += 1
        if why != self.last_error:
            log.warning("%s (retrying with backoff)", why)
        self.last_error = why

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        # the server's first message is its hello, or, from a server older than features,
        # anything else (its keepalive probe, the snapshot): nothing goes up or is served
        # before it says which features the link has; a server older than its keepalive
        # probe may send nothing first (a resumed node with nothing for it): after
        # FIRST_MESSAGE_WAIT the link goes on with no features
        first = await _first_message(ws, FIRST_MESSAGE_WAIT)
        self.server_features = hello_features(first.content) \
            if first is not None and _is_hello(first) else frozenset()
        log.info("tunnel features: %s", ", ".join(sorted(self.server_features)) or "none "
                 "(the server is older than tunnel features)")
        self._ws = ws
        self.queue.link_reset()
        self.connected.set()
        for fn in self.on_connect:
            fn()
        writer = asyncio.create_task(self._write_loop(ws))
        self._wakeup.set()
        await self._report_dropped()
        try:
            if first is not None and not _is_hello(first):
                await self._received(first)
            async for frame in ws:
                if frame.type == aiohttp.WSMsgType.ERROR:  # e.g. a frame over the limit
                    log.warning("tunnel error: %s", ws.exception())
                if frame.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    msg = framing.decode(frame.data, framing.MAX_DOWN_FRAME_BYTES)
                except framing.FramingError as e:
                    log.warning("bad frame from server: %s", e)
                    continue
                await self._received(msg)
        finally:
            writer.cancel()
            with contextlib.suppress(BaseException):
                await writer

    async def _write_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async def write(msg: Message) -> None:
            await ws.send_str(framing.encode(msg))
        last_resend = time.monotonic()
        while not ws.closed:
            await wait_event(self._wakeup, RESEND_AFTER / 3)
            self._wakeup.clear()
            now = time.monotonic()
            if now - last_resend > RESEND_AFTER / 3:
                last_resend = now
                self.queue.requeue_due(now)
            await self.queue.flush(write)

    async def _received(self, msg: Message) -> None:
        group = msg.route.group
        if group == GROUP_TUNNEL:
            if msg.route.operation == OP_ACK:
                ids = (msg.content or {}).get("ids") or []
                self.queue.ack(ids)
                await self.meta.acked(ids)
            elif msg.route.operation == OP_KEEPALIVE:
                self.send_live(keepalive(msg.content, source=EDGE))
            elif msg.route.operation == OP_NODE_STATUS and self.on_status_request is not None:
                await self.on_status_request()
            return
        if group == GROUP_STREAM:
            self._stream(msg)
            return
        if group != GROUP_RESOURCE:
            return
        if not self.window.seen(msg.id):
            try:
                if not await self.meta.apply(msg):
                    log.info("ignored %s %s", msg.route.operation, msg.route.resource)
            except Exception:  # noqa: BLE001 - not persisted: no ACK, the server resends
                self.window.forget(msg.id)
                log.exception("persisting %s failed", msg.route.resource)
                return
        self.send_live(ack_for([msg.id], source=EDGE))

    def stream_input(self, stream_id: str) -> asyncio.Queue:
        """(operation, content) of the frames the server sends into stream `stream_id`."""
        return self._stream_inputs.setdefault(stream_id, asyncio.Queue())

    def _stream(self, msg: Message) -> None:
        opened = self._opened.get(msg.header.parent_id)
        if opened is not None:
            opened.put_nowait((msg.route.operation, msg.content))
            return
        if msg.route.operation == FRAME_CLOSE:
            task = self._stream_tasks.pop(msg.header.parent_id, None)
            if task is not None:
                task.cancel()
            return
        if msg.header.parent_id:
            q = self._stream_inputs.get(msg.header.parent_id)
            if q is not None:
                q.put_nowait((msg.route.operation, msg.content))
            return
        handler = self.stream_handlers.get(msg.route.operation)
        if handler is None:
            self.send_live(_stream_error(msg.id, 400, f"unsupported stream "
                                         f"{msg.route.operation!r}"))
            return

        async def run() -> None:
            try:
                await handler(msg)
            except asyncio.CancelledError:
                pass
            except Exception as e:  # noqa: BLE001 - report to the waiting client
                log.exception("stream %s failed", msg.route.operation)
                self.send_live(_stream_error(msg.id, 500, str(e) or type(e).__name__))
            finally:
                self._stream_tasks.pop(msg.id, None)
                self._stream_inputs.pop(msg.id, None)
        self.stream_input(msg.id)
        self._stream_tasks[msg.id] = asyncio.create_task(run())


def server_urls(configured: str, kubernetes_slice: dict | None) -> list[str]:
    """`configured` first, then https://ADDRESS:PORT for each endpoint of the `kubernetes`
    EndpointSlice when it has several, without repeats."""
    out = [configured]
    slice_ = kubernetes_slice or {}
    addresses = [a for ep in slice_.get("endpoints") or [] for a in ep.get("addresses") or []]
    ports = [p["port"] for p in slice_.get("ports") or [] if p.get("port")]
    if len(addresses) < 2 or not ports:
        return out
    for addr in addresses:
        host = f"[{addr}]" if ":" in addr else addr
        url = f"https://{host}:{ports[0]}"
        if url not in out:
            out.append(url)
    return out


async def _first_message(ws: aiohttp.ClientWebSocketResponse, wait: float) -> Message | None:
    """The server's first message on a new link, None if none comes within `wait` s
    (ConnectionError if the link ends first)."""
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return None
        try:
            frame = await ws.receive(timeout=left)
        except TimeoutError:
            return None
        if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                          aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            raise ConnectionError(f"the server closed the tunnel ({frame.extra or frame.type})")
        if frame.type != aiohttp.WSMsgType.TEXT:
            continue
        try:
            return framing.decode(frame.data, framing.MAX_DOWN_FRAME_BYTES)
        except framing.FramingError as e:
            log.warning("bad frame from server: %s", e)


def dial_spread() -> float:
    """A random wait in [0, DIAL_SPREAD] s between a restarted server's port opening and the
    dial."""
    return random.uniform(0.0, DIAL_SPREAD)


def _is_hello(msg: Message) -> bool:
    return msg.route.group == GROUP_TUNNEL and msg.route.operation == OP_HELLO


def _unreachable(e: BaseException) -> bool:
    """A dial that got no answer at all (as opposed to a refusal or an HTTP/TLS error)."""
    if isinstance(e, TimeoutError | aiohttp.ServerTimeoutError):
        return True
    if isinstance(e, aiohttp.ClientConnectorError):
        e = e.os_error
    return isinstance(e, OSError) and e.errno in _UNREACHABLE


def _refused(e: BaseException) -> bool:
    """A dial refused at once: the host is there, nothing listens on the port."""
    if isinstance(e, aiohttp.ClientConnectorError):
        e = e.os_error
    return isinstance(e, OSError) and e.errno == errno.ECONNREFUSED


def _stream_error(stream_id: str, code: int, message: str) -> Message:
    return stream_frame(stream_id, FRAME_ERROR, {"code": code, "message": message}, source=EDGE)
