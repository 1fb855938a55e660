"""Parsing of Kubernetes REST paths into (resource, namespace, name, subresource); no I/O.

Read by the apiserver's dispatcher; the resource set comes from the ResourceRegistry."""

from __future__ import annotations

from dataclasses import dataclass

from k3py.api import errors
from k3py.api.resources import Resource, ResourceRegistry

__all__ = ["ResourcePath", "parse_resource_path"]


@dataclass(frozen=True, slots=True)
class ResourcePath:
    group: str
    version: str
    resource: Resource | None  # None: the group/version discovery document
    namespace: str | None = None
    name: str | None = None
    subresource: str = ""
    subpath: str = ""  # e.g. the remainder of a proxy path
    legacy_watch: bool = False


def parse_resource_path(path: str, resources: ResourceRegistry) -> ResourcePath | None:
    """None if the path is not under /api/v1 or /apis/<g>/<v>."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return None
    if parts[0] == "api":
        if len(parts) < 2:
            return None
        group, version, rest = "", parts[1], parts[2:]
    elif parts[0] == "apis":
        if len(parts) < 3:
            return None
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not resources.in_group_version(group, version):
        raise errors.StatusError(404, "NotFound", "the server could not find the requested resource")
    if not rest:
        return ResourcePath(group, version, None)
    legacy_watch = False
    if rest[0] == "watch":
        legacy_watch = True
        rest = rest[1:]
        if not rest:
            raise errors.StatusError(404, "NotFound", "the server could not find the requested resource")

    def lookup(plural: str) -> Resource:
        r = resources.get(group, version, plural)
        if r is None:
            raise errors.StatusError(
                404, "NotFound", "the server could not find the requested resource")
        return r

    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        candidate = resources.get(group, version, rest[2])
        if candidate is not None and candidate.namespaced:
            namespace = rest[1]
            rest = rest[2:]
    res = lookup(rest[0])
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else ""
    subpath = "/".join(rest[3:]) if len(rest) > 3 else ""
    if sub and sub not in res.subresources:
        raise errors.StatusError(404, "NotFound", "the server could not find the requested resource")
    if res.namespaced and namespace is None and name is not None:
        # /api/v1/pods/foo is not a valid path for a namespaced resource
        raise errors.StatusError(404, "NotFound", "the server could not find the requested resource")
    return ResourcePath(group, version, res, namespace, name, sub, subpath, legacy_watch)
