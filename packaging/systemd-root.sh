#!/bin/sh
# Make (once) and cache a Debian 12 amd64 root with a real systemd and podman, in which
# tests/integration/test_install.py runs install.sh under systemd as PID 1 (a podman container
# started with --systemd=always on an overlay of this root, so the cached root stays clean; the
# agent flavour's pods run in the container's own podman).
# Usage: sh packaging/systemd-root.sh   (as root; prints the root's path on its last line)
# Cache: $K3PY_TEST_CACHE/systemd-root-<sum> (default /var/cache/k3py-test); ~3 min to build
# from the Debian mirror (K3PY_DEBIAN_MIRROR), nothing when present. K3PY_REBUILD=1 rebuilds.
set -eu
CACHE="${K3PY_TEST_CACHE:-/var/cache/k3py-test}"
MIRROR="${K3PY_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# systemd as init, curl for `curl | sh`, busybox for the test's mirror (httpd), procps for pgrep;
# podman (netavark, iptables), runc, catatonit, iproute2 and nftables for the agent flavour's
# pods (the container has no network to apt-get them from). The root's name carries the list's
# checksum: a changed list makes a new root beside the old one, which a test of an older
# checkout may be running on.
PACKAGES="systemd systemd-sysv dbus curl ca-certificates procps busybox podman runc catatonit \
iproute2 nftables netavark aardvark-dns iptables"
ROOT="$CACHE/systemd-root-$(echo "$PACKAGES" | cksum | cut -d' ' -f1)"
log() { echo "[systemd-root] $*" >&2; }

[ "$(id -u)" = 0 ] || { log "error: needs root (debootstrap)"; exit 1; }
if [ "${K3PY_REBUILD:-0}" = 1 ]; then rm -rf "$ROOT"; fi
if [ ! -e "$ROOT/.k3py-root-done" ]; then
  command -v debootstrap >/dev/null || {
    log "installing debootstrap"
    apt-get install -y -q debootstrap >/dev/null; }
  mkdir -p "$CACHE"
  rm -rf "$ROOT.partial"
  t0=$(date +%s)
  log "debootstrap bookworm amd64 (minbase + $PACKAGES) into $ROOT"
  nice -n 10 debootstrap --arch=amd64 --variant=minbase --include="$(echo "$PACKAGES" | tr ' ' ,)" \
    bookworm "$ROOT.partial" "$MIRROR" >"$ROOT.log" 2>&1 \
    || { log "error: debootstrap failed, see $ROOT.log"; exit 1; }
  # no getty on a container's console, no apt timers
  chroot "$ROOT.partial" systemctl mask console-getty.service getty@tty1.service \
    apt-daily.timer apt-daily-upgrade.timer >/dev/null 2>&1 || true
  touch "$ROOT.partial/.k3py-root-done"
  mv "$ROOT.partial" "$ROOT"
  log "root ready in $(( $(date +%s) - t0 ))s"
fi
echo "$ROOT"
