#!/bin/sh
# Builds the mapper image `k3py.local/mapper:latest` offline (no registry, no Dockerfile): a
# minimal Python root filesystem from this host's python3.11 (python-rootfs.sh), the k3py
# package from this checkout and the third-party packages `k3py mapper` imports (paho-mqtt,
# orjson, pyyaml; the dht11 package and RPi.GPIO too when this Python has them, as on a Pi),
# plus the demos' small programs under /opt/k3py-examples/ (publisher, analysis, web
# controller). Entrypoint: `python3 -m k3py`, so a pod's args are `mapper counter --device
# counter`; a container's `command` runs the demos' programs instead.
#   build-mapper-image.sh [OUT.tar]
# The image is built for this machine's architecture: build it on the Pi for a Pi. OUT is a
# docker-archive tarball for <data-dir>/agent/images/ (imported at agent start, or with
# `k3py airgap import OUT`). A tarball already at OUT is reused (K3PY_REBUILD=1 rebuilds);
# either way the image is made present in this host's podman storage. Another
# architecture's image: image-stages.sh.
set -eu
OUT="${1:-airgap/k3py-mapper.tar}"
IMAGE="${K3PY_MAPPER_IMAGE:-k3py.local/mapper:latest}"
PY="${K3PY_IMAGE_PYTHON:-$(command -v python3.11 || true)}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
if [ -s "$OUT" ] && [ "${K3PY_REBUILD:-0}" != 1 ] && [ -z "${K3PY_IMAGE_ROOTFS:-}" ]; then
  podman image exists "$IMAGE" || podman load -q -i "$OUT" >/dev/null
  echo "$OUT"
  exit 0
fi

make_rootfs() {
  [ -n "$PY" ] || { echo "build-mapper-image: python3.11 not found" >&2; exit 1; }
  "$PY" -c 'import paho.mqtt.client, orjson, yaml' 2>/dev/null || {
    echo "build-mapper-image: paho-mqtt, orjson and pyyaml must be installed for $PY" \
         "(pip install -e $REPO)" >&2; exit 1; }
  # what `python -m k3py mapper KIND` imports, for every KIND; the Pi's GPIO packages if present
  sh "$REPO/airgap/python-rootfs.sh" "$root" "$PY" '
import k3py.cli.mapper, k3py.mapper.counter, k3py.mapper.simulated, k3py.mapper.dht  # noqa
import paho.mqtt.client  # noqa: F401
for optional in ("dht11", "RPi.GPIO"):
    try:
        __import__(optional)
    except (ImportError, RuntimeError):
        pass'

  VER="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
  tar -C "$REPO" -cf - --exclude="__pycache__" k3py |
    tar -C "$root/usr/local/lib/python$VER/site-packages" -xf -
  mkdir -p "$root/opt/k3py-examples"
  (cd "$REPO/examples" && find . -name '*.py' ! -path '*/__pycache__/*' | tar -cf - -T -) |
    tar -C "$root/opt/k3py-examples" -xf -
}
# shellcheck source=airgap/image-stages.sh
. "$(dirname "$0")/image-stages.sh"

tar -C "$root" -cf "$root.tar" .
# shellcheck disable=SC2086 # ARCH_FLAG is empty or one word
podman import -q $ARCH_FLAG \
  --change 'ENTRYPOINT ["/usr/local/bin/python3", "-m", "k3py"]' \
  --change 'CMD ["mapper", "--help"]' \
  --change 'ENV PATH=/usr/local/bin' --change 'ENV LD_LIBRARY_PATH=/usr/local/lib' \
  --change 'ENV PYTHONDONTWRITEBYTECODE=1' --change 'ENV PYTHONUNBUFFERED=1' \
  "$root.tar" "$IMAGE" >/dev/null
mkdir -p "$(dirname "$OUT")"
rm -f "$OUT"
podman save -q --format docker-archive -o "$OUT" "$IMAGE" >/dev/null
echo "$OUT"
