#!/bin/sh
# Builds the air-gap images tarball, as K3s's k3s-airgap-images-<arch>.tar.zst:
#   airgap/build.sh [amd64|arm64]   ->  dist/k3py-airgap-images-<arch>.tar.zst
# One multi-image docker-archive, zstd-compressed, with every image the built-in features,
# the examples and the tests use, each built offline by the scripts beside this one:
#   k3py.local/mapper:latest      the device mappers and the demos' programs (examples/)
#   k3py.local/busybox:latest     the small test and demo image
#   k3py.local/python-k8s:latest  python with the official kubernetes client
# Copy it to <data-dir>/agent/images/ on a node: the agent imports it at start (one line
# per image; skipped once imported) and never pulls an image it carries.
# The images are built in a podman storage of their own (build/airgap-<arch>/storage), so the
# host's images are untouched; the per-image tarballs there are reused (K3PY_REBUILD=1 rebuilds).
# The images are made from this host's binaries, so only this host's architecture can be
# built: build the arm64 tarball on an arm64 machine (a Pi) with the same command.
set -eu
REPO="$(cd "$(dirname "$0")/.." && pwd)"
HOST_ARCH="$(dpkg --print-architecture 2>/dev/null || uname -m)"
case "$HOST_ARCH" in x86_64) HOST_ARCH=amd64 ;; aarch64) HOST_ARCH=arm64 ;; esac
ARCH="${1:-$HOST_ARCH}"
case "$ARCH" in
  amd64|arm64) ;;
  *) echo "airgap/build.sh: unknown architecture '$ARCH' (amd64 or arm64)" >&2; exit 1 ;;
esac
if [ "$ARCH" != "$HOST_ARCH" ]; then
  echo "airgap/build.sh: the images are made from this host's binaries ($HOST_ARCH);" \
       "run this script on an $ARCH machine to build the $ARCH tarball" >&2
  exit 1
fi
for tool in podman zstd; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "airgap/build.sh: $tool is not installed (apt-get install $tool)" >&2; exit 1; }
done

WORK="$REPO/build/airgap-$ARCH"
OUT="$REPO/dist/k3py-airgap-images-$ARCH.tar.zst"
mkdir -p "$WORK/storage" "$WORK/run" "$REPO/dist"
# a podman storage of this build's own: CONTAINERS_STORAGE_CONF is read by every podman call
cat > "$WORK/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$WORK/storage"
runroot = "$WORK/run"
EOF
CONTAINERS_STORAGE_CONF="$WORK/storage.conf"
export CONTAINERS_STORAGE_CONF

IMAGES="k3py.local/mapper:latest k3py.local/busybox:latest k3py.local/python-k8s:latest"
sh "$REPO/airgap/build-test-image.sh" "$WORK/busybox.tar" >/dev/null
sh "$REPO/airgap/build-python-image.sh" "$WORK/python-k8s.tar" >/dev/null
sh "$REPO/airgap/build-mapper-image.sh" "$WORK/mapper.tar" >/dev/null

rm -f "$WORK/images.tar" "$OUT.partial"
# shellcheck disable=SC2086 # IMAGES is a list of image names
podman save -q -m --format docker-archive -o "$WORK/images.tar" $IMAGES
zstd -q -T0 -19 "$WORK/images.tar" -o "$OUT.partial"
mv "$OUT.partial" "$OUT"
rm -f "$WORK/images.tar"
echo "$OUT ($(du -h "$OUT" | cut -f1)): $IMAGES"
