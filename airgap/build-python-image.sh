#!/bin/sh
# Builds the offline test image `k3py.local/python-k8s:latest` (no registry): the host's
# python3.11 binary, the shared libraries it and its extension modules need (ldd), the
# standard library without tests/GUI/dev tools, and the official `kubernetes` client with its
# dependencies copied from this Python's site-packages. Saved as a docker-archive tarball:
#   build-python-image.sh [OUT.tar]
# A tarball already at OUT is reused (set K3PY_REBUILD=1 to rebuild); either way the image is
# made present in podman's storage. Another architecture's image: image-stages.sh.
set -eu
OUT="${1:-airgap/python-k8s.tar}"
IMAGE="${K3PY_PYTHON_IMAGE:-k3py.local/python-k8s:latest}"
PY="${K3PY_IMAGE_PYTHON:-$(command -v python3.11)}"
if [ -s "$OUT" ] && [ "${K3PY_REBUILD:-0}" != 1 ] && [ -z "${K3PY_IMAGE_ROOTFS:-}" ]; then
  podman image exists "$IMAGE" || podman load -q -i "$OUT" >/dev/null
  echo "$OUT"
  exit 0
fi

make_rootfs() {
  [ -n "$PY" ] || { echo "build-python-image: python3.11 not found" >&2; exit 1; }
  "$PY" -c 'import kubernetes' 2>/dev/null || {
    echo "build-python-image: the kubernetes package is not installed for $PY" >&2; exit 1; }
  # the kubernetes client and what it imports; kubernetes/aio (the asyncio client, 40 MB) is
  # not imported by the synchronous client
  sh "$(dirname "$0")/python-rootfs.sh" "$root" "$PY" '
from kubernetes import client, config, watch, stream  # noqa: F401
import kubernetes.config.incluster_config  # noqa: F401' "kubernetes/aio"
}
# shellcheck source=airgap/image-stages.sh
. "$(dirname "$0")/image-stages.sh"

tar -C "$root" -cf "$root.tar" .
# shellcheck disable=SC2086 # ARCH_FLAG is empty or one word
podman import -q $ARCH_FLAG --change 'CMD ["/usr/local/bin/python3"]' \
  --change 'ENV PATH=/usr/local/bin' --change 'ENV LD_LIBRARY_PATH=/usr/local/lib' \
  --change 'ENV PYTHONDONTWRITEBYTECODE=1' "$root.tar" "$IMAGE" >/dev/null
mkdir -p "$(dirname "$OUT")"
rm -f "$OUT"
podman save -q --format docker-archive -o "$OUT" "$IMAGE" >/dev/null
echo "$OUT"
