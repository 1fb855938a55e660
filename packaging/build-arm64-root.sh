#!/bin/sh
# Make (once) and cache the arm64 Debian 12 root that packaging/build.sh arm64 builds in, on an
# amd64 host: debootstrap --foreign, second stage under qemu-user-static + binfmt, then a venv
# with Debian's Python 3.11, PyInstaller and k3py's dependencies from PyPI arm64 wheels.
# Usage: sh packaging/build-arm64-root.sh   (as root; prints the root's path on its last line)
# Cache: $K3PY_BUILD_CACHE/arm64-root (default /var/cache/k3py-build); a rerun only refreshes
# the venv when pyproject.toml's dependency list changed. K3PY_DEBIAN_MIRROR picks the mirror.
set -eu
cd "$(dirname "$0")/.."
CACHE="${K3PY_BUILD_CACHE:-/var/cache/k3py-build}"
ROOT="$CACHE/arm64-root"
MIRROR="${K3PY_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
VENV=/opt/k3py-build/venv
# Debian's Python with its shared library (PyInstaller bundles it) and binutils (strip);
# busybox-static for airgap/build.sh arm64's busybox image
PACKAGES="python3 python3-venv libpython3.11 binutils ca-certificates busybox-static"
log() { echo "[arm64-root] $*" >&2; }

[ "$(id -u)" = 0 ] || { log "error: needs root (debootstrap, chroot)"; exit 1; }

# qemu-user-static registers qemu-aarch64 with binfmt_misc; the F flag opens the interpreter at
# registration, so the chroot needs no copy of qemu
if ! command -v debootstrap >/dev/null || [ ! -x /usr/bin/qemu-aarch64-static ] \
    || ! command -v update-binfmts >/dev/null; then
  log "installing qemu-user-static binfmt-support debootstrap"
  apt-get install -y -q qemu-user-static binfmt-support debootstrap >/dev/null
fi
[ -e /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64
grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
  || { log "error: binfmt qemu-aarch64 is not enabled (update-binfmts --display qemu-aarch64)"; exit 1; }

in_root() { nice -n 10 chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  HOME=/root LANG=C.UTF-8 PIP_CERT=/etc/k3py-build/ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 "$@"; }

if [ ! -e "$ROOT/.debootstrap-done" ]; then
  rm -rf "$ROOT"
  mkdir -p "$ROOT"
  t0=$(date +%s)
  log "debootstrap stage 1 (bookworm arm64) into $ROOT"
  nice -n 10 debootstrap --arch=arm64 --foreign --variant=minbase \
    --include="$(echo "$PACKAGES" | tr ' ' ,)" \
    bookworm "$ROOT" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { log "error: debootstrap failed, see $CACHE/debootstrap.log"; exit 1; }
  log "debootstrap stage 2 under qemu (slow)"
  nice -n 10 chroot "$ROOT" /debootstrap/debootstrap --second-stage >>"$CACHE/debootstrap.log" 2>&1 \
    || { log "error: second stage failed, see $ROOT/debootstrap/debootstrap.log"; exit 1; }
  touch "$ROOT/.debootstrap-done"
  log "root ready in $(( $(date +%s) - t0 ))s"
fi

# apt and pip in the root use the host's resolver; pip reaches PyPI through this host's TLS
# setup, so it trusts the host's CA bundle
mkdir -p "$ROOT/etc/k3py-build"
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/k3py-build/ca.crt"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"

# a cached root from an older package list gets what is missing
# shellcheck disable=SC2086
if ! in_root dpkg -s $PACKAGES >/dev/null 2>&1; then
  log "installing $PACKAGES in the root"
  in_root apt-get update -q >"$CACHE/apt.log" 2>&1
  # shellcheck disable=SC2086
  in_root apt-get install -y -q --no-install-recommends $PACKAGES >>"$CACHE/apt.log" 2>&1
fi

# the build venv: PyInstaller and k3py's runtime dependencies (wheels preferred: little compiles
# under qemu), refreshed when the dependency list changes; the kubernetes client too, for
# airgap/build.sh arm64's python-k8s image (packaging/k3py.spec excludes it from the binary)
python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(p["dependencies"] + p["optional-dependencies"]["build"] + ["kubernetes"]))' >"$ROOT/etc/k3py-build/requirements.txt"
want=$(sha256sum "$ROOT/etc/k3py-build/requirements.txt" | cut -d' ' -f1)
if [ "$(cat "$ROOT$VENV/.requirements-sha256" 2>/dev/null)" != "$want" ]; then
  t0=$(date +%s)
  log "installing PyInstaller and k3py's dependencies into $VENV (arm64 wheels)"
  [ -x "$ROOT$VENV/bin/python" ] || in_root python3 -m venv "$VENV"
  in_root "$VENV/bin/pip" install -q --prefer-binary -r /etc/k3py-build/requirements.txt
  echo "$want" >"$ROOT$VENV/.requirements-sha256"
  log "venv ready in $(( $(date +%s) - t0 ))s"
fi
echo "$ROOT"
