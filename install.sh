#!/bin/sh
# k3py installer, in the manner of K3s: `curl -sfL <mirror>/install.sh | sh -` or, from a
# checkout, `sh install.sh`. Installs k3py, writes /etc/k3py, starts `k3py server` (or
# `k3py agent` when K3PY_URL is set) and writes /usr/local/bin/k3py-uninstall.sh.
#
# Environment (K3s names): K3PY_URL, K3PY_TOKEN, K3PY_DATA_DIR, K3PY_NODE_NAME,
# INSTALL_K3PY_SKIP_DOWNLOAD=true (air-gapped: use ./dist/k3py or an existing
# /usr/local/bin/k3py), INSTALL_K3PY_BIN_DIR (default /usr/local/bin),
# INSTALL_K3PY_EXEC (extra flags), INSTALL_K3PY_SKIP_START=true.
set -eu

BIN_DIR="${INSTALL_K3PY_BIN_DIR:-/usr/local/bin}"
SRC_DIR="$(cd "$(dirname "$0")" 2>/dev/null && pwd || echo .)"
info() { echo "[k3py] $*"; }
fatal() { echo "[k3py] error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fatal "run as root (or with sudo): the installer writes $BIN_DIR and /etc/k3py"

install_binary() {
  if [ -x "$SRC_DIR/dist/k3py" ]; then
    install -m 0755 "$SRC_DIR/dist/k3py" "$BIN_DIR/k3py"
  elif [ "${INSTALL_K3PY_SKIP_DOWNLOAD:-false}" = true ]; then
    [ -x "$BIN_DIR/k3py" ] || fatal "INSTALL_K3PY_SKIP_DOWNLOAD=true but no $BIN_DIR/k3py; copy the binary there first"
  elif [ -f "$SRC_DIR/pyproject.toml" ]; then
    info "installing k3py from $SRC_DIR with pip"
    sh "$SRC_DIR/scripts/setup.sh"
    ln -sf "$(command -v k3py)" "$BIN_DIR/k3py" 2>/dev/null || true
  else
    python3 -m pip install -q k3py || fatal "could not install k3py; use an air-gap bundle with INSTALL_K3PY_SKIP_DOWNLOAD=true"
  fi
}

write_uninstall() {
  cat > "$BIN_DIR/k3py-uninstall.sh" <<'UNINSTALL'
#!/bin/sh
set -u
[ -f /run/k3py.pid ] && kill "$(cat /run/k3py.pid)" 2>/dev/null
rm -f /run/k3py.pid /etc/k3py/k3py.yaml
rm -rf /var/lib/k3py /etc/k3py
rm -f /usr/local/bin/k3py "$0"
echo "[k3py] uninstalled"
UNINSTALL
  chmod 0755 "$BIN_DIR/k3py-uninstall.sh"
}

start() {
  [ "${INSTALL_K3PY_SKIP_START:-false}" = true ] && return 0
  mkdir -p /etc/k3py /var/log
  if [ -n "${K3PY_URL:-}" ]; then
    [ -n "${K3PY_TOKEN:-}" ] || fatal "K3PY_URL is set but K3PY_TOKEN is not; get it with 'k3py token' on the server"
    role=agent
  else
    role=server
  fi
  if [ -f /run/k3py.pid ] && kill -0 "$(cat /run/k3py.pid)" 2>/dev/null; then
    info "k3py is already running (pid $(cat /run/k3py.pid))"; return 0
  fi
  # shellcheck disable=SC2086
  nohup "$BIN_DIR/k3py" $role ${INSTALL_K3PY_EXEC:-} >> /var/log/k3py.log 2>&1 &
  echo $! > /run/k3py.pid
  info "started k3py $role (pid $!, log /var/log/k3py.log)"
  if [ "$role" = server ]; then
    i=0
    while [ $i -lt 60 ] && [ ! -f /etc/k3py/k3py.yaml ]; do sleep 0.5; i=$((i+1)); done
    [ -f /etc/k3py/k3py.yaml ] && info "kubeconfig: /etc/k3py/k3py.yaml — try: k3py kubectl get nodes"
  fi
}

install_binary
write_uninstall
start
