"""The typed object layer over the store: create/get/list/update/patch/delete/watch of objects.

Called by the apiserver handlers and, in-process, by controllers and the scheduler; it applies
admission (defaults, validation), optimistic concurrency, finalizers and deletion semantics."""

from __future__ import annotations

import base64
import functools
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from k3py.api import errors, schema
from k3py.api.objects import deepcopy, dumps, loads, new_uid, now_rfc3339
from k3py.api.resources import Resource, ResourceRegistry
from k3py.server import admission
from k3py.server.admission import AdmissionChain
from k3py.server.store.backend import (
    Backend,
    CompactedError,
    Event,
    FutureRevisionError,
    KeyExistsError,
    KeyValue,
)
from k3py.server.watchselection import LabelMemo, WatchSelection

__all__ = ["Registry", "ListOptions", "RawObject", "Created", "WatchEvent"]

_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_CONFLICT_MSG = "the object has been modified; please apply your changes to the latest version and try again"
# etcd's --max-request-bytes default, the size upstream can store: a larger object is refused
# 413 on every write path (create, update, patch, apply, status), before it reaches the store
MAX_OBJECT_BYTES = 1536 * 1024
MAX_LIST_LIMIT = 1 << 31  # a larger limit= is the same as this one (and fits a SQL LIMIT)
NAMESPACE_LIVE_LOOKUP = 30.0  # seconds a deleted namespace is read from the store, not cached


@dataclass(frozen=True, slots=True, kw_only=True)
class ListOptions:
    label_selector: str = ""
    field_selector: str = ""
    limit: int = 0
    continue_: str = ""
    resource_version: str = ""
    resource_version_match: str = ""


WatchEvent = tuple[str, dict]  # ("ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK", object)


def _encode_continue(rev: int, start_key: str) -> str:
    raw = orjson.dumps({"v": "meta.k8s.io/v1", "rv": rev, "start": start_key})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        pad = "=" * (-len(token) % 4)
        data = orjson.loads(base64.urlsafe_b64decode(token + pad))
        rev, start = int(data["rv"]), str(data["start"])
        if data.get("v") != "meta.k8s.io/v1":
            raise ValueError
        return rev, start
    except Exception as e:  # noqa: BLE001 - any malformed token is a client error
        raise errors.bad_request(f"invalid continue token: {e or 'malformed'}") from None


def _list_start(prefix: str, opts: ListOptions) -> tuple[int, str]:
    """(revision to read at, 0 = now; first key) of a LIST: its continue token's, else an
    Exact resourceVersion from the start."""
    if opts.continue_:
        revision, start_suffix = _decode_continue(opts.continue_)
        return revision, prefix + start_suffix
    if opts.resource_version not in ("", "0") and opts.resource_version_match == "Exact":
        return _rv_int(opts.resource_version), prefix
    return 0, prefix


def _list_read_error(e: CompactedError | FutureRevisionError, opts: ListOptions,
                     revision: int) -> errors.StatusError:
    """The Status for a LIST at a revision the store no longer or not yet holds."""
    if isinstance(e, FutureRevisionError):
        return errors.timeout(f"Too large resource version: {e.revision}, "
                              f"current resource version: {e.current}")
    if opts.continue_:
        return errors.StatusError(
            410, "Expired",
            "The provided continue parameter is too old to display a consistent list "
            "result. You can start a new list without the continue parameter.")
    return errors.expired(f"too old resource version: {revision}")


def _rv_int(rv: str, what: str = "resourceVersion") -> int:
    try:
        n = int(rv)
        if n < 0:
            raise ValueError
        return n
    except ValueError:
        raise errors.bad_request(f'invalid {what} "{rv}"') from None


def _check_json_types(res: Resource, obj: dict) -> None:
    """Upstream's decode error (400) for a value of the wrong JSON type, before any default
    or hook reads a field as the type it should be."""
    wrong = schema.wrong_type(res.api_version, res.kind, obj, crd=res.crd)
    if wrong:
        raise errors.bad_request(wrong)


class RawObject(NamedTuple):
    """A watched object as its stored JSON, resourceVersion spliced in (Registry.watch raw)."""
    data: bytes
    resource_version: str


class Created(NamedTuple):
    """A created object and its JSON: the bytes written to the store with the resourceVersion
    spliced in (None when there are none to reuse: a dry run, another stored version), so
    that the API's response is not encoded a second time (Registry.create_encoded)."""
    obj: dict
    data: bytes | None


