#!/bin/sh
# Installs what k3py and its tests need on a fresh Debian 12 machine, idempotently:
# Python packages (the project itself, editable, with test extras) and the Debian packages
# that integration tests use. Safe to run again; does nothing that is already done.
set -eu
cd "$(dirname "$0")/.."

APT_PACKAGES="${K3PY_APT_PACKAGES:-iproute2 podman runc busybox-static mosquitto mosquitto-clients}"
missing=""
for p in $APT_PACKAGES; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "k3py setup: please install:$missing (needs root)" >&2
  fi
fi

# podman on this host needs runc (crun fails here) and explicit ulimits; set them only if unset.
CONTAINERS_CONF=/etc/containers/containers.conf
if [ "$(id -u)" = 0 ] && command -v podman >/dev/null 2>&1; then
  mkdir -p /etc/containers
  touch "$CONTAINERS_CONF"
  if ! grep -q '^[[:space:]]*runtime[[:space:]]*=' "$CONTAINERS_CONF"; then
    printf '\n[engine]\nruntime = "runc"\n' >> "$CONTAINERS_CONF"
  fi
  if ! grep -q '^[[:space:]]*default_ulimits[[:space:]]*=' "$CONTAINERS_CONF"; then
    printf '\n[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n' >> "$CONTAINERS_CONF"
  fi
fi

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import k3py, aiohttp, apsw, pytest, pytest_timeout, kubernetes' 2>/dev/null || \
   ! command -v kubectl >/dev/null 2>&1; then
  "$PY" -m pip install -q --disable-pip-version-check -e '.[test]'
fi
