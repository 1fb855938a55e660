"""The node's DNS server: answers the cluster zone from ClusterRecords (records.py) and
forwards every other name to the host's resolvers, with a small cache, over UDP and TCP.

Messages are parsed and built with dnspython. Answers in the cluster zone are authoritative
(AA); forwarded answers are relayed with their own flags and cached until their smallest TTL
(capped at MAX_CACHE_TTL, negative answers NEGATIVE_TTL), at most CACHE_ENTRIES of them.
A UDP answer larger than the client's limit (512 bytes, or its EDNS payload size) is sent
truncated (TC), and the client retries over TCP, as with any DNS server. When no upstream
answers (the node is offline and so is its uplink) a forwarded name gets SERVFAIL, and the
cluster zone keeps answering from the node's cache."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections import OrderedDict
from collections.abc import Callable

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype

from k3py.agent.network.records import ClusterRecords

__all__ = ["DNSServer", "host_resolvers"]

log = logging.getLogger("k3py.dns")

CACHE_ENTRIES = 2048
MAX_CACHE_TTL = 300
NEGATIVE_TTL = 30
FORWARD_TIMEOUT = 2.0
TCP_IDLE_SECONDS = 10.0
MAX_TCP_CLIENTS = 64


def host_resolvers(path: str = "/etc/resolv.conf", *,
                   exclude: tuple[str, ...] = ()) -> list[tuple[str, int]]:
    """(address, port 53) of each nameserver of the host's resolv.conf, without `exclude`
    (our own address)."""
    out = []
    with contextlib.suppress(OSError):
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver" and parts[1] not in exclude:
                    out.append((parts[1], 53))
    return out


class _Cache:
    def __init__(self, size: int = CACHE_ENTRIES) -> None:
        self.size = size
        self._data: OrderedDict[tuple, tuple[float, dns.message.Message]] = OrderedDict()

    def get(self, key: tuple) -> dns.message.Message | None:
        hit = self._data.get(key)
        if hit is None:
            return None
        if hit[0] < time.monotonic():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return hit[1]

    def put(self, key: tuple, msg: dns.message.Message) -> None:
        ttls = [rr.ttl for section in (msg.answer, msg.authority) for rr in section]
        if msg.rcode() == dns.rcode.NOERROR and msg.answer:
            ttl = min([*ttls, MAX_CACHE_TTL])
        elif msg.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            ttl = min([*ttls, NEGATIVE_TTL])
        else:
            return  # SERVFAIL, REFUSED...: not cached
        if ttl <= 0:
            return
        self._data[key] = (time.monotonic() + ttl, msg)
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)


class DNSServer:
    """`await start(host, port)`; `await stop()`. `records` is read at each query, so updates
    to it are answered at once."""

    def __init__(self, records: ClusterRecords,
                 upstreams: Callable[[], list[tuple[str, int]]] | None = None) -> None:
        self.records = records
        self.upstreams = upstreams or host_resolvers
        self.cache = _Cache()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.base_events.Server | None = None
        self._tcp_clients: set[asyncio.Task] = set()
        self.queries = 0

    async def start(self, host: str, port: int) -> None:
        """Listen on UDP and TCP `port` (0: a free port, the same for both)."""
        loop = asyncio.get_running_loop()
        for attempt in range(20 if port == 0 else 1):
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: _UDP(self), local_addr=(host, port))
            try:
                self._tcp = await asyncio.start_server(self._tcp_client, host, self.port,
                                                       reuse_address=True)
                return
            except OSError:
                self._udp.close()
                if attempt == 19 or port != 0:
                    raise
            except BaseException:
                self._udp.close()
                raise

    @property
    def port(self) -> int:
        assert self._udp is not None
        return self._udp.get_extra_info("sockname")[1]

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            for t in list(self._tcp_clients):
                t.cancel()
            await self._tcp.wait_closed()

    # ---------------------------------------------------------------- resolving

    async def resolve(self, wire: bytes) -> tuple[dns.message.Message | None, int]:
        """(response, its UDP size limit); None when the query cannot even be parsed."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return _formerr(wire), 512
        self.queries += 1
        limit = max(512, query.payload) if query.edns >= 0 else 512
        if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
            resp = dns.message.make_response(query)
            resp.set_rcode(dns.rcode.NOTIMP if query.opcode() != dns.opcode.QUERY
                           else dns.rcode.FORMERR)
            return resp, limit
        q = query.question[0]
        found = self.records.answer(q.name, q.rdtype)
        if found.authoritative:
            resp = dns.message.make_response(query, recursion_available=True)
            resp.flags |= dns.flags.AA
            if not found.exists:
                resp.set_rcode(dns.rcode.NXDOMAIN)
            resp.answer.extend(found.answer)
            if found.soa is not None:
                resp.authority.append(found.soa)
            return resp, limit
        return await self._forward(query), limit

    async def _forward(self, query: dns.message.Message) -> dns.message.Message:
        q = query.question[0]
        key = (q.name, q.rdtype, q.rdclass, bool(query.flags & dns.flags.CD))
        cached = self.cache.get(key)
        if cached is not None:
            return _relay(query, cached)
        out = dns.message.make_query(q.name, q.rdtype, q.rdclass, use_edns=0, payload=1232)
        out.flags = query.flags & (dns.flags.RD | dns.flags.CD)
        for server, port in self.upstreams():
            try:
                got, _ = await dns.asyncquery.udp_with_fallback(
                    out, server, port=port, timeout=FORWARD_TIMEOUT)
            except (dns.exception.DNSException, OSError) as e:
                log.debug("forwarding %s to %s: %s", q.name, server, e)
                continue
            self.cache.put(key, got)
            return _relay(query, got)
        resp = dns.message.make_response(query, recursion_available=True)
        resp.set_rcode(dns.rcode.SERVFAIL)
        return resp

    # ---------------------------------------------------------------- TCP

    async def _tcp_client(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._tcp_clients) >= MAX_TCP_CLIENTS:
            writer.close()
            return
        assert task is not None
        self._tcp_clients.add(task)
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE_SECONDS):
                    head = await reader.readexactly(2)
                async with asyncio.timeout(TCP_IDLE_SECONDS):
                    wire = await reader.readexactly(struct.unpack("!H", head)[0])
                resp, _ = await self.resolve(wire)
                if resp is None:
                    return
                writer.write(resp.to_wire(prepend_length=True))
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            self._tcp_clients.discard(task)
            writer.close()


