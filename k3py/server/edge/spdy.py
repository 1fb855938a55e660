"""A SPDY/3.1 session, server side: what kubectl speaks for port-forward (raw or tunneled in
websocket binary messages) and for exec/attach when websockets are turned off.

Transport-agnostic: feed() it the received bytes, it calls `send` (an async callable) with the
bytes to write. Only the parts Kubernetes' streams use are implemented: client-initiated
streams (auto-replied with SYN_REPLY), half-close by FIN, RST_STREAM, PING echo, GOAWAY,
SETTINGS and per-stream flow control. Go's spdystream (kubectl, kubelet) never sends
WINDOW_UPDATE, so flow control is enforced only once the peer has shown it does it (sent a
WINDOW_UPDATE or an INITIAL_WINDOW_SIZE setting); otherwise a 64 KiB window would stall."""

from __future__ import annotations

import asyncio
import logging
import struct
import zlib
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

__all__ = [
    "DICTIONARY", "VERSION", "SpdyError", "Frame", "FrameParser", "HeaderCodec",
    "encode_frame", "SpdySession", "SpdyStream",
    "SYN_STREAM", "SYN_REPLY", "RST_STREAM", "SETTINGS", "PING", "GOAWAY", "HEADERS",
    "WINDOW_UPDATE", "DATA", "FLAG_FIN", "FLAG_UNIDIRECTIONAL",
]

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS = 1, 2, 3, 4
PING, GOAWAY, HEADERS, WINDOW_UPDATE = 6, 7, 8, 9
DATA = 0  # not a control type: marks a data frame in Frame.type
FLAG_FIN, FLAG_UNIDIRECTIONAL = 0x01, 0x02
RST_PROTOCOL_ERROR, RST_INVALID_STREAM, RST_CANCEL = 1, 2, 5
RST_FLOW_CONTROL_ERROR = 7
SETTINGS_INITIAL_WINDOW_SIZE = 7
DEFAULT_WINDOW = 65536
MAX_DATA = 0xFFFFFF
CHUNK = 32768  # DATA frames we send carry at most this much

_HEADER = struct.Struct(">IB3s")


def _dictionary() -> bytes:
    """The SPDY/3 header-compression dictionary (draft 3, 2.6.10.1): length-prefixed words,
    then a run of status lines, dates and media types. zlib checks it by Adler-32, so it
    must be byte exact."""
    words = (
        "options head post put delete trace accept accept-charset accept-encoding "
        "accept-language accept-ranges age allow authorization cache-control connection "
        "content-base content-encoding content-language content-length content-location "
        "content-md5 content-range content-type date etag expect expires from host if-match "
        "if-modified-since if-none-match if-range if-unmodified-since last-modified location "
        "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after "
        "server te trailer transfer-encoding upgrade user-agent vary via warning "
        "www-authenticate method get status").split()
    words += ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive",
              "origin"]
    out = b"".join(struct.pack(">I", len(w)) + w.encode() for w in words)
    tail = (
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417"
        "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently"
        "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error"
        "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct "
        "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,"
        "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
        "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8"
        "charset=iso-8859-1,utf-,*,enq=0.")
    return out + tail.encode()


DICTIONARY = _dictionary()


class SpdyError(Exception):
    """A malformed frame or header block: the session cannot go on."""


class Frame:
    """One decoded frame. Control frames: type, flags, payload (raw bytes after the 8-byte
    header). Data frames: type DATA, stream_id, flags, payload."""

    __slots__ = ("type", "flags", "payload", "stream_id")

    def __init__(self, type_: int, flags: int, payload: bytes, stream_id: int = 0) -> None:
        self.type, self.flags, self.payload, self.stream_id = type_, flags, payload, stream_id

    def __repr__(self) -> str:
        return (f"Frame(type={self.type}, flags={self.flags}, stream={self.stream_id}, "
                f"{len(self.payload)} bytes)")


