"""Interactive exec and attach over podman's libpod REST API: the request is written on a
unix socket of our own, and after podman's `101 UPGRADED` the connection is hijacked into a
raw bidirectional stream (stdin in; stdout/stderr out, framed unless there is a tty).

Why not aiohttp: its client cannot hand over an upgraded connection for writing, and stdin
EOF must be a half-close of our write side (podman then closes the process's stdin, so
`kubectl exec -i -- cat` ends); a plain asyncio stream pair does both. What podman does
(4.3.1, checked against the real socket): exec start and container attach answer 101 to
`Connection: Upgrade` + `Upgrade: tcp`; the exec's size goes in the start body (`h`, `w`),
later sizes through .../resize; the exit code is read from the exec's inspect once the
stream ends; closing an attach leaves the container running."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from urllib.parse import quote, urlencode, urlsplit

from k3py.agent.runtime.libpod import API, Frames, LibpodAPI, _error
from k3py.agent.runtime.podman import RuntimeError_

__all__ = ["ApiStream", "NotRunning", "attach_stream", "exec_stream"]

_PREFIX = urlsplit(API).path  # /v4.0.0/libpod
_HEAD_LIMIT = 64 * 1024
class NotRunning(RuntimeError_):
    """The container is not running (exited, or not started yet): nothing to exec in or
    attach to. Checked before an attach, which podman would otherwise hold open until the
    container starts again."""


async def _hijack(socket: str, path: str, params: dict | None, body) -> tuple[
        asyncio.StreamReader, asyncio.StreamWriter]:
    """POST `path` asking for the upgrade; the connection once podman has answered 101 (or
    200, which older services send before the raw stream). RuntimeError_ otherwise."""
    try:
        reader, writer = await asyncio.open_unix_connection(socket, limit=_HEAD_LIMIT)
    except OSError as e:
        raise RuntimeError_(f"podman API: {e}") from None
    try:
        data = json.dumps(body).encode() if body is not None else b""
        target = _PREFIX + path + ("?" + urlencode(params) if params else "")
        writer.write((f"POST {target} HTTP/1.1\r\nHost: d\r\n"
                      f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                      f"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n").encode() + data)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if status in (101, 200):
            return reader, writer
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:] if line)}
        size, err = headers.get("content-length", ""), b""
        with contextlib.suppress(TimeoutError, asyncio.IncompleteReadError):
            async with asyncio.timeout(10):
                err = await (reader.readexactly(int(size)) if size.isdigit()
                             else reader.read(_HEAD_LIMIT))
        raise RuntimeError_(_error(status, err))
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
        writer.close()
        raise RuntimeError_(f"podman API: {e or type(e).__name__}") from None
    except BaseException:
        writer.close()
        raise


class ApiStream:
    """One hijacked exec or attach: output() yields (fd, bytes); write() and close_stdin()
    feed the process's stdin; resize() sets the terminal; exit_code() once output ended."""

    def __init__(self, api: LibpodAPI, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, *, tty: bool, resize_path: str,
                 exec_id: str = "", container: str = "") -> None:
        self.api, self.tty = api, tty
        self._reader, self._writer = reader, writer
        self._resize_path = resize_path
        self._exec_id, self._container = exec_id, container

    async def output(self) -> AsyncIterator[tuple[int, bytes]]:
        frames = None if self.tty else Frames()
        while True:
            try:
                data = await self._reader.read(65536)
            except ConnectionError:
                data = b""
            if not data:
                return
            if frames is None:
                yield 1, data
            else:
                for item in frames.feed(data):
                    yield item

    async def write(self, data: bytes) -> None:
        if self._writer.is_closing():
            return
        self._writer.write(data)
        with contextlib.suppress(ConnectionError):
            await self._writer.drain()

    async def close_stdin(self) -> None:
        """End of stdin: with a tty it is the terminal's EOF character, as a user types it
        (a half-close reaches no process behind a pty); without one, a half-close of our
        side, which podman passes on as the process's stdin closing."""
        if self.tty:
            await self.write(b"\x04")
        elif not self._writer.is_closing():
            with contextlib.suppress(OSError, RuntimeError):
                self._writer.write_eof()

    async def resize(self, height: int, width: int) -> None:
        if height > 0 and width > 0:
            await self.api._json("POST", self._resize_path,
                                 params={"h": str(height), "w": str(width)}, check=False)

    async def exit_code(self) -> int:
        """The exec's exit code (podman records it before it ends the stream; a short wait
        covers a session still marked running); for an attach, the container's when it has
        stopped, else 0 (a detach)."""
        if not self._exec_id:
            info = await self.api._json(
                "GET", f"/containers/{quote(self._container, safe='')}/json", check=False)
            state = (info or {}).get("State") or {}
            if state.get("Running") or not state:
                return 0
            code = state.get("ExitCode")
            return code if isinstance(code, int) else 0
        info: dict = {}
        for _ in range(50):
            info = await self.api._json("GET", f"/exec/{self._exec_id}/json", check=False) or {}
            if not info.get("Running"):
                break
            await asyncio.sleep(0.05)
        code = info.get("ExitCode")
        return code if isinstance(code, int) else 126

    def close(self) -> None:
        self._writer.close()


async def exec_stream(api: LibpodAPI, container: str, argv: list[str], *, stdin: bool,
                      tty: bool, size: tuple[int, int] | None = None) -> ApiStream:
    """Create and start an exec session in `container`, its terminal `size` (rows, cols)
    from the start when known."""
    try:
        made = await api._json("POST", f"/containers/{quote(container, safe='')}/exec",
                               body={"AttachStdin": stdin, "AttachStdout": True,
                                     "AttachStderr": not tty, "Tty": tty,
                                     "Cmd": [str(a) for a in argv]})
    except RuntimeError_ as e:
        if "state improper" in str(e):
            raise NotRunning(f'container "{container}" is not running') from None
        raise
    exec_id = (made or {}).get("Id")
    if not exec_id:
        raise RuntimeError_(f"podman API: no exec id for {container}")
    body: dict = {"Detach": False, "Tty": tty}
    if tty and size and size[0] > 0 and size[1] > 0:
        body["h"], body["w"] = size
    reader, writer = await _hijack(api.socket, f"/exec/{exec_id}/start", None, body)
    return ApiStream(api, reader, writer, tty=tty, resize_path=f"/exec/{exec_id}/resize",
                     exec_id=exec_id)


async def attach_stream(api: LibpodAPI, container: str, *, stdin: bool) -> ApiStream:
    """Attach to the running `container`'s main process; closing the stream detaches and
    leaves the container running. Its output is framed unless the container has a tty,
    whatever the client asked for, so the container says which."""
    ref = quote(container, safe="")
    info = await api._json("GET", f"/containers/{ref}/json") or {}
    if not (info.get("State") or {}).get("Running"):
        raise NotRunning(f'container "{container}" is not running')
    tty = bool((info.get("Config") or {}).get("Tty"))
    params = {"stream": "true", "stdin": "true" if stdin else "false", "stdout": "true",
              "stderr": "true"}
    reader, writer = await _hijack(api.socket, f"/containers/{ref}/attach", params, None)
    return ApiStream(api, reader, writer, tty=tty, resize_path=f"/containers/{ref}/resize",
                     container=container)
