"""One-file binary benchmark: size, cold start of `server` to /readyz and idle RSS of the
PyInstaller binary next to `python -m k3py` from the source tree, measured in the same run.

Run: python3 bench/binary.py [--binary dist/k3py-amd64] [--rounds N]  (build it first with
sh packaging/build.sh). Prints `name: value unit` lines and `ratio: x` lines (binary / python).
Servers listen on 127.0.0.1 on free ports with temporary data dirs; starts are interleaved so
both see the same machine load; every server is stopped, even on failure."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.api import emit, rss_mb  # noqa: E402
from tests.harness import ServerProcess  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"size": 30.0, "cold_start": 1.0}


def binary_server_class():
    """packaging/smoke_test.py's BinaryServer (packaging/ is no package: PyPI's `packaging`
    owns that import name)."""
    spec = importlib.util.spec_from_file_location("k3py_smoke_test",
                                                  ROOT / "packaging" / "smoke_test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.BinaryServer


def installed_size_mb() -> float:
    """What `pip install k3py` puts on disk next to an interpreter: k3py's source and the files
    of its dependencies (and theirs), without the interpreter itself."""
    total = sum(p.stat().st_size for p in (ROOT / "k3py").rglob("*")
                if p.is_file() and "__pycache__" not in p.parts)
    seen: set[str] = set()
    with open(ROOT / "pyproject.toml", "rb") as f:
        todo = list(tomllib.load(f)["project"]["dependencies"])
    while todo:
        name = re.split(r"[ ;<>=!~\[(]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        total += sum(f.locate().stat().st_size for f in dist.files or []
                     if f.locate().is_file() and "__pycache__" not in f.parts)
        todo += [r for r in dist.requires or [] if "extra ==" not in r]
    return total / 1e6


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and its children: the one-file binary is a bootloader process whose
    child runs Python."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return rss_mb(pid) + sum(tree_rss_mb(int(c)) for c in children)


def cold_start(server: ServerProcess) -> float:
    t0 = time.perf_counter()
    server.start(timeout=60)
    took = time.perf_counter() - t0
    server.stop()
    return took


def version_run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([*cmd, "--version"], check=True, capture_output=True, timeout=60)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=str(ROOT / "dist" / "k3py-amd64"))
    ap.add_argument("--rounds", type=int, default=5, help="cold starts of each (default 5)")
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    if not os.access(binary, os.X_OK):
        print(f"error: no binary at {binary}; build it with sh packaging/build.sh",
              file=sys.stderr)
        return 1
    BinaryServer = binary_server_class()
    size, installed = os.path.getsize(binary) / 1e6, installed_size_mb()
    emit("binary_size", size, "MB", f"<= {TARGETS['size']:.0f} MB")
    emit("python_install_size", installed, "MB")
    print(f"ratio: {size / installed:.2f}   (binary / k3py + dependencies installed)")
    python = [sys.executable, "-m", "k3py"]
    emit("binary_version_run", version_run([binary]), "s")
    emit("python_version_run", version_run(python), "s")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bin_starts, py_starts = [], []
        for i in range(args.rounds):
            bin_starts.append(cold_start(BinaryServer([binary], tmp / f"bin{i}", {})))
            py_starts.append(cold_start(ServerProcess(tmp / f"py{i}")))
        b, p = statistics.median(bin_starts), statistics.median(py_starts)
        emit("binary_cold_start_to_readyz", b, "s", f"<= {TARGETS['cold_start']} s")
        emit("python_cold_start_to_readyz", p, "s")
        print(f"ratio: {b / p:.2f}   (binary / python -m k3py cold start, median of "
              f"{args.rounds})")
        rss = {}
        for name, srv in (("binary", BinaryServer([binary], tmp / "bin-idle", {})),
                          ("python", ServerProcess(tmp / "py-idle"))):
            srv.start(timeout=60)
            try:
                time.sleep(2.0)  # past start-up: controllers synced, nothing to do
                rss[name] = tree_rss_mb(srv.proc.pid)
            finally:
                srv.stop()
        emit("binary_idle_rss", rss["binary"], "MB")
        emit("python_idle_rss", rss["python"], "MB")
        print(f"ratio: {rss['binary'] / rss['python']:.2f}   (binary / python -m k3py idle "
              "RSS, bootloader + Python for the binary)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
