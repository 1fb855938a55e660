"""Smoke test of a built one-file binary: `server` starts and `kubectl get ns` works through it.

Usage: python3 packaging/smoke_test.py dist/k3py  (run by .ci/run after packaging/build.sh)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.harness import ServerProcess  # noqa: E402


class BinaryServer(ServerProcess):
    def __init__(self, binary: str, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.binary = binary

    def command(self) -> list[str]:
        return [self.binary, *super().command()[3:]]


def main() -> int:
    binary = sys.argv[1] if len(sys.argv) > 1 else "dist/k3py"
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60)
    print(version.stdout.strip() or version.stderr.strip())
    if version.returncode != 0:
        print("smoke: --version failed", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        srv = BinaryServer(binary, Path(tmp) / "data")
        try:
            t0 = time.monotonic()
            srv.start(timeout=60)
            print(f"smoke: server ready in {time.monotonic() - t0:.2f}s")
            out = srv.kubectl("get", "ns")
            print(out.stdout)
            if "default" not in out.stdout or "kube-system" not in out.stdout:
                print("smoke: kubectl get ns did not list the system namespaces",
                      file=sys.stderr)
                return 1
        finally:
            srv.stop()
    print("smoke: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
