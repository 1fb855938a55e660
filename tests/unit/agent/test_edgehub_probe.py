"""Dialling after a cut link: edgehub tells "nothing answers" (probe once a second, dial when
it answers) from "refused" (the server process is down: plain backoff), so a link that
returns is used at once instead of after the dial's SYN retransmits."""

from __future__ import annotations

import asyncio
import errno
import socket

import aiohttp
import pytest

from k3py.agent.edgehub import EdgeHub, _unreachable

pytestmark = pytest.mark.unit


def _hub(url: str) -> EdgeHub:
    return EdgeHub(server=url, ssl_context=None, meta=None, session=None)  # type: ignore[arg-type]


def test_unreachable_classification():
    assert _unreachable(TimeoutError())
    assert _unreachable(OSError(errno.ENETUNREACH, "unreachable"))
    assert _unreachable(OSError(errno.EHOSTUNREACH, "no route"))
    assert not _unreachable(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
    assert not _unreachable(aiohttp.ClientError("handshake"))


async def test_probe_answers_for_a_listener_and_a_refusal():
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await _hub(f"https://127.0.0.1:{port}")._probe()
    finally:
        server.close()
        await server.wait_closed()
    with socket.socket() as s:  # a port nobody listens on: refused, i.e. the host answers
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert await _hub(f"https://127.0.0.1:{free}")._probe()