def encode_frame(type_: int, flags: int, payload: bytes, stream_id: int = 0) -> bytes:
    """Bytes of one frame; type DATA makes a data frame for `stream_id`."""
    if len(payload) > MAX_DATA:
        raise SpdyError(f"frame payload of {len(payload)} bytes is too large")
    length = len(payload).to_bytes(3, "big")
    if type_ == DATA:
        return _HEADER.pack(stream_id & 0x7FFFFFFF, flags, length) + payload
    return _HEADER.pack(0x80000000 | (VERSION << 16) | type_, flags, length) + payload


class FrameParser:
    """Splits a byte stream into frames (they may arrive split or coalesced)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames = []
        while len(self._buf) >= 8:
            first, flags, length3 = _HEADER.unpack_from(self._buf)
            length = int.from_bytes(length3, "big")
            if len(self._buf) < 8 + length:
                break
            payload = bytes(self._buf[8:8 + length])
            del self._buf[:8 + length]
            if first & 0x80000000:
                version = (first >> 16) & 0x7FFF
                if version != VERSION:
                    raise SpdyError(f"unsupported SPDY version {version}")
                frames.append(Frame(first & 0xFFFF, flags, payload))
            else:
                frames.append(Frame(DATA, flags, payload, first & 0x7FFFFFFF))
        return frames


class HeaderCodec:
    """Name/value header blocks, zlib-compressed with the SPDY/3 dictionary: one compression
    context per direction for the whole session, each block ending in a sync flush."""

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 8,
                                         zlib.Z_DEFAULT_STRATEGY, DICTIONARY)
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)

    def encode(self, headers: dict[str, str]) -> bytes:
        raw = bytearray(struct.pack(">I", len(headers)))
        for name, value in headers.items():
            n, v = name.lower().encode(), str(value).encode()
            raw += struct.pack(">I", len(n)) + n + struct.pack(">I", len(v)) + v
        return self._deflate.compress(bytes(raw)) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def decode(self, block: bytes) -> dict[str, str]:
        """name -> value (several values of one name stay joined by NUL, as on the wire)."""
        try:
            raw = self._inflate.decompress(block) if block else b""
        except zlib.error as e:
            raise SpdyError(f"bad header block: {e}") from e
        if not raw:
            return {}
        try:
            (count,), pos, headers = struct.unpack_from(">I", raw), 4, {}
            for _ in range(count):
                (ln,) = struct.unpack_from(">I", raw, pos)
                name = raw[pos + 4:pos + 4 + ln].decode()
                pos += 4 + ln
                (lv,) = struct.unpack_from(">I", raw, pos)
                value = raw[pos + 4:pos + 4 + lv].decode()
                pos += 4 + lv
                if pos > len(raw):
                    raise SpdyError("truncated header block")
                headers[name] = value
        except (struct.error, UnicodeDecodeError) as e:
            raise SpdyError(f"bad header block: {e}") from e
        return headers


class SpdyStream:
    """One client-initiated stream: read() what the peer sends until its FIN (b""), write()
    within the send window, close() our half."""

    def __init__(self, session: SpdySession, stream_id: int, headers: dict[str, str],
                 *, remote_fin: bool, unidirectional: bool) -> None:
        self.session, self.id, self.headers = session, stream_id, headers
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self.remote_closed = remote_fin
        self.local_closed = unidirectional
        self.reset = False
        self.send_window = session.initial_send_window
        self.recv_window = DEFAULT_WINDOW
        self._unacked = 0  # bytes read by the application, not yet given back
        self._window_open = asyncio.Event()
        self._window_open.set()
        if remote_fin:
            self._chunks.put_nowait(b"")

    async def read(self) -> bytes:
        """The next chunk the peer sent; b"" once it half-closed or reset the stream."""
        if self.reset and self._chunks.empty():
            return b""
        data = await self._chunks.get()
        if not data:
            self._chunks.put_nowait(b"")  # stays at EOF
            return b""
        await self.session._consumed(self, len(data))
        return data

    async def write(self, data: bytes) -> None:
        """Send `data` in DATA frames; waits for window when the peer does flow control."""
        view = memoryview(data)
        while view:
            if self.reset or self.local_closed:
                raise ConnectionResetError(f"stream {self.id} is closed")
            if self.session.peer_flow_control and self.send_window <= 0:
                self._window_open.clear()
                await self._window_open.wait()
                continue
            n = min(len(view), CHUNK)
            if self.session.peer_flow_control:
                n = min(n, self.send_window)
            self.send_window -= n
            await self.session._send(encode_frame(DATA, 0, bytes(view[:n]), self.id))
            view = view[n:]

    async def close(self) -> None:
        """Half-close: an empty DATA frame with FIN (idempotent)."""
        if self.local_closed or self.reset:
            return
        self.local_closed = True
        await self.session._send(encode_frame(DATA, FLAG_FIN, b"", self.id))
        self.session._maybe_forget(self)

    async def rst(self, status: int = RST_CANCEL) -> None:
        if self.reset:
            return
        self._on_reset()
        await self.session._send(encode_frame(RST_STREAM, 0,
                                              struct.pack(">II", self.id, status)))

    def _on_remote_data(self, data: bytes, fin: bool) -> None:
        if self.remote_closed:
            return
        if data:
            self._chunks.put_nowait(data)
        if fin:
            self.remote_closed = True
            self._chunks.put_nowait(b"")

    def _on_reset(self) -> None:
        self.reset = True
        self.remote_closed = self.local_closed = True
        self._chunks.put_nowait(b"")
        self._window_open.set()
        self.session.streams.pop(self.id, None)


StreamCallback = Callable[[SpdyStream], None]


class SpdySession:
    """The server end of one SPDY/3.1 connection."""

    def __init__(self, send: Callable[[bytes], Awaitable[None]], on_stream: StreamCallback,
                 *, auto_reply: bool = True) -> None:
        self._send_raw = send
        self._on_stream = on_stream
        self._auto_reply = auto_reply
        self._parser = FrameParser()
        self._codec = HeaderCodec()
        self._lock = asyncio.Lock()
        self.streams: dict[int, SpdyStream] = {}
        self.last_stream_id = 0
        self.initial_send_window = DEFAULT_WINDOW
        self.peer_flow_control = False
        self.closed = asyncio.Event()  # set on GOAWAY from the peer, on EOF or on error
        self._goaway_sent = False
        self._pending: list[Awaitable] = []

    # ------------------------------------------------------------------ input

    def feed(self, data: bytes) -> None:
        """Bytes received from the transport; frames are handled in order."""
        if self.closed.is_set():
            return
        try:
            for frame in self._parser.feed(data):
                self._handle(frame)
        except SpdyError as e:
            log.info("spdy: closing the session: %s", e)
            self._spawn(self.goaway(status=1))
            self.feed_eof()

    def feed_eof(self) -> None:
        """The transport ended: every stream reads EOF."""
        for st in list(self.streams.values()):
            st._on_reset()
        self.closed.set()

    def _handle(self, f: Frame) -> None:
        if f.type == DATA:
            st = self.streams.get(f.stream_id)
            if st is None:
                self._spawn(self._rst(f.stream_id, RST_INVALID_STREAM))
                return
            if self.peer_flow_control:
                st.recv_window -= len(f.payload)
                if st.recv_window < 0:
                    self._spawn(st.rst(RST_FLOW_CONTROL_ERROR))
                    return
            st._on_remote_data(f.payload, bool(f.flags & FLAG_FIN))
            self._maybe_forget(st)
        elif f.type == SYN_STREAM:
            if len(f.payload) < 10:
                raise SpdyError("short SYN_STREAM")
            sid, _assoc = struct.unpack_from(">II", f.payload)
            sid &= 0x7FFFFFFF
            headers = self._codec.decode(f.payload[10:])  # decode always: shared zlib state
            if sid in self.streams or sid % 2 == 0 or sid <= self.last_stream_id:
                self._spawn(self._rst(sid, RST_PROTOCOL_ERROR))
                return
            self.last_stream_id = sid
            st = SpdyStream(self, sid, headers, remote_fin=bool(f.flags & FLAG_FIN),
                            unidirectional=bool(f.flags & FLAG_UNIDIRECTIONAL))
            self.streams[sid] = st
            if self._auto_reply:
                self._spawn(self.reply(st))
            self._on_stream(st)
        elif f.type == RST_STREAM:
            sid, _status = struct.unpack_from(">II", f.payload)
            st = self.streams.get(sid & 0x7FFFFFFF)
            if st is not None:
                st._on_reset()
        elif f.type == SETTINGS:
            (count,) = struct.unpack_from(">I", f.payload)
            for i in range(count):
                idflags, value = struct.unpack_from(">II", f.payload, 4 + 8 * i)
                if idflags & 0xFFFFFF == SETTINGS_INITIAL_WINDOW_SIZE:
                    self._new_initial_window(value)
        elif f.type == PING:
            (pid,) = struct.unpack_from(">I", f.payload)
            if pid % 2 == 1:  # the client's ping (ours would be even): echo it
                self._spawn(self._send(encode_frame(PING, 0, f.payload[:4])))
        elif f.type == GOAWAY:
            self._goaway_sent = True  # no need to answer
            self.feed_eof()
        elif f.type == HEADERS:
            self._codec.decode(f.payload[4:])
        elif f.type == WINDOW_UPDATE:
            sid, delta = struct.unpack_from(">II", f.payload)
            self.peer_flow_control = True
            st = self.streams.get(sid & 0x7FFFFFFF)
            if st is not None:
                st.send_window += delta & 0x7FFFFFFF
                st._window_open.set()

    def _new_initial_window(self, value: int) -> None:
        self.peer_flow_control = True
        delta = value - self.initial_send_window
        self.initial_send_window = value
        for st in self.streams.values():
            st.send_window += delta
            st._window_open.set()

    # ----------------------------------------------------------------- output

    async def _send(self, data: bytes) -> None:
        async with self._lock:  # frames must not interleave
            await self._send_raw(data)

    async def reply(self, st: SpdyStream, headers: dict[str, str] | None = None,
                    *, fin: bool = False) -> None:
        async with self._lock:  # header compression state follows the wire order
            block = self._codec.encode(headers or {})
            await self._send_raw(encode_frame(SYN_REPLY, FLAG_FIN if fin else 0,
                                              struct.pack(">I", st.id) + block))

    async def _rst(self, sid: int, status: int) -> None:
        await self._send(encode_frame(RST_STREAM, 0, struct.pack(">II", sid, status)))

    async def goaway(self, status: int = 0) -> None:
        if self._goaway_sent:
            return
        self._goaway_sent = True
        try:
            await self._send(encode_frame(GOAWAY, 0,
                                          struct.pack(">II", self.last_stream_id, status)))
        except (ConnectionError, RuntimeError):
            pass

    async def _consumed(self, st: SpdyStream, n: int) -> None:
        """Give window back once half of it was read (only to a flow-controlling peer)."""
        if not self.peer_flow_control:
            return
        st._unacked += n
        if st._unacked >= DEFAULT_WINDOW // 2 and not st.remote_closed:
            delta, st._unacked = st._unacked, 0
            st.recv_window += delta
            await self._send(encode_frame(WINDOW_UPDATE, 0, struct.pack(">II", st.id, delta)))

    def _maybe_forget(self, st: SpdyStream) -> None:
        if st.local_closed and st.remote_closed:
            self.streams.pop(st.id, None)

    def _spawn(self, coro: Awaitable) -> None:
        task = asyncio.ensure_future(coro)
        self._pending.append(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future) -> None:
        self._pending.remove(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("spdy: send failed: %s", task.exception())
