#!/bin/sh
# Builds the offline test image `k3py.local/busybox:latest` from Debian's busybox-static
# (no registry needed) and saves it as a docker-archive tarball: build-test-image.sh [OUT.tar]
# Another architecture's image is made in two steps (image-stages.sh), as airgap/build.sh
# does for arm64.
set -eu
OUT="${1:-airgap/busybox.tar}"
IMAGE="${K3PY_TEST_IMAGE:-k3py.local/busybox:latest}"

make_rootfs() {
  BUSYBOX="$(command -v busybox)"
  file "$BUSYBOX" 2>/dev/null | grep -q static || [ -x /bin/busybox ] || {
    echo "build-test-image: install busybox-static first" >&2; exit 1; }
  mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/proc" "$root/sys" "$root/dev" "$root/root"
  cp "$BUSYBOX" "$root/bin/busybox"
  for applet in $("$BUSYBOX" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
  echo 'root:x:0:' > "$root/etc/group"
}
# shellcheck source=airgap/image-stages.sh
. "$(dirname "$0")/image-stages.sh"

tar -C "$root" -cf "$root.tar" .
# shellcheck disable=SC2086 # ARCH_FLAG is empty or one word
podman import -q $ARCH_FLAG --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/bin' "$root.tar" "$IMAGE" >/dev/null
rm -f "$root.tar"
mkdir -p "$(dirname "$OUT")"
rm -f "$OUT"
podman save -q --format docker-archive -o "$OUT" "$IMAGE" >/dev/null
echo "$OUT"
