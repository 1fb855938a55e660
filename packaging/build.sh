#!/bin/sh
# Build the one-file binary dist/k3py-<arch> (amd64 or arm64) with PyInstaller, and its checksum
# file dist/sha256sum-<arch>.txt, from a clean checkout. The host's own arch builds natively
# (dist/k3py then links to it); arm64 on an amd64 host builds in the cached arm64 Debian root of
# packaging/build-arm64-root.sh under qemu (slow: minutes).
# Usage: sh packaging/build.sh [amd64|arm64]   (default: this machine's; PYTHON=python3.11 ...)
set -eu
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
log() { echo "[build] $*"; }

case "$(uname -m)" in
  x86_64|amd64) HOST=amd64 ;;
  aarch64|arm64) HOST=arm64 ;;
  *) HOST="$(uname -m)" ;;
esac
ARCH="${1:-$HOST}"
case "$ARCH" in
  amd64|arm64) ;;
  *) echo "[build] error: unknown arch '$ARCH' (amd64 or arm64)" >&2; exit 2 ;;
esac
BIN="k3py-$ARCH"
OUT="build/$ARCH"
PYI_FLAGS="--noconfirm --clean --log-level WARN"

native_build() {
  "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "k3py needs Python 3.11+"' \
    || { echo "[build] error: $PYTHON is older than 3.11; set PYTHON=python3.11" >&2; exit 1; }
  if ! "$PYTHON" -m PyInstaller --version >/dev/null 2>&1; then
    log "installing PyInstaller"
    "$PYTHON" -m pip install -q "pyinstaller>=6"
  fi
  # the runtime dependencies must be importable for PyInstaller to bundle them
  if ! "$PYTHON" -c 'import aiohttp, apsw, cryptography, yaml, orjson, amqtt, paho.mqtt, dns' \
      >/dev/null 2>&1; then
    log "installing k3py's dependencies"
    "$PYTHON" -m pip install -q .
  fi
  # a private PyInstaller cache: concurrent builds sharing ~/.cache/pyinstaller clobber each other
  # shellcheck disable=SC2086
  PYINSTALLER_CONFIG_DIR="$PWD/$OUT/cache" "$PYTHON" -m PyInstaller $PYI_FLAGS \
    --distpath "$OUT/dist" --workpath "$OUT/work" packaging/k3py.spec
}

arm64_on_amd64_build() {
  ROOT="$(sh packaging/build-arm64-root.sh | tail -n 1)"
  # the source goes into the root (a copy, not a bind mount: nothing to unmount on failure)
  rm -rf "$ROOT/build"
  mkdir -p "$ROOT/build/src"
  tar -cf - --exclude=__pycache__ --exclude='*.pyc' k3py packaging pyproject.toml \
    | tar -xf - -C "$ROOT/build/src"
  # shellcheck disable=SC2086
  nice -n 10 chroot "$ROOT" /usr/bin/env -i -C /build/src PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 PYINSTALLER_CONFIG_DIR=/build/cache \
    /opt/k3py-build/venv/bin/python -m PyInstaller $PYI_FLAGS \
    --distpath /build/dist --workpath /build/work /build/src/packaging/k3py.spec
  mkdir -p "$OUT/dist"
  cp "$ROOT/build/dist/k3py" "$OUT/dist/k3py"
  rm -rf "$ROOT/build"
}

t0=$(date +%s)
log "building dist/$BIN for linux/$ARCH on linux/$HOST"
if [ "$ARCH" = "$HOST" ]; then
  native_build
elif [ "$ARCH" = arm64 ] && [ "$HOST" = amd64 ]; then
  arm64_on_amd64_build
else
  echo "[build] error: cannot build linux/$ARCH on linux/$HOST (only arm64 on amd64 is set up)" >&2
  exit 2
fi
mkdir -p dist
cp "$OUT/dist/k3py" "dist/$BIN"
(cd dist && sha256sum "$BIN" >"sha256sum-$ARCH.txt")
if [ "$ARCH" = "$HOST" ]; then
  ln -sfn "$BIN" dist/k3py  # what .ci/run and install.sh from a checkout run
  "./dist/$BIN" --version
else
  QEMU_LD_PREFIX="$ROOT" qemu-aarch64-static "dist/$BIN" --version
fi
log "ok: dist/$BIN ($(du -h "dist/$BIN" | cut -f1), linux/$ARCH) in $(( $(date +%s) - t0 ))s"
if [ "$ARCH" != "$HOST" ]; then
  log "smoke test: python3 packaging/smoke_test.py dist/$BIN --qemu $ROOT"
fi
