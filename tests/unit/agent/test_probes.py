"""probes.check against real local listeners: httpGet status codes, headers and named ports,
tcpSocket open/closed, exec exit codes; and ContainerProbes readiness/liveness verdicts."""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web

from k3py.agent.pods.probes import ContainerProbes, check
from tests.unit.conftest import serve_app


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _serve(handler) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return await serve_app(app)


async def _no_exec(argv, timeout):
    raise AssertionError("not an exec probe")


def test_http_and_tcp_checks():
    async def main():
        seen = {}

        async def handler(request):
            seen.update(request.headers)
            return web.Response(status=int(request.match_info["tail"] or 200))
        runner, port = await _serve(handler)
        try:
            c = {"ports": [{"name": "web", "containerPort": port}]}

            async def http(path):
                probe = {"httpGet": {"path": path, "port": "web",
                                     "httpHeaders": [{"name": "X-A", "value": "b"}]}}
                return await check(probe, container=c, host="127.0.0.1", exec_fn=_no_exec,
                                   timeout=2)
            assert await http("/204") == (True, "")
            assert await http("/302") == (True, "")  # redirects are not followed: success
            assert await http("/404") == (False, "HTTP probe failed with statuscode: 404")
            assert seen["X-A"] == "b" and seen["User-Agent"].startswith("kube-probe/")
            ok, _ = await check({"tcpSocket": {"port": port}}, container=c, host="127.0.0.1",
                                exec_fn=_no_exec, timeout=2)
            assert ok
            closed = _closed_port()
            ok, why = await check({"tcpSocket": {"port": closed}}, container=c,
                                  host="127.0.0.1", exec_fn=_no_exec, timeout=2)
            assert not ok and why.startswith(f"dial tcp 127.0.0.1:{closed}:")
            ok, why = await check({"httpGet": {"port": closed}}, container=c, host="127.0.0.1",
                                  exec_fn=_no_exec, timeout=2)
            assert not ok and why.startswith(f'Get "http://127.0.0.1:{closed}/"')
        finally:
            await runner.cleanup()
    asyncio.run(main())


def test_exec_check_and_probe_verdicts():
    async def main():
        state = {"rc": 1}

        async def exec_fn(argv, timeout):
            return state["rc"], "" if state["rc"] == 0 else "not yet\n"
        ok, why = await check({"exec": {"command": ["x"]}}, container={}, host="",
                              exec_fn=exec_fn, timeout=1)
        assert (ok, why) == (False, "not yet")
        changes, unhealthy, kills = [], [], []
        spec = {"readinessProbe": {"exec": {"command": ["r"]}, "periodSeconds": 1,
                                   "failureThreshold": 1},
                "livenessProbe": {"exec": {"command": ["l"]}, "periodSeconds": 1,
                                  "failureThreshold": 2}}
        p = ContainerProbes(spec, host="", exec_fn=exec_fn,
                            on_change=lambda: changes.append(p.ready),
                            on_unhealthy=lambda kind, msg: unhealthy.append(msg),
                            on_kill=kills.append)
        assert p.started and not p.ready
        p.start()
        for _ in range(100):  # two failing liveness checks a second apart: killed
            if kills:
                break
            await asyncio.sleep(0.1)
        assert kills == ["Container failed liveness probe, will be restarted"]
        assert "Liveness probe failed: not yet" in unhealthy
        assert "Readiness probe failed: not yet" in unhealthy
        p.stop()
        state["rc"] = 0
        q = ContainerProbes({"readinessProbe": spec["readinessProbe"]}, host="",
                            exec_fn=exec_fn, on_change=lambda: changes.append(q.ready),
                            on_unhealthy=lambda kind, msg: None, on_kill=kills.append)
        q.start()
        for _ in range(100):
            if q.ready:
                break
            await asyncio.sleep(0.05)
        assert q.ready and changes[-1] is True
        q.stop()
    asyncio.run(main())
