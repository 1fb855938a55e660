"""Air-gapped images: import docker-archive / oci-archive tarballs (.tar, .tar.gz, .tar.zst,
.tar.xz) into podman, at agent start from <data-dir>/agent/images/ and for `k3py airgap import`;
loads through the runtime's `load_archive` and checks with its `image_exists` (podman.py).

Podman 4.3 loads plain and zstd tarballs itself but not a gzipped docker-archive, so a tarball
podman refuses is decompressed (streaming, to a temporary file) and loaded again. Tarballs
already imported are skipped on restart: a state file remembers each one's size, mtime, sha256
and the images it held, and those images must still be in podman's storage. Every image a
tarball holds goes into the runtime's `airgap_images`, which ensure_image never pulls."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import logging
import lzma
import os
import shutil
import tempfile
import time
from dataclasses import dataclass

from k3py.agent.runtime.podman import Podman, RuntimeError_, full_reference

__all__ = ["ImportError_", "TARBALL_SUFFIXES", "tarballs_in", "import_tarball", "import_dir"]

log = logging.getLogger("k3py.images")

TARBALL_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.zstd", ".tar.xz")
_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd", b"\xfd7zXZ\x00": "xz"}
STATE_FILE = "images-imported.json"


class ImportError_(Exception):
    """A tarball podman could not import (message folded to one line)."""


@dataclass(frozen=True)
class _Fingerprint:
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str) -> _Fingerprint:
        st = os.stat(path)
        return cls(st.st_size, st.st_mtime_ns)


def tarballs_in(directory: str) -> list[str]:
    """Image tarballs in `directory`, sorted by name (other files are ignored)."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    return [os.path.join(directory, n) for n in names
            if n.lower().endswith(TARBALL_SUFFIXES)
            and os.path.isfile(os.path.join(directory, n))]


def compression_of(path: str) -> str:
    """"gzip", "zstd", "xz" or "" (plain tar), from the file's first bytes, not its name."""
    with open(path, "rb") as f:
        head = f.read(6)
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return kind
    return ""


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _one_line(text: str) -> str:
    lines = [ln.strip(" *") for ln in text.strip().splitlines() if ln.strip()]
    return "; ".join(lines)[:400] or "podman load failed"


async def _decompress(path: str, kind: str, out_path: str) -> None:
    """Stream-decompress `path` into `out_path` without holding it in memory."""
    if kind == "zstd":
        if shutil.which("zstd"):
            proc = await asyncio.create_subprocess_exec(
                "zstd", "-d", "-q", "-f", "-o", out_path, path,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE)
            _, err = await proc.communicate()
            if proc.returncode != 0:
                raise ImportError_(f"zstd -d failed: {_one_line(err.decode(errors='replace'))}")
            return
        try:
            import zstandard  # type: ignore[import-not-found]
        except ImportError:
            raise ImportError_("podman cannot load this zstd tarball and neither the zstd "
                               "command nor the zstandard package is installed") from None

        def run_zstd() -> None:
            with open(path, "rb") as src, open(out_path, "wb") as dst:
                zstandard.ZstdDecompressor().copy_stream(src, dst)
        await asyncio.to_thread(run_zstd)
        return
    opener = {"gzip": gzip.open, "xz": lzma.open}[kind]

    def run() -> None:
        with opener(path, "rb") as src, open(out_path, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    try:
        await asyncio.to_thread(run)
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise ImportError_(f"cannot decompress ({kind}): {e}") from None


async def import_tarball(runtime: Podman, path: str) -> list[str]:
    """Load one tarball into `runtime`; returns the image names it held.
    Raises ImportError_ with podman's reason in one line."""
    try:
        return await runtime.load_archive(path)
    except RuntimeError_ as e:
        first_error = _one_line(str(e))
    kind = await asyncio.to_thread(compression_of, path)
    if not kind:
        raise ImportError_(first_error)
    fd, plain = tempfile.mkstemp(prefix="k3py-image-", suffix=".tar")
    os.close(fd)
    try:
        await _decompress(path, kind, plain)
        try:
            return await runtime.load_archive(plain)
        except RuntimeError_ as e:
            raise ImportError_(_one_line(str(e))) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(plain)


class _State:
    """{file name: {size, mtime_ns, sha256, images}} of tarballs imported before."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            with open(path) as f:
                self.entries: dict[str, dict] = json.load(f)
        except (OSError, ValueError):
            self.entries = {}

    def save(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.entries, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)


async def _still_imported(runtime: Podman, entry: dict | None, path: str) -> bool:
    if not entry or not entry.get("images"):
        return False
    fp = await asyncio.to_thread(_Fingerprint.of, path)
    if (entry.get("size"), entry.get("mtime_ns")) != (fp.size, fp.mtime_ns):
        # touched or replaced: the same bytes (a copy, a re-download) need no new import
        if entry.get("size") != fp.size or entry.get("sha256") != await asyncio.to_thread(
                _sha256, path):
            return False
        entry["mtime_ns"] = fp.mtime_ns
    for image in entry["images"]:
        try:
            if not await runtime.image_exists(image):
                return False  # removed from podman's storage since (podman rmi, new --podman-root)
        except RuntimeError_:
            return False  # podman cannot tell: import again
    return True


async def import_dir(runtime: Podman, directory: str, state_path: str | None = None) -> list[str]:
    """Import every tarball in `directory` not imported before; returns the paths imported.
    A failure is one warning line naming the file, and the next start tries it again."""
    state = _State(state_path or os.path.join(os.path.dirname(directory.rstrip("/")),
                                               STATE_FILE))
    imported: list[str] = []
    changed = False
    for path in tarballs_in(directory):
        name = os.path.basename(path)
        entry = state.entries.get(name)
        before = dict(entry or {})
        try:
            if await _still_imported(runtime, entry, path):
                held = (entry or {}).get("images", [])
                log.info("image tarball %s already imported: %s", path, ", ".join(held))
                runtime.airgap_images.update(full_reference(i) for i in held)
                changed = changed or entry != before  # a new mtime for the same bytes
                continue
            size_mb = (await asyncio.to_thread(os.path.getsize, path)) / 1e6
            log.info("importing image tarball %s (%.1f MB)", path, size_mb)
            started = time.monotonic()
            images = await import_tarball(runtime, path)
            fp = await asyncio.to_thread(_Fingerprint.of, path)
            state.entries[name] = {"size": fp.size, "mtime_ns": fp.mtime_ns,
                                   "sha256": await asyncio.to_thread(_sha256, path),
                                   "images": images}
            runtime.airgap_images.update(full_reference(i) for i in images)
            changed = True
            imported.append(path)
            for image in images:
                log.info("imported image %s from %s", image, name)
            log.info("imported image tarball %s in %.1fs: %d image(s)", path,
                     time.monotonic() - started, len(images))
        except (ImportError_, OSError) as e:
            log.warning("could not import image tarball %s: %s", path, e)
            if state.entries.pop(name, None) is not None:
                changed = True
    for name in [n for n in state.entries if not os.path.exists(os.path.join(directory, n))]:
        del state.entries[name]
        changed = True
    if changed:
        with contextlib.suppress(OSError):
            await asyncio.to_thread(state.save)
    return imported
