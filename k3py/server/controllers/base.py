"""The one informer / work-queue base every controller and the scheduler build on.

Informers list+watch a resource through the Registry into a cache (one shared informer per
resource); a Controller reconciles keys from a de-duplicating queue, one key at a time per
object and several objects in parallel; EventRecorder writes core/v1 Events."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import logging
import random
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from k3py.api import errors
from k3py.api.objects import new_uid, now_rfc3339
from k3py.api.resources import Resource
from k3py.config import ServerConfig
from k3py.server.controllers.eventcorrelator import REMEMBERED, EventCorrelator, lru_put
from k3py.server.registry import Registry

__all__ = ["Informer", "InformerFactory", "record_handlers", "WorkQueue", "Controller", "ControllerContext",
           "EventRecorder", "object_key", "split_key", "NODE_INDEX", "pod_node",
           "drop_finalizer", "EVENTS_REMEMBERED"]

log = logging.getLogger("k3py.controllers")

Handler = Callable[[str, dict | None, dict | None], None]  # (type, old, new)


# strings longer than this (certificates, scripts, big annotations) are kept as they are
_INTERN_MAX = 256


def cached_form(obj: dict, previous: dict | None = None) -> dict:
    """An object as an informer keeps it (in place; also returned): without
    metadata.managedFields, which no controller reads and which is about half of a parsed
    pod, and with its short strings interned, so the values that repeat from object to object
    (images, commands, env, labels, policy names) are held once. An update from a cached
    object keeps the stored managedFields, as upstream keeps them when a write omits them.

    `previous`: the cached form of the object's revision before; the parts of `obj` equal to
    its parts (a pod's spec after a status write) become those parts, already interned, so
    only what changed is walked."""
    md = obj.get("metadata")
    if isinstance(md, dict):
        md.pop("managedFields", None)
    if previous is None:
        _intern_strings(obj)
    else:
        _share_or_intern(obj, previous, 2)
    return obj


def _share_or_intern(node: dict, previous: dict, depth: int) -> None:
    """_intern_strings(node), taking each field equal to `previous`'s from `previous`;
    `depth` levels of objects are compared field by field (metadata differs in its
    resourceVersion alone)."""
    for k, v in node.items():
        t = type(v)
        if t is str:
            if len(v) <= _INTERN_MAX:
                node[k] = sys.intern(v)
        elif t is dict or t is list:
            before = previous.get(k)
            if before == v:
                node[k] = before
            elif depth > 1 and t is dict and type(before) is dict:
                _share_or_intern(v, before, depth - 1)
            else:
                _intern_strings(v)


def _intern_strings(node: dict | list) -> None:
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for k, v in items:
        t = type(v)
        if t is str:
            if len(v) <= _INTERN_MAX:
                node[k] = sys.intern(v)
        elif t is dict or t is list:
            _intern_strings(v)


async def drop_finalizer(registry: Registry, res: Resource, obj: dict, finalizer: str) -> None:
    """Take `finalizer` off `obj` as stored, if the stored object is still that one (its uid)
    and still has it."""
    md = obj["metadata"]
    uid = md.get("uid")

    def mutate(cur: dict) -> dict | None:
        cmd = cur.get("metadata") or {}
        if cmd.get("uid") != uid or finalizer not in (cmd.get("finalizers") or []):
            return None
        cmd["finalizers"] = [f for f in cmd["finalizers"] if f != finalizer]
        return cur
    await registry.update_with(res, md.get("namespace"), md["name"], mutate)


def object_key(obj: dict) -> str:
    md = obj.get("metadata") or {}
    ns = md.get("namespace")
    return f"{ns}/{md.get('name')}" if ns else str(md.get("name"))


# Pods by spec.nodeName. The pods informer is shared by everyone on the server, and an index
# is one per name: whoever adds "node" must add this one.
NODE_INDEX = "node"


def pod_node(pod: dict) -> list[str]:
    node = (pod.get("spec") or {}).get("nodeName")
    return [node] if node else []


def split_key(key: str) -> tuple[str | None, str]:
    if "/" in key:
        ns, name = key.split("/", 1)
        return ns, name
    return None, key


# Handlers added by the task that set this (and by the tasks it starts): what a group of
# controllers added, so that stopping the group (leadership lost) also removes its handlers.
_recorded_handlers: contextvars.ContextVar[list[tuple[Informer, Handler]] | None] = \
    contextvars.ContextVar("recorded_handlers", default=None)


def record_handlers() -> list[tuple[Informer, Handler]]:
    """From now on in this task (and the tasks it creates), handlers added to any informer are
    also appended to the returned list."""
    recorded: list[tuple[Informer, Handler]] = []
    _recorded_handlers.set(recorded)
    return recorded


class Informer:
    """A cache of one resource kept current by list + watch (relist on 410 or error)."""

    def __init__(self, registry: Registry, res: Resource) -> None:
        self.registry = registry
        self.res = res
        self.cache: dict[str, dict] = {}
        self.handlers: list[Handler] = []
        self.synced = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.indexes: dict[str, Callable[[dict], list[str]]] = {}
        self._index_data: dict[str, dict[str, set[str]]] = {}

    def add_handler(self, handler: Handler) -> None:
        self.handlers.append(handler)
        recorded = _recorded_handlers.get()
        if recorded is not None:
            recorded.append((self, handler))
        for obj in list(self.cache.values()):
            handler("ADDED", None, obj)

    def remove_handler(self, handler: Handler) -> None:
        with contextlib.suppress(ValueError):
            self.handlers.remove(handler)

    def add_index(self, name: str, fn: Callable[[dict], list[str]]) -> None:
        self.indexes[name] = fn
        data: dict[str, set[str]] = {}
        for key, obj in self.cache.items():
            for v in fn(obj):
                data.setdefault(v, set()).add(key)
        self._index_data[name] = data

    def by_index(self, name: str, value: str) -> list[dict]:
        keys = self._index_data.get(name, {}).get(value, ())
        return [self.cache[k] for k in list(keys) if k in self.cache]

    def _reindex(self, key: str, old: dict | None, new: dict | None) -> None:
        for name, fn in self.indexes.items():
            data = self._index_data.setdefault(name, {})
            if old is not None:
                for v in fn(old):
                    s = data.get(v)
                    if s:
                        s.discard(key)
                        if not s:
                            del data[v]
            if new is not None:
                for v in fn(new):
                    data.setdefault(v, set()).add(key)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"informer-{self.res.plural}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    def get(self, namespace: str | None, name: str) -> dict | None:
        return self.cache.get(f"{namespace}/{name}" if namespace else name)

    def list(self, namespace: str | None = None) -> list[dict]:
        if namespace is None:
            return list(self.cache.values())
        prefix = namespace + "/"
        return [o for k, o in self.cache.items() if k.startswith(prefix)]

    def _emit(self, etype: str, old: dict | None, new: dict | None) -> None:
        for h in self.handlers:
            try:
                h(etype, old, new)
            except Exception:  # noqa: BLE001
                log.exception("informer handler failed for %s", self.res.plural)

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            try:
                listing = await self.registry.list(self.res, None)
                rv = listing["metadata"]["resourceVersion"]
                fresh = {key: cached_form(o, self.cache.get(key))
                         for key, o in ((object_key(o), o) for o in listing["items"])}
                for key in list(self.cache):
                    if key not in fresh:
                        old = self.cache.pop(key)
                        self._reindex(key, old, None)
                        self._emit("DELETED", old, None)
                for key, obj in fresh.items():
                    old = self.cache.get(key)
                    self.cache[key] = obj
                    self._reindex(key, old, obj)
                    if old is None:
                        self._emit("ADDED", None, obj)
                    elif old["metadata"].get("resourceVersion") != obj["metadata"].get(
                            "resourceVersion"):
                        self._emit("MODIFIED", old, obj)
                self.synced.set()
                backoff = 0.2
                stream = await self.registry.watch(self.res, None, resource_version=rv)
                async for etype, obj in stream:
                    key = object_key(obj)
                    cached_form(obj, self.cache.get(key) if etype == "MODIFIED" else None)
                    if etype == "DELETED":
                        old = self.cache.pop(key, None)
                        self._reindex(key, old, None)
                        self._emit("DELETED", old, obj)
                    elif etype in ("ADDED", "MODIFIED"):
                        old = self.cache.get(key)
                        self.cache[key] = obj
                        self._reindex(key, old, obj)
                        self._emit("MODIFIED" if old else "ADDED", old, obj)
            except asyncio.CancelledError:
                raise
            except errors.StatusError as e:
                if e.code != 410:
                    log.warning("informer %s: %s", self.res.plural, e.message)
            except Exception:  # noqa: BLE001
                log.exception("informer %s failed; relisting", self.res.plural)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


class InformerFactory:
    """One shared informer per resource for one server: serve() builds it, the controllers,
    RBAC and the node tunnel ask it for informers (each starts when first asked), and
    shutdown() stops them all."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._informers: dict[tuple[str, str], Informer] = {}

    def informer(self, group: str, plural: str) -> Informer:
        key = (group, plural)
        inf = self._informers.get(key)
        if inf is None:
            res = self.registry.resources.find(group, plural)
            if res is None:
                raise KeyError(f"unknown resource {plural}.{group}")
            inf = Informer(self.registry, res)
            self._informers[key] = inf
            inf.start()
        return inf

    def cached(self, res: Resource, namespace: str | None, name: str) -> dict | None:
        """The informer's copy of an object (shared: read it, never change it; without
        managedFields), None while that informer has not synced or when it does not hold
        the object (the Registry's read_through then reads the store)."""
        inf = self.informer(res.group, res.plural)
        return inf.get(namespace, name) if inf.synced.is_set() else None

    async def wait_synced(self, timeout: float = 30.0) -> None:
        await asyncio.wait_for(
            asyncio.gather(*(i.synced.wait() for i in self._informers.values())), timeout)

    async def stop(self) -> None:
        for inf in self._informers.values():
            await inf.stop()


class WorkQueue:
    """De-duplicating queue of keys with delayed adds; a key is never processed twice at once."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def add(self, key: str) -> None:
        if key in self._processing:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._queue.put_nowait(key)

    def add_after(self, key: str, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        old = self._timers.get(key)
        when = loop.time() + delay
        if old is not None:
            if old.when() <= when:
                return
            old.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> str:
        key = await self._queue.get()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def __len__(self) -> int:
        return self._queue.qsize()


@dataclass(kw_only=True)
class ControllerContext:
    registry: Registry
    informers: InformerFactory
    recorder: EventRecorder
    config: ServerConfig = field(default_factory=ServerConfig)
    extra: dict = field(default_factory=dict)

    def resource(self, group: str, plural: str) -> Resource:
        res = self.registry.resources.find(group, plural)
        if res is None:
            raise KeyError(f"unknown resource {plural}.{group}")
        return res


class Controller:
    """Subclass: set `name`, register informer handlers in `setup`, implement `reconcile`."""

    name = "controller"
    workers = 2

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.registry = ctx.registry
        self.queue = WorkQueue()
        self._tasks: list[asyncio.Task] = []
        self._failures: dict[str, int] = {}

    def setup(self) -> None:
        """Register informer handlers that enqueue keys."""

    async def reconcile(self, key: str) -> None:
        raise NotImplementedError

    def enqueue(self, key: str, after: float = 0.0) -> None:
        self.queue.add_after(key, after)

    async def start(self) -> None:
        self.setup()
        for i in range(self.workers):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"{self.name}-{i}"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self.reconcile(key)
                self._failures.pop(key, None)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001
                n = self._failures.get(key, 0) + 1
                self._failures[key] = n
                level = logging.DEBUG if isinstance(e, errors.StatusError) and e.code == 409 \
                    else logging.WARNING
                log.log(level, "%s: reconcile %s failed (%s): %s", self.name, key, n, e,
                        exc_info=level == logging.WARNING and n < 3)
                self.queue.add_after(key, min(0.05 * 2 ** n, 30.0) * random.uniform(0.8, 1.2))
            finally:
                self.queue.done(key)


# the events remembered for aggregation, least recently recorded first out (upstream's event
# correlator keeps an LRU cache of as many)
EVENTS_REMEMBERED = REMEMBERED


class EventRecorder:
    """Writes core/v1 Events, aggregating repeats of the same event (within 10 minutes,
    among the EVENTS_REMEMBERED last recorded) into a count; similar events are combined and
    a source's burst about one object is bounded as upstream's (EventCorrelator)."""

    def __init__(self, registry: Registry, component: str = "k3py") -> None:
        self.registry = registry
        self.component = component
        self.correlator = EventCorrelator()
        # hash -> (ns, name, last time), least recently recorded first: an OrderedDict, whose
        # popitem(last=False) is O(1) (a dict's first key, after many deleted from its front,
        # is found by walking their empty slots)
        self._seen: OrderedDict[str, tuple[str, str, float]] = OrderedDict()
        self._writing: dict[str, tuple[asyncio.Lock, int]] = {}  # h -> (its lock, users)

    async def record(self, obj: dict, type_: str, reason: str, message: str,
                     component: str | None = None) -> None:
        res = self.registry.resources.get("", "v1", "events")
        if res is None:
            return
        md = obj.get("metadata") or {}
        ns = md.get("namespace") or "default"
        involved = {"kind": obj.get("kind"), "namespace": md.get("namespace"),
                    "name": md.get("name"), "uid": md.get("uid"),
                    "apiVersion": obj.get("apiVersion"),
                    "resourceVersion": md.get("resourceVersion")}
        involved = {k: v for k, v in involved.items() if v}
        source = component or self.component
        about = (source, *(involved.get(k) for k in ("kind", "namespace", "name", "uid",
                                                     "apiVersion")))
        message, combined = self.correlator.aggregate((*about, type_, reason), message)
        if not self.correlator.allow(about):
            return
        what = "combined" if combined else message
        h = hashlib.sha1(f"{md.get('uid')}|{reason}|{what}|{type_}|{source}".encode()).hexdigest()
        # one write at a time for one Event: concurrent records of it (a ReplicaSet's pods are
        # made by `gather`) would each create an Event before the first is remembered, then
        # conflict on its count
        lock, users = self._writing.get(h) or (asyncio.Lock(), 0)
        self._writing[h] = (lock, users + 1)
        try:
            async with lock:
                await self._write(res, h, ns, involved, type_, reason, message, source)
        finally:
            lock, users = self._writing[h]
            if users == 1:
                del self._writing[h]
            else:
                self._writing[h] = (lock, users - 1)

    async def _write(self, res: Resource, h: str, ns: str, involved: dict, type_: str,
                     reason: str, message: str, source: str) -> None:
        """The Event of dedupe key `h` created, or its count bumped if it is remembered."""
        now = now_rfc3339()
        seen = self._seen.get(h)
        try:
            if seen and time.time() - seen[2] < 600:
                def bump(ev: dict) -> dict:
                    ev["count"] = int(ev.get("count") or 1) + 1
                    ev["lastTimestamp"] = now
                    ev["message"] = message
                    return ev
                out = await self.registry.update_with(res, seen[0], seen[1], bump)
                if out is not None:
                    self._remember(h, seen[0], seen[1])
                    return
            name = f"{involved.get('name')}.{new_uid().replace('-', '')[:16]}"
            ev = {"apiVersion": "v1", "kind": "Event",
                  "metadata": {"name": name, "namespace": ns},
                  "involvedObject": involved, "reason": reason, "message": message,
                  "type": type_, "count": 1, "firstTimestamp": now, "lastTimestamp": now,
                  "eventTime": None, "reportingComponent": source,
                  "reportingInstance": "", "source": {"component": source}}
            await self.registry.create(res, ns, ev)
            self._remember(h, ns, name)
        except errors.StatusError as e:
            log.debug("event not recorded: %s", e.message)

    def _remember(self, h: str, ns: str, name: str) -> None:
        """The event last recorded goes last; the least recent beyond EVENTS_REMEMBERED go.
        (A sweep of the older than 10 minutes at each event past 5,000 found none to drop
        while 30,000 pods were made: every event walked them all.)"""
        lru_put(self._seen, h, (ns, name, time.time()), EVENTS_REMEMBERED)
