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
# The images are made from this host's binaries. On an amd64 host, `airgap/build.sh arm64`
# makes the arm64 images' root filesystems in the cached arm64 Debian root of
# packaging/build-arm64-root.sh (under qemu-user-static: its Python, busybox-static and PyPI
# arm64 wheels), then imports them here as arm64 images (image-stages.sh); minutes, not in CI.
# On a Pi the same command builds natively.
set -eu
REPO="$(cd "$(dirname "$0")/.." && pwd)"
HOST_ARCH="$(dpkg --print-architecture 2>/dev/null || uname -m)"
case "$HOST_ARCH" in x86_64) HOST_ARCH=amd64 ;; aarch64) HOST_ARCH=arm64 ;; esac
ARCH="${1:-$HOST_ARCH}"
case "$ARCH" in
  amd64|arm64) ;;
  *) echo "airgap/build.sh: unknown architecture '$ARCH' (amd64 or arm64)" >&2; exit 1 ;;
esac
if [ "$ARCH" != "$HOST_ARCH" ] && [ "$ARCH/$HOST_ARCH" != arm64/amd64 ]; then
  echo "airgap/build.sh: the $ARCH images are built on an $ARCH machine or, for arm64, an" \
       "amd64 one (this is $HOST_ARCH)" >&2
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
build_image() {  # SCRIPT NAME: dist tarball $WORK/NAME.tar, made for $ARCH
  if [ "$ARCH" = "$HOST_ARCH" ]; then
    sh "$REPO/airgap/$1" "$WORK/$2.tar" >/dev/null
    return
  fi
  [ ! -s "$WORK/$2.tar" ] || [ "${K3PY_REBUILD:-0}" = 1 ] || return 0
  # the root filesystem made in the arm64 root, from a copy of this checkout's parts it needs
  src=/tmp/k3py-airgap-src
  rm -rf "$CROSS_ROOT$src" "$CROSS_ROOT/tmp/k3py-airgap-$2"
  mkdir -p "$CROSS_ROOT$src"
  tar -C "$REPO" -cf - --exclude=__pycache__ k3py examples airgap | tar -C "$CROSS_ROOT$src" -xf -
  chroot "$CROSS_ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    K3PY_IMAGE_STAGE=rootfs K3PY_IMAGE_ROOTFS="/tmp/k3py-airgap-$2" \
    K3PY_IMAGE_PYTHON=/opt/k3py-build/venv/bin/python sh "$src/airgap/$1" >/dev/null
  K3PY_IMAGE_ROOTFS="$CROSS_ROOT/tmp/k3py-airgap-$2" K3PY_IMAGE_ARCH="$ARCH" \
    sh "$REPO/airgap/$1" "$WORK/$2.tar" >/dev/null
  rm -rf "$CROSS_ROOT$src" "$CROSS_ROOT/tmp/k3py-airgap-$2"
}
if [ "$ARCH" != "$HOST_ARCH" ]; then
  CROSS_ROOT="$(sh "$REPO/packaging/build-arm64-root.sh" | tail -n 1)"
fi
build_image build-test-image.sh busybox
build_image build-python-image.sh python-k8s
build_image build-mapper-image.sh mapper

for image in $IMAGES; do  # each image is of the tarball's architecture
  got="$(podman image inspect --format '{{.Architecture}}' "$image")"
  [ "$got" = "$ARCH" ] || { echo "airgap/build.sh: $image is $got, not $ARCH" >&2; exit 1; }
done
rm -f "$WORK/images.tar" "$OUT.partial"
# shellcheck disable=SC2086 # IMAGES is a list of image names
podman save -q -m --format docker-archive -o "$WORK/images.tar" $IMAGES
zstd -q -T0 -19 "$WORK/images.tar" -o "$OUT.partial"
mv "$OUT.partial" "$OUT"
rm -f "$WORK/images.tar"
echo "$OUT ($(du -h "$OUT" | cut -f1)): $IMAGES"