class _UDP(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        self._pending: set[asyncio.Task] = set()

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        task = asyncio.ensure_future(self._answer(data, addr))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _answer(self, data: bytes, addr) -> None:
        try:
            resp, limit = await self.server.resolve(data)
            if resp is not None and self.transport is not None:
                self.transport.sendto(resp.to_wire(max_size=limit, prefer_truncation=True),
                                      addr)
        except Exception:  # noqa: BLE001 - one bad query must not stop the server
            log.exception("answering a DNS query from %s", addr)


def _relay(query: dns.message.Message, got: dns.message.Message) -> dns.message.Message:
    """The upstream answer, for this query (its id, question and EDNS)."""
    resp = dns.message.make_response(query)
    resp.flags |= got.flags & (dns.flags.RA | dns.flags.AD | dns.flags.CD)
    resp.set_rcode(got.rcode())
    resp.answer = list(got.answer)
    resp.authority = list(got.authority)
    resp.additional = [rr for rr in got.additional if rr.rdtype != dns.rdatatype.OPT]
    return resp


def _formerr(wire: bytes) -> dns.message.Message | None:
    """FORMERR for a query whose header parses, None for garbage (no answer at all)."""
    if len(wire) < 12:
        return None
    try:
        msg = dns.message.Message(id=struct.unpack("!H", wire[:2])[0])
    except Exception:  # noqa: BLE001
        return None
    msg.flags = dns.flags.QR
    msg.set_rcode(dns.rcode.FORMERR)
    return msg
