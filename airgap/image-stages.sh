# Sourced by the image scripts after they define make_rootfs (which fills "$root"): makes
# "$root" and sets ARCH_FLAG for `podman import`. An image of another architecture is built in
# two steps, as airgap/build.sh does for arm64:
#   in a root of that architecture (chroot, qemu):  K3PY_IMAGE_STAGE=rootfs K3PY_IMAGE_ROOTFS=DIR
#     the script only fills DIR (no podman there) and exits;
#   then on the host:  K3PY_IMAGE_ROOTFS=DIR K3PY_IMAGE_ARCH=arm64  imports DIR as the image.
# Without these variables the root is made in a temporary directory for this host's arch.
# shellcheck shell=sh
if [ -n "${K3PY_IMAGE_ROOTFS:-}" ]; then
  root="$K3PY_IMAGE_ROOTFS"
  if [ "${K3PY_IMAGE_STAGE:-}" = rootfs ]; then
    rm -rf "$root"
    mkdir -p "$root"
    make_rootfs
    exit 0
  fi
  trap 'rm -f "$root.tar"' EXIT
else
  root="$(mktemp -d)"
  trap 'rm -rf "$root" "$root.tar"' EXIT
  make_rootfs
fi
# shellcheck disable=SC2034 # used by the script that sources this
ARCH_FLAG="${K3PY_IMAGE_ARCH:+--arch=$K3PY_IMAGE_ARCH}"
