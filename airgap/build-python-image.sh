#!/bin/sh
# Builds the offline test image `k3py.local/python-k8s:latest` (no registry): the host's
# python3.11 binary, the shared libraries it and its extension modules need (ldd), the
# standard library without tests/GUI/dev tools, and the official `kubernetes` client with its
# dependencies copied from this Python's site-packages. Saved as a docker-archive tarball:
#   build-python-image.sh [OUT.tar]
# A tarball already at OUT is reused (set K3PY_REBUILD=1 to rebuild); either way the image is
# made present in podman's storage.
set -eu
OUT="${1:-airgap/python-k8s.tar}"
IMAGE="${K3PY_PYTHON_IMAGE:-k3py.local/python-k8s:latest}"
PY="${K3PY_IMAGE_PYTHON:-$(command -v python3.11)}"
if [ -s "$OUT" ] && [ "${K3PY_REBUILD:-0}" != 1 ]; then
  podman image exists "$IMAGE" || podman load -q -i "$OUT" >/dev/null
  echo "$OUT"
  exit 0
fi
[ -n "$PY" ] || { echo "build-python-image: python3.11 not found" >&2; exit 1; }
# the real binary and its prefix (pyenv shims are scripts)
BIN="$("$PY" -c 'import sys, os; print(os.path.realpath(sys.executable))')"
PREFIX="$("$PY" -c 'import sys; print(sys.base_prefix)')"
STDLIB="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')"
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
VER="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
"$PY" -c 'import kubernetes' 2>/dev/null || {
  echo "build-python-image: the kubernetes package is not installed for $PY" >&2; exit 1; }

root="$(mktemp -d)"
trap 'rm -rf "$root" "$root.tar"' EXIT
mkdir -p "$root/usr/local/bin" "$root/usr/local/lib" "$root/tmp" "$root/etc" "$root/root"
chmod 1777 "$root/tmp"
cp "$BIN" "$root/usr/local/bin/python$VER"
ln -s "python$VER" "$root/usr/local/bin/python3"
ln -s "python$VER" "$root/usr/local/bin/python"

# standard library: no tests, GUI, packaging or dev tools, no caches
tar -C "$STDLIB/.." -cf - \
  --exclude="python$VER/test" --exclude="python$VER/idlelib" \
  --exclude="python$VER/tkinter" --exclude="python$VER/turtledemo" \
  --exclude="python$VER/ensurepip" --exclude="python$VER/lib2to3" \
  --exclude="python$VER/site-packages" --exclude="python$VER/config-*" \
  --exclude="python$VER/lib-dynload/_test*" --exclude="python$VER/lib-dynload/_tkinter*" \
  --exclude="__pycache__" --exclude="*/tests" "python$VER" |
  tar -C "$root/usr/local/lib" -xf -

# the kubernetes client and what it imports (found by importing it)
mkdir -p "$root/usr/local/lib/python$VER/site-packages"
"$PY" -I -c '
import sys, sysconfig
site = sysconfig.get_paths()["purelib"] + "/"
from kubernetes import client, config, watch, stream  # noqa: F401
import kubernetes.config.incluster_config  # noqa: F401
tops = set()
for m in list(sys.modules.values()):
    f = getattr(m, "__file__", None) or ""
    if f.startswith(site):
        tops.add(f[len(site):].split("/")[0])
print("\n".join(sorted(tops)))' | while read -r top; do
  # kubernetes/aio (the asyncio client, 40 MB) is not imported by the synchronous client
  tar -C "$SITE" -cf - --exclude="__pycache__" --exclude="tests" --exclude="test" \
    --exclude="kubernetes/aio" "$top" |
    tar -C "$root/usr/local/lib/python$VER/site-packages" -xf -
done

# shared libraries of the binary and the extension modules, at their host paths
libs="$( { ldd "$BIN"; find "$root/usr/local/lib/python$VER" -name '*.so' -exec ldd {} \; ; } \
  2>/dev/null | awk '/=> \// {print $3} /^\t\/.*ld-linux/ {print $1}' | sort -u)"
for lib in $libs; do
  [ -e "$lib" ] || continue
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
  # libpython next to the interpreter's lib dir too, found through LD_LIBRARY_PATH
  case "$lib" in */libpython*) cp -L "$lib" "$root/usr/local/lib/";; esac
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"

tar -C "$root" -cf "$root.tar" .
podman import -q --change 'CMD ["/usr/local/bin/python3"]' \
  --change 'ENV PATH=/usr/local/bin' --change 'ENV LD_LIBRARY_PATH=/usr/local/lib' \
  --change 'ENV PYTHONDONTWRITEBYTECODE=1' "$root.tar" "$IMAGE" >/dev/null
mkdir -p "$(dirname "$OUT")"
rm -f "$OUT"
podman save -q --format docker-archive -o "$OUT" "$IMAGE" >/dev/null
echo "$OUT"
