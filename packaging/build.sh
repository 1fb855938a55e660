#!/bin/sh
# Build the one-file binary dist/k3py for this machine's architecture (amd64 or arm64) with
# PyInstaller, from a clean checkout. Usage: sh packaging/build.sh  (PYTHON=python3.11 ...)
set -eu
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "k3py needs Python 3.11+"' \
  || { echo "[build] error: $PYTHON is older than 3.11; set PYTHON=python3.11" >&2; exit 1; }
if ! "$PYTHON" -m PyInstaller --version >/dev/null 2>&1; then
  echo "[build] installing PyInstaller"
  "$PYTHON" -m pip install -q "pyinstaller>=6"
fi
# the runtime dependencies must be importable for PyInstaller to bundle them
if ! "$PYTHON" -c 'import aiohttp, apsw, cryptography, yaml, orjson' >/dev/null 2>&1; then
  echo "[build] installing k3py's dependencies"
  "$PYTHON" -m pip install -q .
fi

case "$(uname -m)" in
  x86_64|amd64) ARCH=amd64 ;;
  aarch64|arm64) ARCH=arm64 ;;
  *) ARCH="$(uname -m)" ;;
esac
echo "[build] building dist/k3py for linux/$ARCH"
"$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN \
  --distpath dist --workpath build/pyinstaller packaging/k3py.spec

./dist/k3py --version
echo "[build] ok: dist/k3py ($(du -h dist/k3py | cut -f1), linux/$ARCH)"