class Registry:
    """Objects by resource; every write goes through admission and a compare-and-swap."""

    def __init__(self, backend: Backend, resources: ResourceRegistry,
                 admission_chain: AdmissionChain | None = None) -> None:
        self.backend = backend
        self.resources = resources
        # This server's admission plug-ins (CRDs, service allocation, ServiceAccount), filled
        # by k3py.server.bootstrap; empty for a bare registry (unit tests)
        self.admission = admission_chain if admission_chain is not None else AdmissionChain()
        # An informer's copy of an object (shared: read, never changed), None when it has
        # none; serve() sets it once the server's informers exist (None: every read_through
        # reads the store)
        self.cached: Callable[[Resource, str | None, str], dict | None] | None = None
        # namespace -> until when (time.monotonic) creates in it read it from the store: one
        # deleted through this server may still look active to the informers for a moment
        # (upstream's namespace lifecycle admission keeps the same 30 s forceLiveLookupCache)
        self._live_lookup: dict[str, float] = {}
        # the labels of object versions, for the watches that select on them
        self.labels = LabelMemo()

    def served(self, group: str, plural: str) -> Resource:
        """The served resource; a 500 Status when it is not (a built-in missing is a bug)."""
        res = self.resources.find(group, plural)
        if res is None:
            raise errors.internal_error(f"resource {plural}.{group} is not served")
        return res

    # ---------------------------------------------------------------- decoding

    def decode(self, res: Resource, kv: KeyValue) -> dict:
        obj = loads(kv.value)
        md = obj.get("metadata")
        if md is None:
            md = obj["metadata"] = {}
        md["resourceVersion"] = str(kv.mod_revision)
        if obj.get("apiVersion") != res.api_version:
            obj = self.admission.convert(res, obj)
        return obj

    def _key(self, res: Resource, namespace: str | None, name: str) -> str:
        return self.resources.storage_key(res, namespace, name)

    @staticmethod
    def _strip(obj: dict) -> bytes:
        """Stored form: apiVersion, kind, metadata first (so reads can splice the
        resourceVersion into the bytes), metadata without resourceVersion."""
        md = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "resourceVersion"}
        ordered = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "metadata": md}
        for k, v in obj.items():
            if k not in ordered:
                ordered[k] = v
        return dumps(ordered)

    def _stored(self, res: Resource, obj: dict) -> bytes:
        """The stored form of a created or updated object, refused if over MAX_OBJECT_BYTES."""
        value = self._strip(obj)
        if len(value) > MAX_OBJECT_BYTES:
            raise errors.request_entity_too_large(
                f"the {res.kind} would be {len(value)} bytes in storage, the limit is "
                f"{MAX_OBJECT_BYTES}")
        return value

    @staticmethod
    def _refuse_oversize(res: Resource, obj: dict) -> None:
        """The store's 413, early: for an object over MAX_OBJECT_BYTES before its managedFields
        are even counted, so validation, admission and field tracking (a linear walk each,
        half a second on a list of 60,000 items) are not spent on what cannot be stored. An
        object that cannot be encoded is left to the type checks that answer 400."""
        md = obj.get("metadata")
        if isinstance(md, dict) and "managedFields" in md:
            obj = {**obj, "metadata": {k: v for k, v in md.items() if k != "managedFields"}}
        try:
            size = len(dumps(obj))
        except (TypeError, ValueError):
            return
        if size > MAX_OBJECT_BYTES:
            raise errors.request_entity_too_large(
                f"the {res.kind} would be at least {size} bytes in storage, the limit is "
                f"{MAX_OBJECT_BYTES}")

    @staticmethod
    def _head(res: Resource) -> bytes:
        """How the stored bytes of an object in `res`'s own version begin."""
        return b'{"apiVersion":"' + res.api_version.encode() + b'","kind":"' + \
            res.kind.encode() + b'",'

    @staticmethod
    def _splice(value: bytes, revision: int, head: bytes) -> bytes | None:
        """The stored bytes with metadata.resourceVersion set, or None if not splicable."""
        if not value.startswith(head):
            return None
        i = value.find(b'"metadata":{', len(head))
        if i < 0:
            return None
        j = i + 12
        rv = b'"resourceVersion":"%d"' % revision
        return value[:j] + rv + (b"" if value[j:j + 1] == b"}" else b",") + value[j:]

    async def list_raw(self, res: Resource, namespace: str | None,
                       opts: ListOptions = ListOptions()) -> bytes | None:
        """The JSON body of an unfiltered list (a page of one too: kubectl's limit=500) built
        from the stored bytes without decoding them; None when the request needs the general
        path (a selector, a custom resource, an object stored in another version)."""
        if res.crd or opts.label_selector or opts.field_selector:
            return None
        prefix = self.resources.storage_prefix(res, namespace or None)
        revision, start = _list_start(prefix, opts)
        limit = min(max(0, opts.limit), MAX_LIST_LIMIT)
        try:
            rev, kvs = await self.backend.list(prefix, start_key=start,
                                               limit=limit + 1 if limit else 0,
                                               revision=revision)
        except (CompactedError, FutureRevisionError) as e:
            raise _list_read_error(e, opts, revision) from None
        revision = revision or rev
        next_key = ""
        if limit and len(kvs) > limit:
            next_key, kvs = kvs[limit].key, kvs[:limit]
        head = self._head(res)
        parts = []
        for kv in kvs:
            spliced = self._splice(kv.value, kv.mod_revision, head)
            if spliced is None:
                return None
            parts.append(spliced)
        meta = b'"resourceVersion":"%d"' % revision
        if next_key:
            meta += b',"continue":"%s"' % _encode_continue(revision,
                                                           next_key[len(prefix):]).encode()
        return b'{"kind":"%s","apiVersion":"%s","metadata":{%s},"items":[' % (
            res.list_kind.encode(), res.api_version.encode(), meta) + b",".join(parts) + b"]}"

    # ---------------------------------------------------------------- reads

    async def get(self, res: Resource, namespace: str | None, name: str) -> dict:
        _, kv = await self.backend.get(self._key(res, namespace, name))
        if kv is None:
            raise errors.not_found(res.group, res.plural, name)
        return self.decode(res, kv)

    async def stored_api_version(self, res: Resource, namespace: str | None,
                                 name: str) -> str | None:
        """The apiVersion an object was written in (a custom resource served in several
        versions without conversion keeps its own); None when it does not exist."""
        _, kv = await self.backend.get(self._key(res, namespace, name))
        return None if kv is None else str(loads(kv.value).get("apiVersion") or "")

    async def try_get(self, res: Resource, namespace: str | None, name: str) -> dict | None:
        _, kv = await self.backend.get(self._key(res, namespace, name))
        return None if kv is None else self.decode(res, kv)

    async def read_through(self, res: Resource, namespace: str | None,
                           name: str) -> dict | None:
        """The object from the server's informers (shared: read it, never change it), from
        the store when they do not hold it (not synced yet, or just created), as upstream's
        admission plug-ins read a lister and look up the API on a miss."""
        obj = self.cached(res, namespace, name) if self.cached is not None else None
        return obj if obj is not None else await self.try_get(res, namespace, name)

    async def list(self, res: Resource, namespace: str | None,
                   opts: ListOptions = ListOptions()) -> dict:
        prefix = self.resources.storage_prefix(res, namespace or None)
        label_sel = admission.label_selector(opts.label_selector)
        field_sel = admission.field_selector(opts.field_selector, res)
        revision, start = _list_start(prefix, opts)
        limit = min(max(0, opts.limit), MAX_LIST_LIMIT)  # more than any store holds
        items: list[dict] = []
        next_key = ""
        try:
            while True:
                page = 0 if not limit else max(limit - len(items), 0) + 1
                if (label_sel or field_sel) and limit:
                    page = max(page, 500)
                rev, kvs = await self.backend.list(prefix, start_key=start, limit=page,
                                                   revision=revision)
                revision = revision or rev
                more = bool(page) and len(kvs) >= page
                for i, kv in enumerate(kvs):
                    if limit and len(items) >= limit:
                        next_key = kv.key
                        break
                    obj = self.decode(res, kv)
                    if label_sel and not label_sel.matches(
                            (obj.get("metadata") or {}).get("labels") or {}):
                        continue
                    if field_sel and not field_sel.matches(obj):
                        continue
                    items.append(obj)
                    if limit and len(items) >= limit and i + 1 < len(kvs):
                        next_key = kvs[i + 1].key
                        break
                if next_key or not more:
                    break
                start = kvs[-1].key + "\x00"
        except (CompactedError, FutureRevisionError) as e:
            raise _list_read_error(e, opts, revision) from None
        meta: dict[str, Any] = {"resourceVersion": str(revision)}
        if next_key:
            meta["continue"] = _encode_continue(revision, next_key[len(prefix):])
        return {"kind": res.list_kind, "apiVersion": res.api_version, "metadata": meta,
                "items": items}

    # ---------------------------------------------------------------- create

    async def create(self, res: Resource, namespace: str | None, obj: dict, *,
                     dry_run: bool = False, field_manager: str = "") -> dict:
        created = await self.create_encoded(res, namespace, obj, dry_run=dry_run,
                                            field_manager=field_manager)
        return created.obj

    async def create_encoded(self, res: Resource, namespace: str | None, obj: dict, *,
                             dry_run: bool = False, field_manager: str = "") -> Created:
        """create(), also returning the object's JSON as stored (see Created)."""
        if not isinstance(obj, dict):
            raise errors.bad_request("the body of the request is not a JSON object")
        self._refuse_oversize(res, obj)
        obj = self._check_type(res, obj)
        md = obj.setdefault("metadata", {})
        if not isinstance(md, dict):
            raise errors.bad_request("metadata must be an object")
        if res.namespaced:
            ns = md.get("namespace") or namespace
            if namespace and md.get("namespace") and md["namespace"] != namespace:
                raise errors.bad_request("the namespace of the provided object does not match "
                                         "the namespace sent on the request")
            if not ns:
                raise errors.bad_request("a namespace is required for namespaced resources")
            md["namespace"] = ns
            await self._check_namespace_open(ns, res)
        else:
            md.pop("namespace", None)
        if not md.get("name"):
            gen = md.get("generateName")
            if gen:
                md["name"] = gen + "".join(random.choices(_NAME_CHARS, k=5))
            else:
                raise errors.invalid(res.group, res.kind, "", [errors.field_cause(
                    "metadata.name", "name or generateName is required", "FieldValueRequired")])
        for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds",
                  "selfLink"):
            md.pop(k, None)
        md["uid"] = new_uid()
        md["creationTimestamp"] = now_rfc3339()
        self.admission.prepare_for_create(res, obj)
        self.admission.default(res, obj)
        if field_manager:
            # before the admission plug-ins, as upstream's create handler: the creator owns
            # what it sent and its defaults, not what a plug-in adds (a pod's token volume,
            # a Service's cluster IP, a finalizer)
            admission.track_managed_fields(obj, None, field_manager, "Update")
        await self.admission.mutate_create(res, obj)
        self.admission.check_valid(res, obj)
        if dry_run:
            return Created(obj, None)
        key = self._key(res, md.get("namespace"), md["name"])
        stored = self._stored(res, obj)
        try:
            rev = await self.backend.create(key, stored)
        except KeyExistsError:
            raise errors.already_exists(res.group, res.plural, md["name"]) from None
        md["resourceVersion"] = str(rev)
        return Created(obj, self._splice(stored, rev, self._head(res)))

    def _check_type(self, res: Resource, obj: dict) -> dict:
        if obj.get("metadata") is None:  # JSON null reads as absent, as in Go
            obj["metadata"] = {}
        elif not isinstance(obj["metadata"], dict):
            raise errors.bad_request("metadata must be an object")
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        for field, value in (("apiVersion", api_version), ("kind", kind)):
            if value is not None and not isinstance(value, str):
                raise errors.bad_request(
                    f"couldn't get version/kind; json parse error: json: cannot unmarshal "
                    f"{schema.json_type_name(value)} into Go struct field .{field} of type "
                    f"string")
        if kind and kind != res.kind:
            raise errors.bad_request(
                f"the kind in the data ({kind}) does not match the expected kind ({res.kind})")
        if api_version and api_version != res.api_version:
            other = self.resources.by_api_version_kind(api_version, res.kind)
            if other is None or other.group != res.group:
                raise errors.bad_request(
                    f"the API version in the data ({api_version}) does not match the "
                    f"expected API version ({res.api_version})")
            obj = self.admission.convert(res, obj)
        obj["kind"] = res.kind
        obj["apiVersion"] = res.api_version
        _check_json_types(res, obj)
        return obj

    async def _check_namespace_open(self, ns: str, res: Resource) -> None:
        ns_res = self.resources.get("", "v1", "namespaces")
        if ns_res is None:
            return
        if self._live_lookup.get(ns, 0.0) > time.monotonic():
            nsobj = await self.try_get(ns_res, None, ns)
        else:
            nsobj = await self.read_through(ns_res, None, ns)
        terminating = res.kind != "Event" and nsobj is not None and \
            bool((nsobj.get("metadata") or {}).get("deletionTimestamp"))
        if terminating:  # a refusal is confirmed by the store, the cache may lag
            nsobj = await self.try_get(ns_res, None, ns)
            terminating = nsobj is not None and \
                bool((nsobj.get("metadata") or {}).get("deletionTimestamp"))
        if nsobj is None:
            raise errors.not_found("", "namespaces", ns)
        if terminating:
            raise errors.forbidden(
                f'{res.group_resource} is forbidden: unable to create new content in namespace '
                f'{ns} because it is being terminated', res.group, res.plural)

    # ---------------------------------------------------------------- update

    async def update(self, res: Resource, namespace: str | None, name: str, obj: dict, *,
                     subresource: str = "", dry_run: bool = False,
                     field_manager: str = "", allow_create: bool = False) -> dict:
        if not isinstance(obj, dict):
            raise errors.bad_request("the body of the request is not a JSON object")
        self._refuse_oversize(res, obj)
        obj = self._check_type(res, obj)
        md = obj.setdefault("metadata", {})
        if md.get("name") and md["name"] != name:
            raise errors.bad_request(
                f'the name of the object ({md["name"]}) does not match the name on the URL ({name})')
        if res.namespaced and md.get("namespace") and namespace and md["namespace"] != namespace:
            raise errors.bad_request("the namespace of the provided object does not match the "
                                     "namespace sent on the request")
        md["name"] = name
        if res.namespaced:
            md["namespace"] = namespace
        key = self._key(res, namespace, name)
        _, kv = await self.backend.get(key)
        if kv is None:
            if allow_create and not subresource:
                return await self.create(res, namespace, obj, dry_run=dry_run,
                                         field_manager=field_manager)
            raise errors.not_found(res.group, res.plural, name)
        want_rv = md.get("resourceVersion") or ""
        if want_rv and want_rv != str(kv.mod_revision):
            raise errors.conflict(res.group, res.plural, name, _CONFLICT_MSG)
        return await self._write_update(res, key, kv, obj, subresource=subresource,
                                        dry_run=dry_run, field_manager=field_manager,
                                        strict_rv=bool(want_rv))

    async def _write_update(self, res: Resource, key: str, kv: KeyValue, obj: dict, *,
                            subresource: str, dry_run: bool, field_manager: str,
                            strict_rv: bool, operation: str = "Update",
                            old: dict | None = None) -> dict:
        """Write `obj` over `kv`; `old`: `kv` decoded, when the caller holds a copy that
        nothing has changed (else it is decoded here)."""
        if old is None:
            old = self.decode(res, kv)
        new = self.admission.prepare_for_update(res, obj, old, subresource)
        md, omd = new["metadata"], old["metadata"]
        for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                  "namespace", "name"):
            if k in omd:
                md[k] = omd[k]
            else:
                md.pop(k, None)
        if not md.get("generateName") and omd.get("generateName"):
            md["generateName"] = omd["generateName"]
        self.admission.default(res, new, old)
        self.admission.check_valid(res, new, old)
        await self.admission.check_update(res, new, old)
        if field_manager:
            admission.track_managed_fields(new, old, field_manager, operation)
        md.pop("resourceVersion", None)
        omd_cmp = dict(omd)
        omd_cmp.pop("resourceVersion", None)
        if new == {**old, "metadata": omd_cmp}:
            return old  # no-op update: upstream does not bump the resourceVersion
        if dry_run:
            md["resourceVersion"] = omd["resourceVersion"]
            return new
        if md.get("deletionTimestamp") and not md.get("finalizers") and \
                admission.finalize_when_empty(res, new):
            rev, dkv, ok = await self.backend.delete(key, kv.mod_revision)
            if not ok:
                raise errors.conflict(res.group, res.plural, md["name"], _CONFLICT_MSG)
            md["resourceVersion"] = str(rev)
            await self._after_delete(res, new)
            return new
        rev, cur, ok = await self.backend.update(key, self._stored(res, new), kv.mod_revision)
        if not ok:
            if cur is None:
                raise errors.not_found(res.group, res.plural, md["name"])
            raise errors.conflict(res.group, res.plural, md["name"], _CONFLICT_MSG)
        md["resourceVersion"] = str(cur.mod_revision if cur else rev)
        return new

    async def update_with(self, res: Resource, namespace: str | None, name: str,
                          mutate: Callable[[dict], dict | None], *, subresource: str = "",
                          field_manager: str = "") -> dict | None:
        """Read-modify-write retried on conflict; `mutate` returns None to skip the write.
        Returns the written object, or None if the object is gone or mutate skipped."""
        key = self._key(res, namespace, name)
        for _ in range(50):
            _, kv = await self.backend.get(key)
            if kv is None:
                return None
            new = mutate(self.decode(res, kv))  # a fresh copy: _write_update decodes its own
            if new is None:
                return None
            try:
                return await self._write_update(res, key, kv, new, subresource=subresource,
                                                dry_run=False, field_manager=field_manager,
                                                strict_rv=True)
            except errors.StatusError as e:
                if e.code == 409 and e.reason == "Conflict":
                    continue
                if e.code == 404:
                    return None
                raise
        raise errors.conflict(res.group, res.plural, name, _CONFLICT_MSG)

    # ---------------------------------------------------------------- patch

    async def patch(self, res: Resource, namespace: str | None, name: str, body: bytes,
                    patch_type: str, *, subresource: str = "", dry_run: bool = False,
                    field_manager: str = "", force: bool = False) -> dict:
        key = self._key(res, namespace, name)
        for _ in range(20):
            _, kv = await self.backend.get(key)
            if kv is None:
                if patch_type == "apply":
                    applied = admission.parse_apply_body(body)
                    out = admission.server_side_apply(res, None, applied, field_manager, force)
                    return await self.create(res, namespace, out, dry_run=dry_run)
                raise errors.not_found(res.group, res.plural, name)
            cur = self.decode(res, kv)
            new = admission.apply_patch(res, cur, body, patch_type, field_manager, force)
            # these patch a copy: `cur` is still the stored object, _write_update's `old`
            unchanged = cur if patch_type in ("json", "merge", "strategic") else None
            if not isinstance(new, dict):  # a JSON patch that replaced the whole document
                raise errors.bad_request("the patched object is not a JSON object: couldn't "
                                         "get version/kind")
            new["kind"], new["apiVersion"] = res.kind, res.api_version
            self._refuse_oversize(res, new)
            _check_json_types(res, new)  # a patch can bring a wrong type as a body can
            nmd = new.setdefault("metadata", {})
            want_rv = nmd.get("resourceVersion")
            if want_rv and want_rv != cur["metadata"]["resourceVersion"]:
                raise errors.conflict(res.group, res.plural, name, _CONFLICT_MSG)
            if b"resourceVersion" not in body:
                # the patch carried no precondition: the rv is the one we read, so a
                # concurrent write is retried rather than reported (as upstream)
                want_rv = None
            if nmd.get("name", name) != name:
                raise errors.bad_request("metadata.name cannot be changed by a patch")
            nmd["name"] = name
            if res.namespaced:
                nmd["namespace"] = namespace
            try:
                return await self._write_update(
                    res, key, kv, new, subresource=subresource, dry_run=dry_run,
                    field_manager=field_manager if patch_type != "apply" else "",
                    strict_rv=bool(want_rv),
                    operation="Apply" if patch_type == "apply" else "Update", old=unchanged)
            except errors.StatusError as e:
                if e.code == 409 and e.reason == "Conflict" and not want_rv:
                    continue
                raise
        raise errors.conflict(res.group, res.plural, name, _CONFLICT_MSG)

    # ---------------------------------------------------------------- delete

    async def delete(self, res: Resource, namespace: str | None, name: str,
                     options: dict | None = None, *, dry_run: bool = False) -> dict:
        options = options or {}
        key = self._key(res, namespace, name)
        if res.group == "" and res.plural == "namespaces" and not dry_run:
            now = time.monotonic()
            self._live_lookup = {k: t for k, t in self._live_lookup.items() if t > now}
            self._live_lookup[name] = now + NAMESPACE_LIVE_LOOKUP
        for _ in range(20):
            _, kv = await self.backend.get(key)
            if kv is None:
                raise errors.not_found(res.group, res.plural, name)
            obj = self.decode(res, kv)
            md = obj["metadata"]
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != md.get("uid"):
                raise errors.conflict(
                    res.group, res.plural, name,
                    f'Precondition failed: UID in precondition: {pre["uid"]}, UID in object '
                    f'meta: {md.get("uid")}')
            if pre.get("resourceVersion") and pre["resourceVersion"] != md["resourceVersion"]:
                raise errors.conflict(
                    res.group, res.plural, name,
                    f'Precondition failed: ResourceVersion in precondition: '
                    f'{pre["resourceVersion"]}, ResourceVersion in object meta: '
                    f'{md["resourceVersion"]}')
            graceful = self._graceful(res, obj, options)
            finalizers = list(md.get("finalizers") or [])
            policy = options.get("propagationPolicy") or ""
            if not policy and options.get("orphanDependents") is not None:
                policy = "Orphan" if options["orphanDependents"] else "Background"
            if policy == "Foreground" and "foregroundDeletion" not in finalizers:
                finalizers.append("foregroundDeletion")
            if policy == "Orphan" and "orphan" not in finalizers:
                finalizers.append("orphan")
            pending = bool(finalizers) or graceful is not None or \
                admission.needs_finalization(res, obj)
            if pending:
                if md.get("deletionTimestamp") and finalizers == (md.get("finalizers") or []) \
                        and graceful is None:
                    return obj  # already terminating
                new = deepcopy(obj)
                nmd = new["metadata"]
                if finalizers:
                    nmd["finalizers"] = finalizers
                if not nmd.get("deletionTimestamp"):
                    nmd["deletionTimestamp"] = now_rfc3339()
                    nmd["deletionGracePeriodSeconds"] = graceful or 0
                elif graceful is not None:
                    nmd["deletionGracePeriodSeconds"] = min(
                        graceful, nmd.get("deletionGracePeriodSeconds") or graceful)
                admission.on_terminating(res, new)
                if dry_run:
                    return new
                nmd.pop("resourceVersion", None)
                rev, cur, ok = await self.backend.update(key, self._strip(new), kv.mod_revision)
                if not ok:
                    continue
                nmd["resourceVersion"] = str(rev)
                return new
            if dry_run:
                return obj
            rev, dkv, ok = await self.backend.delete(key, kv.mod_revision)
            if not ok:
                continue
            md["resourceVersion"] = str(rev)
            await self._after_delete(res, obj)
            return obj
        raise errors.conflict(res.group, res.plural, name, _CONFLICT_MSG)

    def _graceful(self, res: Resource, obj: dict, options: dict) -> int | None:
        """Seconds of grace if this delete waits for the pod's node, else None (at once).

        As upstream's pod strategy: a pod bound to a node and not finished waits until its
        node stops it (the agent then deletes it with grace 0, even after being offline) or
        a delete with grace 0 forces it; an unscheduled or finished pod goes at once. Pods
        whose node is gone are force-deleted by the pod GC (controllers/podgc.py)."""
        if res.kind != "Pod" or res.group != "":
            return None
        grace = options.get("gracePeriodSeconds")
        if grace is None:
            grace = (obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        if grace == 0 or not (obj.get("spec") or {}).get("nodeName") or \
                (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return None
        return max(1, int(grace))  # upstream: a negative grace means 1

    async def _after_delete(self, res: Resource, obj: dict) -> None:
        await self.admission.after_delete(res, obj)

    async def delete_collection(self, res: Resource, namespace: str | None,
                                opts: ListOptions, options: dict | None = None, *,
                                dry_run: bool = False) -> dict:
        listing = await self.list(res, namespace, ListOptions(
            label_selector=opts.label_selector, field_selector=opts.field_selector))
        deleted = []
        for obj in listing["items"]:
            md = obj["metadata"]
            try:
                deleted.append(await self.delete(res, md.get("namespace"), md["name"], options,
                                                 dry_run=dry_run))
            except errors.StatusError as e:
                if e.code != 404:
                    raise
        listing["items"] = deleted
        return listing

    # ---------------------------------------------------------------- watch

    async def watch(self, res: Resource, namespace: str | None, *, resource_version: str = "",
                    label_selector: str = "", field_selector: str = "",
                    send_initial_events: bool | None = None,
                    raw: bool = False) -> AsyncIterator[WatchEvent]:
        """Events as (type, object). rv "" / "0": the current state as ADDED, then changes.
        `raw`: an object that needs neither selecting nor converting comes as a RawObject,
        its stored bytes with the resourceVersion spliced in (for a watch served as JSON,
        never decoded and encoded again)."""
        prefix = self.resources.storage_prefix(res, namespace or None)
        label_sel = admission.label_selector(label_selector)
        field_sel = admission.field_selector(field_selector, res)
        selection = None
        if label_sel or field_sel:
            selection = WatchSelection(label_sel, field_sel, self.labels,
                                       prefix=self.resources.storage_prefix(res),
                                       namespaced=res.namespaced,
                                       decode=functools.partial(self.decode, res))
        head = self._head(res) if raw and not res.crd else None

        initial: list[KeyValue] = []
        if resource_version in ("", "0") or send_initial_events:
            rev, initial = await self.backend.list(prefix)
        else:
            rev = _rv_int(resource_version)
        try:
            w = await self.backend.watch(prefix, rev)
        except CompactedError as e:
            raise errors.expired(
                f"too old resource version: {rev} ({e.compact_revision})") from None
        return self._watch_stream(res, w, initial, selection, rev, send_initial_events, head)

    async def _watch_stream(self, res: Resource, w: Any, initial: list[KeyValue],
                            selection: WatchSelection | None, rev: int,
                            send_initial_events: bool | None,
                            head: bytes | None = None) -> AsyncIterator[WatchEvent]:
        # the resource's storage prefix, where the label memo counts the selecting watches
        # and where a watch that decodes every event (an informer's) records for them
        every = self.resources.storage_prefix(res)
        if selection is not None:
            self.labels.watching(every, 1)
        try:
            for kv in initial:
                if selection is None:
                    yield "ADDED", self._raw_or_decode(res, kv, head)
                elif selection.selects(kv):
                    yield "ADDED", self._raw_or_decode(res, kv, head, selection.decoded)
            if send_initial_events:
                yield "BOOKMARK", {"kind": res.kind, "apiVersion": res.api_version,
                                   "metadata": {"resourceVersion": str(rev), "annotations": {
                                       "k8s.io/initial-events-end": "true"}}}
            async for batch in w.events():
                record = selection is None and head is None and self.labels.wanted(every)
                for ev in batch:
                    out = self._convert_event(res, ev, selection, head)
                    if out is not None:
                        if record:
                            self.labels.record(ev.kv, out[1])
                        yield out
        finally:
            w.cancel()
            if selection is not None:
                self.labels.watching(every, -1)

    def _raw_or_decode(self, res: Resource, kv: KeyValue, head: bytes | None,
                       decode: Callable[[KeyValue], dict] | None = None,
                       revision: int | None = None) -> Any:
        """`kv`'s object as a RawObject when `head` is given and it splices, else decoded
        (by `decode`, when given: a selection's, which may have decoded it already); its
        resourceVersion is `revision` when given (an older version sent at a later event's
        revision), else its own."""
        rev = kv.mod_revision if revision is None else revision
        if head is not None:
            data = self._splice(kv.value, rev, head)
            if data is not None:
                return RawObject(data, str(rev))
        obj = decode(kv) if decode is not None else self.decode(res, kv)
        if rev != kv.mod_revision:  # this watch's own decode, shared with no one
            obj["metadata"]["resourceVersion"] = str(rev)
        return obj

    def _convert_event(self, res: Resource, ev: Event, selection: WatchSelection | None,
                       head: bytes | None = None) -> WatchEvent | None:
        """The event a watcher sees (None: none)."""
        if selection is None:
            obj = self._raw_or_decode(res, ev.kv, head)
            if ev.delete:
                return "DELETED", obj
            return ("ADDED" if ev.create or ev.prev_kv is None else "MODIFIED"), obj
        seen = selection.event(ev)
        if seen is None:
            return None
        etype, kv = seen
        return etype, self._raw_or_decode(res, kv, head, selection.decoded, ev.kv.mod_revision)

    async def current_revision(self) -> int:
        return await self.backend.current_revision()
