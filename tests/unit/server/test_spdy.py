"""SPDY/3.1 framing and session (k3py/server/edge/spdy.py): frames round trip split or coalesced,
header blocks compress with the SPDY/3 dictionary across blocks, sessions reply to streams,
half-close, reset, echo pings, and flow control holds writes until WINDOW_UPDATE (only for a
peer that does flow control)."""

from __future__ import annotations

import asyncio
import struct
import zlib

import pytest

from k3py.server.edge import spdy
from k3py.server.edge.spdy import (
    DATA,
    FLAG_FIN,
    GOAWAY,
    PING,
    RST_STREAM,
    SETTINGS,
    SYN_REPLY,
    SYN_STREAM,
    WINDOW_UPDATE,
    FrameParser,
    HeaderCodec,
    SpdySession,
    encode_frame,
)


def test_dictionary_is_the_spdy3_one():
    assert len(spdy.DICTIONARY) == 1423
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.DICTIONARY.endswith(b"charset=iso-8859-1,utf-,*,enq=0.")
    # the dictionary id a zlib stream made with it carries (what peers check)
    deflate = zlib.compressobj(zdict=spdy.DICTIONARY)
    head = deflate.compress(b"x") + deflate.flush(zlib.Z_SYNC_FLUSH)
    assert head[2:6] == struct.pack(">I", zlib.adler32(spdy.DICTIONARY))


def test_frames_round_trip_split_and_coalesced():
    frames = [encode_frame(SYN_STREAM, FLAG_FIN, struct.pack(">II", 1, 0) + b"\x00\x00hdr"),
              encode_frame(DATA, 0, b"hello", 1),
              encode_frame(DATA, FLAG_FIN, b"", 3),
              encode_frame(PING, 0, struct.pack(">I", 7)),
              encode_frame(DATA, 0, b"x" * 70000, 5)]
    wire = b"".join(frames)
    for step in (1, 7, len(wire)):
        parser, got = FrameParser(), []
        for i in range(0, len(wire), step):
            got += parser.feed(wire[i:i + step])
        assert [(f.type, f.flags, f.stream_id, len(f.payload)) for f in got] == [
            (SYN_STREAM, FLAG_FIN, 0, 13), (DATA, 0, 1, 5), (DATA, FLAG_FIN, 3, 0),
            (PING, 0, 0, 4), (DATA, 0, 5, 70000)]
    assert wire[:4] == b"\x80\x03\x00\x01"  # control bit, version 3, SYN_STREAM


def test_unsupported_version_is_an_error():
    bad = bytearray(encode_frame(PING, 0, b"\x00\x00\x00\x01"))
    bad[1] = 2
    with pytest.raises(spdy.SpdyError):
        FrameParser().feed(bytes(bad))


def test_header_blocks_compress_with_the_dictionary_across_blocks():
    a, b = HeaderCodec(), HeaderCodec()
    first = {"streamtype": "data", "port": "8080", "requestid": "0"}
    block1 = a.encode(first)
    assert b.decode(block1) == first
    block2 = a.encode({"streamtype": "error", "port": "8080", "requestid": "1"})
    assert len(block2) < len(block1)  # the shared zlib context remembers the first block
    assert b.decode(block2)["streamtype"] == "error"
    # a fresh inflater cannot read the second block alone: one context per direction
    with pytest.raises(spdy.SpdyError):
        HeaderCodec().decode(block2)
    # raw layout: 32-bit count, then 32-bit length-prefixed lowercase names and values
    raw = zlib.decompressobj(zdict=spdy.DICTIONARY).decompress(HeaderCodec().encode({"A": "b"}))
    assert raw == b"\x00\x00\x00\x01\x00\x00\x00\x01a\x00\x00\x00\x01b"


