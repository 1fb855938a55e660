"""A dashboard's static files, read once from the packages that hold them (each one's static/
folder, through importlib.resources, so they ride in the wheel and the PyInstaller binary),
served as one tree, each kept gzip-compressed too.

Scripts, stylesheets and the icon get content-hashed names (`app.3f2a9c01b2d4.js`) and are
served as immutable; a file that names another asset (index.html, app.js) has those names
rewritten to the hashed ones before it is hashed itself. Each page names its icon
(favicon.svg), so that no browser asks the server's /favicon.ico, which is the API's and
answers 401 to a caller without credentials. index.html, the licences and the vendor manifest
keep their names and are revalidated on every load. Read by k3py.server.dashboard (with
this package's shared static/) and k3py.agent.dashboard."""

from __future__ import annotations

import gzip
import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

__all__ = ["Asset", "SECURITY_HEADERS", "load_assets", "served"]

# on every dashboard response: the page loads nothing from another origin and is never framed
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY"}

_HASHED_SUFFIXES = (".js", ".mjs", ".css", ".svg")
_TEXT_SUFFIXES = (".html", ".js", ".mjs", ".css")
_TYPES = {".mjs": "text/javascript; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".html": "text/html; charset=utf-8",
          ".json": "application/json", ".svg": "image/svg+xml"}  # else (licences) text/plain


@dataclass(frozen=True)
class Asset:
    """One file as served: its body, the same gzipped, its type, and whether it may be
    cached for good (its name carries its hash)."""
    body: bytes
    gzipped: bytes
    content_type: str
    immutable: bool


def served(asset: Asset, accept_encoding: str) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of `asset` as a response: gzipped when the client takes it, cached for
    good when its name carries its hash, revalidated otherwise."""
    headers = {**SECURITY_HEADERS, "Vary": "Accept-Encoding", "Content-Type": asset.content_type,
               "Cache-Control": "public, max-age=31536000, immutable" if asset.immutable
               else "no-cache"}
    if "gzip" in accept_encoding:
        headers["Content-Encoding"] = "gzip"
        return asset.gzipped, headers
    return asset.body, headers


def _walk(root: Traversable, prefix: str = "") -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for entry in root.iterdir():
        name = prefix + entry.name
        if entry.is_dir():
            out.update(_walk(entry, name + "/"))
        elif not entry.name.startswith("."):
            out[name] = entry.read_bytes()
    return out


def _suffix(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:] if dot > name.rfind("/") else ""


def _hashed_name(name: str, body: bytes) -> str:
    suffix = _suffix(name)
    return f"{name[:-len(suffix)]}.{hashlib.sha256(body).hexdigest()[:12]}{suffix}"


def _reference(name: str) -> re.Pattern[bytes]:
    """A quoted mention of another asset: "app.js", './vendor/preact.mjs'."""
    return re.compile(rb"""(["'])(\./)?""" + re.escape(name.encode()) + rb"\1")


def build_assets(files: dict[str, bytes]) -> dict[str, Asset]:
    """Files by their path under static/ -> assets by the path they are served at."""
    renamed: dict[str, str] = {}  # original path -> hashed path, filled leaves first
    pending = dict(files)
    out: dict[str, Asset] = {}
    while pending:
        ready = [name for name, body in pending.items()
                 if _suffix(name) not in _TEXT_SUFFIXES
                 or not any(_reference(other).search(body) for other in pending if other != name)]
        if not ready:
            raise ValueError(f"dashboard assets name each other in a cycle: {sorted(pending)}")
        for name in ready:
            body = pending.pop(name)
            if _suffix(name) in _TEXT_SUFFIXES:
                for old, new in renamed.items():
                    body = _reference(old).sub(
                        lambda m, new=new: m[1] + (m[2] or b"") + new.encode() + m[1], body)
            hashed = _suffix(name) in _HASHED_SUFFIXES
            served = _hashed_name(name, body) if hashed else name
            renamed[name] = served
            out[served] = Asset(body, gzip.compress(body, 9, mtime=0),
                                _TYPES.get(_suffix(name), "text/plain; charset=utf-8"), hashed)
    return out


def load_assets(*packages: str) -> dict[str, Asset]:
    """This package's static/ folder and those of `packages`, as one tree ready to serve (a
    path in two of them is an error)."""
    files: dict[str, bytes] = {}
    for package in (__package__, *packages):
        found = _walk(resources.files(package) / "static")
        if clash := sorted(set(found) & set(files)):
            raise ValueError(f"dashboard assets of {package} clash with others: {clash}")
        files.update(found)
    return build_assets(files)
