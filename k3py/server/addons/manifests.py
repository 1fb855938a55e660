"""Auto-deploy manifests (K3s convention): every YAML/JSON file in <data-dir>/server/manifests
is applied at start and again whenever it changes; files named *.skip are ignored.

Applies each document with server-side apply under the field manager `k3py-deploy`, through
the same Registry as API writes (so admission and validation apply)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os

import orjson
import yaml

from k3py.api import errors
from k3py.server.registry import Registry

__all__ = ["ManifestDeployer"]

log = logging.getLogger("k3py.manifests")

FIELD_MANAGER = "k3py-deploy"


class ManifestDeployer:
    def __init__(self, registry: Registry, directory: str, interval: float = 10.0) -> None:
        self.registry = registry
        self.directory = directory
        self.interval = interval
        self._applied: dict[str, str] = {}  # path -> sha256 of the content applied
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        await self.sync()
        self._task = asyncio.create_task(self._loop(), name="manifests")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sync()
            except Exception:  # noqa: BLE001 - keep watching the directory
                log.exception("applying manifests failed")

    async def sync(self) -> None:
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:
            return
        for name in names:
            if not name.endswith((".yaml", ".yml", ".json")):
                continue
            path = os.path.join(self.directory, name)
            if os.path.exists(path + ".skip"):
                continue
            try:
                data = await asyncio.to_thread(_read, path)
            except OSError:
                continue
            digest = hashlib.sha256(data).hexdigest()
            if self._applied.get(path) == digest:
                continue
            ok = await self.apply_file(path, data)
            if ok:
                self._applied[path] = digest

    async def apply_file(self, path: str, data: bytes) -> bool:
        try:
            docs = [d for d in yaml.safe_load_all(data) if d]
        except yaml.YAMLError as e:
            log.error("%s: not valid YAML: %s", path, e)
            return True  # do not retry until the file changes
        ok = True
        for doc in docs:
            items = doc.get("items", []) if str(doc.get("kind", "")).endswith("List") else [doc]
            for obj in items:
                try:
                    await self.apply_object(obj)
                except errors.StatusError as e:
                    log.error("%s: %s %s: %s", path, obj.get("kind"),
                              (obj.get("metadata") or {}).get("name"), e.message)
                    ok = ok and e.code not in (404, 409, 503)
        return ok

    async def apply_object(self, obj: dict) -> dict:
        res = self.registry.resources.by_api_version_kind(obj.get("apiVersion", ""),
                                                          obj.get("kind", ""))
        if res is None:
            raise errors.not_found("", "resources",
                                   f"{obj.get('apiVersion')}/{obj.get('kind')}")
        md = obj.get("metadata") or {}
        ns = (md.get("namespace") or "default") if res.namespaced else None
        name = md.get("name")
        if not name:
            return await self.registry.create(res, ns, obj)
        return await self.registry.patch(res, ns, name, orjson.dumps(obj), "apply",
                                         field_manager=FIELD_MANAGER, force=True)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