class Peer:
    """The client end: encodes frames for a session, decodes what it sends back."""

    def __init__(self) -> None:
        self.codec, self.parser, self.out = HeaderCodec(), FrameParser(), []
        self.streams = []
        self.session = SpdySession(self._recv, self.streams.append)

    async def _recv(self, data: bytes) -> None:
        self.out += self.parser.feed(data)

    def syn(self, sid: int, headers: dict, flags: int = 0) -> None:
        self.session.feed(encode_frame(SYN_STREAM, flags, struct.pack(">II", sid, 0)
                                       + b"\x00\x00" + self.codec.encode(headers)))

    def sent(self, type_: int) -> list:
        return [f for f in self.out if f.type == type_]


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_session_streams_reply_data_half_close_reset_ping():
    async def run() -> None:
        p = Peer()
        p.syn(1, {"streamtype": "data", "port": "80"})
        p.syn(3, {"streamtype": "error"}, flags=FLAG_FIN)
        await _settle()
        assert [st.headers["streamtype"] for st in p.streams] == ["data", "error"]
        replies = p.sent(SYN_REPLY)
        assert [struct.unpack(">I", f.payload[:4])[0] for f in replies] == [1, 3]
        data, err = p.streams
        assert await err.read() == b""  # FIN on the SYN_STREAM: nothing to read
        p.session.feed(encode_frame(DATA, 0, b"abc", 1) + encode_frame(DATA, FLAG_FIN, b"d", 1))
        assert await data.read() == b"abc"
        assert await data.read() == b"d"
        assert await data.read() == b""
        await data.write(b"x" * 40000)
        await data.close()
        chunks = [f for f in p.sent(DATA) if f.stream_id == 1]
        assert b"".join(f.payload for f in chunks) == b"x" * 40000
        assert chunks[-1].flags & FLAG_FIN and len(chunks) == 3  # 32 KiB frames, then FIN
        assert 1 not in p.session.streams  # both halves closed: forgotten
        # reset: reads end, writes fail
        p.syn(5, {"streamtype": "data"})
        await _settle()
        st = p.streams[-1]
        p.session.feed(encode_frame(RST_STREAM, 0, struct.pack(">II", 5, 5)))
        assert await st.read() == b""
        with pytest.raises(ConnectionResetError):
            await st.write(b"late")
        # client pings (odd ids) are echoed; data for an unknown stream is refused
        p.session.feed(encode_frame(PING, 0, struct.pack(">I", 9)))
        p.session.feed(encode_frame(DATA, 0, b"?", 99))
        await _settle()
        assert [f.payload for f in p.sent(PING)] == [struct.pack(">I", 9)]
        assert any(struct.unpack(">II", f.payload) == (99, 2) for f in p.sent(RST_STREAM))
        # GOAWAY from the peer ends the session
        p.session.feed(encode_frame(GOAWAY, 0, struct.pack(">II", 5, 0)))
        assert p.session.closed.is_set()
    asyncio.run(run())


def test_flow_control_only_for_a_peer_that_does_it():
    async def run() -> None:
        p = Peer()  # spdystream-like: never sends WINDOW_UPDATE, writes are not held
        p.syn(1, {"streamtype": "data"})
        await _settle()
        await asyncio.wait_for(p.streams[0].write(b"a" * 200000), 5)

        p = Peer()  # announces its window: 40000 bytes, then updates
        p.session.feed(encode_frame(SETTINGS, 0, struct.pack(">III", 1, 7, 40000)))
        p.syn(1, {"streamtype": "data"})
        await _settle()
        st = p.streams[0]
        writer = asyncio.ensure_future(st.write(b"b" * 100000))
        await _settle()
        assert not writer.done()
        assert sum(len(f.payload) for f in p.sent(DATA)) == 40000
        p.session.feed(encode_frame(WINDOW_UPDATE, 0, struct.pack(">II", 1, 30000)))
        await _settle()
        assert sum(len(f.payload) for f in p.sent(DATA)) == 70000
        p.session.feed(encode_frame(WINDOW_UPDATE, 0, struct.pack(">II", 1, 30000)))
        await asyncio.wait_for(writer, 5)
        assert sum(len(f.payload) for f in p.sent(DATA)) == 100000
        # receiving: the session gives window back as the application reads
        p.session.feed(encode_frame(DATA, 0, b"c" * 40000, 1))
        assert len(await st.read()) == 40000
        await _settle()
        updates = [struct.unpack(">II", f.payload) for f in p.sent(WINDOW_UPDATE)]
        assert updates == [(1, 40000)]
        # a peer overrunning its window gets the stream reset
        p.session.feed(encode_frame(DATA, 0, b"d" * 70000, 1))
        await _settle()
        assert any(struct.unpack(">II", f.payload) == (1, spdy.RST_FLOW_CONTROL_ERROR)
                   for f in p.sent(RST_STREAM))
    asyncio.run(run())
