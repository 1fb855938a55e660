"""Dialling after a cut link: edgehub tells "nothing answers" (probe once a second, dial when
it answers) from "refused" (the server process is down: probe once a second until it listens
again), so a link that returns is used at once instead of after the dial's SYN retransmits,
and a restarted server at once instead of after a backoff grown while it was down."""

from __future__ import annotations

import asyncio
import errno
import socket

import aiohttp
import pytest

from k3py.agent.edgehub import DIAL_SPREAD, EdgeHub, _refused, _unreachable, dial_spread

pytestmark = pytest.mark.unit


def _hub(url: str) -> EdgeHub:
    return EdgeHub(server=url, ssl_context=None, meta=None, session=None)  # type: ignore[arg-type]


def test_unreachable_classification():
    assert _unreachable(TimeoutError())
    assert _unreachable(OSError(errno.ENETUNREACH, "unreachable"))
    assert _unreachable(OSError(errno.EHOSTUNREACH, "no route"))
    assert not _unreachable(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
    assert not _unreachable(aiohttp.ClientError("handshake"))
    assert _refused(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
    assert not _refused(TimeoutError()) and not _refused(aiohttp.ClientError("handshake"))


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
    assert not await _hub(f"https://127.0.0.1:{free}")._probe(listening=True)


async def test_after_a_refusal_the_dial_waits_for_the_server_to_listen_not_the_backoff():
    """A backoff grown to its cap while the server restarted: the next dial still goes
    within about a probe's second (and the dial spread) of the port listening again."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hub = _hub_with(f"https://127.0.0.1:{port}", _Meta([]))
    hub.backoff.failures = 64  # 10 s of backoff
    loop = asyncio.get_running_loop()
    waiting = asyncio.create_task(hub._retry_sleep(loop.time(), refused=True))
    await asyncio.sleep(1.5)
    assert not waiting.done()  # refused all along: it waits
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
    try:
        await asyncio.wait_for(waiting, 2 + DIAL_SPREAD)
    finally:
        server.close()
        await server.wait_closed()


def test_the_dial_after_a_restart_waits_a_bounded_random_spread():
    """Nodes that all saw the port open in the same second do not all dial in it."""
    spreads = [dial_spread() for _ in range(200)]
    assert all(0.0 <= s <= DIAL_SPREAD for s in spreads)
    assert len(set(spreads)) > 100 and max(spreads) - min(spreads) > DIAL_SPREAD / 2


class _Meta:
    """What edgehub reads of metamanager to fail over: the `kubernetes` EndpointSlice."""

    def __init__(self, addresses: list[str], port: int = 6443) -> None:
        self.slice = {"endpoints": [{"addresses": [a]} for a in addresses],
                      "ports": [{"name": "https", "port": port}]}

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        return self.slice if (kind, namespace, name) == ("endpointslices", "default",
                                                         "kubernetes") else None


def test_servers_are_the_given_one_then_the_kubernetes_endpoints():
    given = "https://10.0.0.1:6443"
    assert _hub_with(given, _Meta(["10.0.0.1", "10.0.0.2", "fd00::3"])).servers() == [
        given, "https://10.0.0.2:6443", "https://[fd00::3]:6443"]
    # one address: one server, reached as --server says (its advertised address may be one
    # this node cannot reach, e.g. behind NAT)
    assert _hub_with(given, _Meta(["192.168.1.5"])).servers() == [given]
    assert _hub_with(given, _Meta([])).servers() == [given]


async def test_waiting_for_an_answer_picks_a_server_that_answers():
    hub = _hub_with("https://10.0.0.1:6443", _Meta(["10.0.0.1", "10.0.0.2", "10.0.0.3"]))
    answering = {"https://10.0.0.3:6443"}
    probed: list[str] = []

    async def probe(server: str = "", listening: bool = False) -> bool:  # .1, .2: a cut link
        probed.append(server)
        return server in answering
    hub._probe = probe  # type: ignore[method-assign]
    await asyncio.wait_for(hub._await_answer(), 5)
    assert hub.server == "https://10.0.0.3:6443" and len(probed) == 3
    answering.add("https://10.0.0.2:6443")  # the current one is kept while it answers
    await asyncio.wait_for(hub._await_answer(), 5)
    assert hub.server == "https://10.0.0.3:6443"


def test_fail_over_cycles_through_the_servers():
    hub = _hub_with("https://a:6443", _Meta(["10.0.0.2", "10.0.0.3"]))
    seen = []
    for _ in range(3):
        assert hub._fail_over()
        seen.append(hub.server)
    assert seen == ["https://10.0.0.2:6443", "https://10.0.0.3:6443", "https://a:6443"]
    assert hub.url == "https://a:6443/v1-k3py/tunnel"
    assert not _hub_with("https://a:6443", _Meta([]))._fail_over()


def _hub_with(url: str, meta: _Meta) -> EdgeHub:
    return EdgeHub(server=url, ssl_context=None, meta=meta, session=None)  # type: ignore[arg-type]
