"""The part of the Registry the scheduler process uses, spoken over HTTPS to the API server:
list, watch, get, create, update and update_with, and pods/binding as a Binding POST.

Built by k3py.server.scheduler.process in the `k3py scheduler-process` child; the informers,
the EventRecorder, the volume binder and the LeaderElector take it where, in the server, they
take the Registry. Every failure is a StatusError (a lost connection: 503), so that their
error handling is the same on both sides."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from urllib.parse import quote

import aiohttp
import orjson

from k3py.api import errors
from k3py.api.resources import Resource, ResourceRegistry

__all__ = ["ApiClient", "CONFLICT_RETRIES", "CONNECTIONS"]

JSON = {"Content-Type": "application/json", "Accept": "application/json"}
CONFLICT_RETRIES = 5  # read-modify-write attempts of update_with before its 409 stands
# requests at once (the watches included), half the API's --max-mutating-requests-inflight
# (200): a burst of bindings waits here for a connection rather than meet a 429. A pod is a
# Binding then an Event: with 32, at ~100 ms a request under load, that capped the bindings
# near 160/s (bench/scale.py, 1,000 nodes)
CONNECTIONS = 100
_REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
_WATCH_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10)


def _status_error(code: int, body: bytes) -> errors.StatusError:
    """The API's Status as the StatusError the Registry would have raised."""
    try:
        status = orjson.loads(body)
    except orjson.JSONDecodeError:
        status = None
    if not isinstance(status, dict):
        return errors.StatusError(code, "", body[:200].decode(errors="replace"))
    return errors.StatusError(int(status.get("code") or code), str(status.get("reason") or ""),
                              str(status.get("message") or ""), status.get("details"))


class ApiClient:
    """Registry-shaped calls over one aiohttp session to one API server."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession,
                 resources: ResourceRegistry) -> None:
        self.base = base_url.rstrip("/")
        self.session = session
        self.resources = resources

    def served(self, group: str, plural: str) -> Resource:
        res = self.resources.find(group, plural)
        if res is None:
            raise errors.not_found(group, plural, "")
        return res

    def _url(self, res: Resource, namespace: str | None, name: str = "",
             subresource: str = "") -> str:
        root = f"/apis/{res.group}/{res.version}" if res.group else f"/api/{res.version}"
        ns = f"/namespaces/{quote(namespace)}" if res.namespaced and namespace else ""
        tail = "".join(f"/{quote(p)}" for p in (name, subresource) if p)
        return f"{self.base}{root}{ns}/{res.plural}{tail}"

    async def _call(self, method: str, url: str, body: dict | None = None) -> dict:
        try:
            async with self.session.request(
                    method, url, data=None if body is None else orjson.dumps(body),
                    headers=JSON, timeout=_REQUEST_TIMEOUT) as r:
                data = await r.read()
                if r.status >= 300:
                    raise _status_error(r.status, data)
                return orjson.loads(data)
        except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError) as e:
            raise errors.service_unavailable(f"{method} {url}: {e!r}") from e

    async def list(self, res: Resource, namespace: str | None) -> dict:
        return await self._call("GET", self._url(res, namespace))

    async def try_get(self, res: Resource, namespace: str | None, name: str) -> dict | None:
        try:
            return await self._call("GET", self._url(res, namespace, name))
        except errors.StatusError as e:
            if e.code == 404:
                return None
            raise

    async def create(self, res: Resource, namespace: str | None, obj: dict) -> dict:
        return await self._call("POST", self._url(res, namespace), obj)

    async def update(self, res: Resource, namespace: str | None, name: str, obj: dict, *,
                     subresource: str = "") -> dict:
        return await self._call("PUT", self._url(res, namespace, name, subresource), obj)

    async def update_with(self, res: Resource, namespace: str | None, name: str,
                          mutate: Callable[[dict], dict | None], *,
                          subresource: str = "") -> dict | None:
        """Read, `mutate` (None: leave it), write back with its resourceVersion; a 409 reads
        again, up to CONFLICT_RETRIES times. None when the object is gone or left alone."""
        for attempt in range(CONFLICT_RETRIES):
            current = await self.try_get(res, namespace, name)
            if current is None:
                return None
            changed = mutate(current)
            if changed is None:
                return None
            try:
                return await self.update(res, namespace, name, changed, subresource=subresource)
            except errors.StatusError as e:
                if e.code != 409 or attempt == CONFLICT_RETRIES - 1:
                    raise
        return None

    async def bind_pod(self, namespace: str, name: str, node: str) -> dict:
        """pods/NAME/binding: the API sets spec.nodeName once (409 for a second binding)."""
        res = self.served("", "pods")
        return await self._call("POST", self._url(res, namespace, name, "binding"), {
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}})

    async def watch(self, res: Resource, namespace: str | None, *,
                    resource_version: str = "") -> AsyncIterator[tuple[str, dict]]:
        """The watch's (type, object) events from `resource_version`; an ERROR event (410
        Gone after compaction) is raised as its StatusError, as the Registry's watch does."""
        url = f"{self._url(res, namespace)}?watch=true&allowWatchBookmarks=false" \
              f"&resourceVersion={quote(resource_version)}"
        try:
            response = await self.session.get(url, headers=JSON, timeout=_WATCH_TIMEOUT)
        except (TimeoutError, aiohttp.ClientError) as e:
            raise errors.service_unavailable(f"watch {url}: {e!r}") from e
        if response.status >= 300:
            data = await response.read()
            response.release()
            raise _status_error(response.status, data)
        return self._events(response)

    @staticmethod
    async def _events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, dict]]:
        try:
            async for line in response.content:
                if not line.strip():
                    continue
                event = orjson.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    raise errors.StatusError(int(obj.get("code") or 500),
                                             str(obj.get("reason") or ""),
                                             str(obj.get("message") or ""))
                yield event["type"], obj
        except aiohttp.ClientError as e:
            raise errors.service_unavailable(f"watch: {e!r}") from e
        finally:
            with contextlib.suppress(Exception):
                response.release()
