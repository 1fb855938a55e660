#!/bin/sh
# Fills ROOT with a minimal Python root filesystem, offline, from this host's Python: the real
# interpreter binary, the standard library without tests/GUI/dev tools, the third-party
# packages that IMPORTS (Python statements) pull in, copied from this Python's site-packages,
# and the shared libraries of the binary and of every extension module, at their host paths.
#   python-rootfs.sh ROOT PYTHON IMPORTS [TAR-EXCLUDE...]
# IMPORTS runs with the repository root first on sys.path, so `import k3py...` finds this
# checkout; k3py itself is not copied (the caller decides what of it goes in). Used by
# build-python-image.sh and build-mapper-image.sh.
set -eu
[ $# -ge 3 ] || { echo "usage: python-rootfs.sh ROOT PYTHON IMPORTS [TAR-EXCLUDE...]" >&2; exit 1; }
root="$1" PY="$2" IMPORTS="$3"
shift 3
REPO="$(cd "$(dirname "$0")/.." && pwd)"
# the real binary and its prefix (pyenv shims are scripts)
BIN="$("$PY" -c 'import sys, os; print(os.path.realpath(sys.executable))')"
STDLIB="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')"
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
VER="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"

# the top-level names IMPORTS loads from site-packages (found by importing them)
tops="$("$PY" -I -c '
import sys, sysconfig
sys.path.insert(0, sys.argv[1])
site = sysconfig.get_paths()["purelib"] + "/"
exec(sys.argv[2])
tops = set()
for m in list(sys.modules.values()):
    f = getattr(m, "__file__", None) or ""
    if f.startswith(site):
        top = f[len(site):].split("/")[0]
        # editable-install finders and setuptools hooks come from .pth files, not IMPORTS
        if not top.startswith(("__editable__", "_distutils_hack")):
            tops.add(top)
print("\n".join(sorted(tops)))' "$REPO" "$IMPORTS")" || {
  echo "python-rootfs: $PY cannot run the imports: $IMPORTS" >&2; exit 1; }

mkdir -p "$root/usr/local/bin" "$root/usr/local/lib" "$root/tmp" "$root/etc" "$root/root"
chmod 1777 "$root/tmp"
cp "$BIN" "$root/usr/local/bin/python$VER"
ln -sf "python$VER" "$root/usr/local/bin/python3"
ln -sf "python$VER" "$root/usr/local/bin/python"

# standard library: no tests, GUI, packaging or dev tools, no caches
tar -C "$STDLIB/.." -cf - \
  --exclude="python$VER/test" --exclude="python$VER/idlelib" \
  --exclude="python$VER/tkinter" --exclude="python$VER/turtledemo" \
  --exclude="python$VER/ensurepip" --exclude="python$VER/lib2to3" \
  --exclude="python$VER/site-packages" --exclude="python$VER/config-*" \
  --exclude="python$VER/lib-dynload/_test*" --exclude="python$VER/lib-dynload/_tkinter*" \
  --exclude="__pycache__" --exclude="*/tests" "python$VER" |
  tar -C "$root/usr/local/lib" -xf -

mkdir -p "$root/usr/local/lib/python$VER/site-packages"
# Debian's Python (the arm64 build root's) looks in dist-packages, not site-packages
ln -sfn site-packages "$root/usr/local/lib/python$VER/dist-packages"
excludes=""
for e in "$@"; do excludes="$excludes --exclude=$e"; done
for top in $tops; do
  # shellcheck disable=SC2086  # one word per exclude pattern
  tar -C "$SITE" -cf - --exclude="__pycache__" --exclude="tests" --exclude="test" \
    $excludes "$top" | tar -C "$root/usr/local/lib/python$VER/site-packages" -xf -
done

# shared libraries of the binary and the extension modules, at their host paths
libs="$( { ldd "$BIN"; find "$root/usr/local/lib/python$VER" -name '*.so' -exec ldd {} \; ; } \
  2>/dev/null | awk '/=> \// {print $3} /^\t\/.*ld-linux/ {print $1}' | sort -u)"
for lib in $libs; do
  [ -e "$lib" ] || continue
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
  # libpython next to the interpreter's lib dir too, found through LD_LIBRARY_PATH (a link:
  # one copy in the image)
  case "$lib" in */libpython*) ln -sf "$lib" "$root/usr/local/lib/$(basename "$lib")";; esac
done
# debug symbols are most of the size of a source-built Python (libpython 23 MB -> 6 MB)
if command -v strip >/dev/null; then
  find "$root" -type f \( -name '*.so' -o -name '*.so.*' -o -path "*/bin/python$VER" \) \
    -exec strip -g {} + 2>/dev/null || true
fi
echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"
