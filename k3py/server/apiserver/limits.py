"""Request limits, as kube-apiserver's max-in-flight filter and request timeout:

- at most `max_readonly` read-only and `max_mutating` mutating requests at once
  (`--max-requests-inflight` 400, `--max-mutating-requests-inflight` 200, upstream's
  defaults); one more is answered 429 TooManyRequests with `Retry-After: 1` at once, before any
  work, so a flood cannot queue up memory;
- a request that runs longer than `timeout` seconds (`--request-timeout`, 60) is answered 504
  Timeout and its work cancelled.
Long-running requests (watches, exec/attach/port-forward, followed logs, the node tunnel, any
websocket, e.g. a dashboard tab's live socket) are counted by neither. Health checks pass
untouched."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web

from k3py.api import errors
from k3py.server.apiserver.negotiation import status_response

__all__ = ["RequestLimits", "is_long_running"]

_HEALTH = {"/healthz", "/livez", "/readyz", "/ping", "/version"}
_STREAM_SUBRESOURCES = ("/exec", "/attach", "/portforward", "/proxy")


def is_long_running(request: web.Request) -> bool:
    q = request.query
    path = request.path
    if q.get("watch") in ("1", "true") or "/watch/" in path:
        return True
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return True  # open until a side closes it: the timeout cut dashboard tabs every 60 s
    if path.endswith(_STREAM_SUBRESOURCES) or "/proxy/" in path:
        return True
    if path.endswith("/log") and q.get("follow") in ("1", "true"):
        return True
    return path.startswith("/v1-k3py/")  # the node tunnel, joins, encryption rotation


@dataclass
class RequestLimits:
    max_readonly: int = 400
    max_mutating: int = 200
    timeout: float = 60.0
    readonly: int = 0
    mutating: int = 0
    refused: int = 0

    def middleware(self):
        @web.middleware
        async def limits(request: web.Request, handler) -> web.StreamResponse:
            if request.path in _HEALTH or is_long_running(request):
                return await handler(request)
            mutating = request.method not in ("GET", "HEAD", "OPTIONS")
            if mutating and self.max_mutating and self.mutating >= self.max_mutating or \
                    not mutating and self.max_readonly and self.readonly >= self.max_readonly:
                self.refused += 1
                err = errors.too_many_requests("Too many requests, please try again later.")
                err.details = {"retryAfterSeconds": 1}
                resp = status_response(err)
                resp.headers["Retry-After"] = "1"
                return resp
            if mutating:
                self.mutating += 1
            else:
                self.readonly += 1
            try:
                if self.timeout <= 0:
                    return await handler(request)
                # in this task (not wait_for's new one): what the handler sets in context
                # variables (the request's user) stays visible to the middlewares around it
                async with asyncio.timeout(self.timeout):
                    return await handler(request)
            except TimeoutError:
                raise errors.timeout("Timeout: request did not complete within the allowed "
                                     f"duration ({self.timeout:g}s)") from None
            finally:
                if mutating:
                    self.mutating -= 1
                else:
                    self.readonly -= 1
        return limits
