#!/bin/sh
# k3py installer, in the manner of K3s's: safe to pipe from curl, POSIX sh, one file.
#
#   curl -sfL http://MIRROR/install.sh | INSTALL_K3PY_CHANNEL_URL=http://MIRROR sh -
#   curl -sfL http://MIRROR/install.sh | K3PY_URL=https://server:6443 K3PY_TOKEN=... sh -
#   curl -sfL http://MIRROR/install.sh | sh -s - server --tls-san pi.lan
#   sh install.sh                 # from a checkout: into its own venv (/opt/k3py/venv)
#
# Environment (K3s's names with K3PY):
#   K3PY_URL, K3PY_TOKEN / K3PY_TOKEN_FILE  install an agent joining that server (else: server)
#   K3PY_*                                  any other k3py setting, kept in the unit's env file
#   INSTALL_K3PY_EXEC          the command and flags ("server --disable-agent", "agent ...")
#   INSTALL_K3PY_VERSION       version to download (a directory under the channel URL)
#   INSTALL_K3PY_CHANNEL_URL   base URL of the binaries (k3py-<arch>, sha256sum-<arch>.txt);
#   INSTALL_K3PY_MIRROR          the same (either name)
#   INSTALL_K3PY_SKIP_DOWNLOAD=true   air-gapped: use the binary already in INSTALL_K3PY_BIN_DIR
#   INSTALL_K3PY_BIN_DIR       default /usr/local/bin
#   INSTALL_K3PY_SYSTEMD_DIR   default /etc/systemd/system
#   INSTALL_K3PY_NAME          service name suffix: k3py-<name> (default k3py / k3py-agent)
#   INSTALL_K3PY_SKIP_START=true, INSTALL_K3PY_SKIP_ENABLE=true
#   INSTALL_K3PY_SYMLINK=skip|force   the kubectl symlink (default: only when none exists)
#   INSTALL_K3PY_SKIP_PODMAN=true     do not install podman/runc/catatonit (agents need them)
#
# Writes: the binary (or venv), <systemd dir>/<name>.service and <name>.service.env (0600),
# k3py-killall.sh, <name>-uninstall.sh; details of each step go to /var/log/k3py-install.log.
set -eu

LOG=${INSTALL_K3PY_LOG:-/var/log/k3py-install.log}
info() { echo "[k3py] $*"; }
fatal() { echo "[k3py] error: $*" >&2; exit 1; }
# the first line of a containers.conf the installer made (the last uninstall removes it)
CONF_MARK="# made by k3py's install.sh (k3py-uninstall.sh removes it)"
run_logged() { "$@" >>"$LOG" 2>&1 || fatal "'$*' failed; see $LOG"; }

# ---------------------------------------------------------------------------- settings
setup_env() {
    [ "$(id -u)" = 0 ] || fatal "run as root (or with sudo): the installer writes system files"
    mkdir -p "$(dirname "$LOG")"
    : >>"$LOG"
    # the command: `sh -s - agent ...`, else INSTALL_K3PY_EXEC's first word, else by K3PY_URL
    if [ $# -gt 0 ]; then
        case "$1" in
            server|agent) CMD_K3PY=$1; shift ;;
            -*) ;;
            *) fatal "unknown command '$1': want 'server' or 'agent' (then its flags)" ;;
        esac
    fi
    EXTRA_ARGS="$*"
    exec_first=$(echo "${INSTALL_K3PY_EXEC:-}" | awk '{print $1}')
    case "$exec_first" in
        server|agent)
            CMD_K3PY=${CMD_K3PY:-$exec_first}
            EXEC_ARGS=$(echo "$INSTALL_K3PY_EXEC" | cut -s -d' ' -f2-) ;;
        *) EXEC_ARGS=${INSTALL_K3PY_EXEC:-} ;;
    esac
    if [ -z "${CMD_K3PY:-}" ]; then
        if [ -n "${K3PY_URL:-}" ]; then CMD_K3PY=agent; else CMD_K3PY=server; fi
    fi
    if [ "$CMD_K3PY" = agent ]; then
        [ -n "${K3PY_URL:-}" ] || fatal "an agent needs K3PY_URL (https://SERVER:6443)"
        [ -n "${K3PY_TOKEN:-}" ] || [ -n "${K3PY_TOKEN_FILE:-}" ] || \
            fatal "K3PY_URL is set but K3PY_TOKEN is not; get it with 'k3py token' on the server"
        case "$K3PY_URL" in https://*) ;; *) fatal "K3PY_URL must start with https://" ;; esac
    fi
    BIN_DIR=${INSTALL_K3PY_BIN_DIR:-/usr/local/bin}
    SYSTEMD_DIR=${INSTALL_K3PY_SYSTEMD_DIR:-/etc/systemd/system}
    if [ -n "${INSTALL_K3PY_NAME:-}" ]; then
        SYSTEM_NAME=k3py-$(echo "$INSTALL_K3PY_NAME" | sed 's/^k3py-//')
    elif [ "$CMD_K3PY" = server ]; then
        SYSTEM_NAME=k3py
    else
        SYSTEM_NAME=k3py-agent
    fi
    valid=$(echo "$SYSTEM_NAME" | sed -e 's/[^A-Za-z0-9@._-]/^/g')
    [ "$valid" = "$SYSTEM_NAME" ] || fatal "invalid characters in the service name $SYSTEM_NAME"
    UNIT=$SYSTEMD_DIR/$SYSTEM_NAME.service
    ENV_FILE=$SYSTEMD_DIR/$SYSTEM_NAME.service.env
    UNINSTALL=$BIN_DIR/$SYSTEM_NAME-uninstall.sh
    KILLALL=$BIN_DIR/k3py-killall.sh
    SRC_DIR=$(cd "$(dirname "$0")" 2>/dev/null && pwd || echo /nonexistent)
    CHANNEL=${INSTALL_K3PY_CHANNEL_URL:-${INSTALL_K3PY_MIRROR:-}}
    KUBECONFIG_OUT=${K3PY_WRITE_KUBECONFIG:-${K3PY_KUBECONFIG_OUTPUT:-/etc/k3py/k3py.yaml}}
    # shellcheck disable=SC2086 # the flags are split into words on purpose
    DATA_DIR=$(data_dir_of $EXEC_ARGS $EXTRA_ARGS)
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        HAS_SYSTEMD=true
    else
        HAS_SYSTEMD=false
    fi
}

data_dir_of() {  # FLAGS...: the data dir they give, else K3PY_DATA_DIR's, else the default
    dir=${K3PY_DATA_DIR:-/var/lib/k3py}
    while [ $# -gt 0 ]; do
        case "$1" in
            --data-dir=*) dir=${1#*=} ;;
            --data-dir|-d) [ $# -lt 2 ] || { dir=$2; shift; } ;;
        esac
        shift
    done
    echo "$dir"
}

setup_arch() {
    case "$(uname -m)" in
        x86_64|amd64) ARCH=amd64 ;;
        aarch64|arm64) ARCH=arm64 ;;
        *) fatal "unsupported architecture $(uname -m): k3py is built for amd64 and arm64" ;;
    esac
}

# ---------------------------------------------------------------------------- the binary
download() {  # URL FILE
    if command -v curl >/dev/null 2>&1; then
        if [ -t 2 ]; then set -- curl -fL --progress-bar -o "$2" "$1"
        else set -- curl -fsSL -o "$2" "$1"; fi
    elif command -v wget >/dev/null 2>&1; then
        set -- wget -q -O "$2" "$1"
    else
        fatal "neither curl nor wget is installed: cannot download $1"
    fi
    "$@" || fatal "download of $1 failed"
}

install_download() {
    [ -n "$CHANNEL" ] || fatal "no k3py binary to install: set INSTALL_K3PY_CHANNEL_URL to where \
k3py-$ARCH is published, or INSTALL_K3PY_SKIP_DOWNLOAD=true with the binary in $BIN_DIR"
    base=${CHANNEL%/}
    [ -z "${INSTALL_K3PY_VERSION:-}" ] || base=$base/$INSTALL_K3PY_VERSION
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    info "downloading k3py-$ARCH from $base"
    download "$base/sha256sum-$ARCH.txt" "$tmp/sha256sum.txt"
    download "$base/k3py-$ARCH" "$tmp/k3py"
    want=$(awk -v f="k3py-$ARCH" '$2 == f || $2 == "*"f {print $1}' "$tmp/sha256sum.txt")
    [ -n "$want" ] || fatal "sha256sum-$ARCH.txt has no line for k3py-$ARCH"
    got=$(sha256sum "$tmp/k3py" | awk '{print $1}')
    [ "$want" = "$got" ] || fatal "checksum mismatch for k3py-$ARCH: expected $want, got $got"
    chmod 0755 "$tmp/k3py"
    "$tmp/k3py" --version >>"$LOG" 2>&1 || fatal "the downloaded binary does not run on this host"
    mkdir -p "$BIN_DIR"
    mv -f "$tmp/k3py" "$BIN_DIR/k3py"  # a running binary is replaced, not overwritten
    info "installed $BIN_DIR/k3py ($("$BIN_DIR/k3py" --version 2>&1 | head -n1))"
}

install_from_checkout() {
    VENV=${INSTALL_K3PY_VENV:-/opt/k3py/venv}
    py=${PYTHON:-python3}
    command -v "$py" >/dev/null 2>&1 || fatal "python3 (3.11+) is needed to install from a checkout"
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
        fatal "$py is older than 3.11; set PYTHON=python3.11"
    if [ ! -x "$VENV/bin/python" ]; then
        info "creating $VENV"
        if ! "$py" -m venv "$VENV" >>"$LOG" 2>&1; then
            install_packages python3-venv
            run_logged "$py" -m venv "$VENV"
        fi
    fi
    info "installing k3py from $SRC_DIR into $VENV (details: $LOG)"
    run_logged "$VENV/bin/python" -m pip install --disable-pip-version-check -q --upgrade pip
    run_logged "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$SRC_DIR"
    mkdir -p "$BIN_DIR"
    ln -sf "$VENV/bin/k3py" "$BIN_DIR/k3py"
    info "installed $BIN_DIR/k3py -> $VENV/bin/k3py"
}

install_binary() {
    if [ "${INSTALL_K3PY_SKIP_DOWNLOAD:-false}" = true ]; then
        [ -x "$BIN_DIR/k3py" ] || fatal "INSTALL_K3PY_SKIP_DOWNLOAD=true but $BIN_DIR/k3py is \
missing: copy the k3py-$ARCH binary there (mode 0755) first"
        info "using the existing $BIN_DIR/k3py (INSTALL_K3PY_SKIP_DOWNLOAD)"
    elif [ -n "$CHANNEL" ]; then
        install_download
    elif [ -x "$SRC_DIR/dist/k3py-$ARCH" ] || [ -x "$SRC_DIR/dist/k3py" ]; then
        bin=$SRC_DIR/dist/k3py-$ARCH
        [ -x "$bin" ] || bin=$SRC_DIR/dist/k3py
        mkdir -p "$BIN_DIR"
        cp -f "$bin" "$BIN_DIR/.k3py.new" && mv -f "$BIN_DIR/.k3py.new" "$BIN_DIR/k3py"
        info "installed $BIN_DIR/k3py from $bin"
    elif [ -f "$SRC_DIR/pyproject.toml" ]; then
        install_from_checkout
    else
        install_download  # fails with the message saying what to set
    fi
}

create_symlinks() {
    [ "${INSTALL_K3PY_SYMLINK:-}" = skip ] && return 0
    link=$BIN_DIR/kubectl
    if [ "${INSTALL_K3PY_SYMLINK:-}" != force ]; then
        command -v kubectl >/dev/null 2>&1 && return 0
        [ -e "$link" ] && return 0
    fi
    ln -sf k3py "$link"
    info "symlinked $link -> k3py"
}

# ---------------------------------------------------------------------------- the host
install_packages() {
    if command -v apt-get >/dev/null 2>&1; then
        run_logged apt-get update -qq
        DEBIAN_FRONTEND=noninteractive run_logged apt-get install -y -qq "$@"
    elif command -v dnf >/dev/null 2>&1; then
        run_logged dnf install -y -q "$@"
    else
        fatal "please install $* (no apt-get or dnf here), then run this again"
    fi
}

setup_podman() {
    [ "${INSTALL_K3PY_SKIP_PODMAN:-false}" = true ] && return 0
    missing=
    command -v podman >/dev/null 2>&1 || missing="$missing podman"
    command -v runc >/dev/null 2>&1 || missing="$missing runc"
    # podman's pause process for pods (a Recommends of Debian's podman, skipped by some hosts)
    command -v catatonit >/dev/null 2>&1 || [ -x /usr/libexec/podman/catatonit ] || \
        missing="$missing catatonit"
    if [ -n "$missing" ]; then
        info "installing$missing"
        # shellcheck disable=SC2086 # one package name per word
        install_packages $missing
    fi
    conf=/etc/containers/containers.conf
    mkdir -p /etc/containers
    [ -e "$conf" ] || echo "$CONF_MARK" >"$conf"
    grep -q '^[[:space:]]*runtime[[:space:]]*=' "$conf" || \
        printf '\n[engine]\nruntime = "runc"\n' >>"$conf"
    grep -q '^[[:space:]]*default_ulimits[[:space:]]*=' "$conf" || \
        printf '\n[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n' >>"$conf"
}

# ---------------------------------------------------------------------------- service files
quote_args() {  # each word single-quoted for ExecStart, and its ' escaped
    for a in "$@"; do
        printf " '%s'" "$(printf '%s' "$a" | sed "s/'/'\\\\''/g")"
    done
}

write_env_file() {
    umask 077
    : >"$ENV_FILE.tmp"
    env | grep -E '^K3PY_[A-Z0-9_]+=' | sed -e 's/=\(.*\)/="\1"/' >>"$ENV_FILE.tmp" || true
    chmod 0600 "$ENV_FILE.tmp"
    mv -f "$ENV_FILE.tmp" "$ENV_FILE"
    umask 022
}

write_unit() {
    # NotifyAccess=all: READY=1 (with MAINPID) comes from the one-file binary's Python process,
    # a child of the bootloader that systemd starts
    # shellcheck disable=SC2086 # the flags are split into words on purpose
    args=$(quote_args $EXEC_ARGS $EXTRA_ARGS)
    mkdir -p "$SYSTEMD_DIR"
    cat >"$UNIT.tmp" <<EOF
# k3py-data-dir=$DATA_DIR
[Unit]
Description=k3py: lightweight Kubernetes for the edge ($CMD_K3PY)
Documentation=file://$BIN_DIR/k3py
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=notify
NotifyAccess=all
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
EnvironmentFile=-$ENV_FILE
KillMode=process
Delegate=yes
User=root
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart=$BIN_DIR/k3py $CMD_K3PY$args
EOF
    mv -f "$UNIT.tmp" "$UNIT"
    info "wrote $UNIT"
}

write_killall() {
    cat >"$KILLALL" <<EOF
#!/bin/sh
# Stops every k3py service and process on this host and removes what they leave running: the
# podman pods of their clusters (killed at once, as K3s's killall kills its containers), those
# pods' bridge networks and the routes to other nodes' pods; data and configuration stay. Only the clusters of the installed services' data dirs
# (or of the DATA_DIRs given) are touched: a cluster's pods carry io.k3py.cluster=<the first 12
# hex digits of its CA's sha256> (agent/join.py), its networks are k3py-<that>-<node>
# (agent/network/podnet.py), so another k3py cluster on this host keeps its own.
# Usage: k3py-killall.sh [DATA_DIR...]
[ "\$(id -u)" = 0 ] || exec sudo "\$0" "\$@"
if [ \$# -gt 0 ]; then
    dirs=\$(printf '%s\\n' "\$@")
else
    dirs=\$(sed -n 's/^# k3py-data-dir=//p' '$SYSTEMD_DIR'/k3py*.service 2>/dev/null)
fi
clusters=\$(printf '%s\\n' "\$dirs" | while IFS= read -r dir; do
    for ca in "\$dir/agent/server-ca.crt" "\$dir/server/tls/server-ca.crt"; do
        [ -n "\$dir" ] && [ -f "\$ca" ] && sha256sum "\$ca" | cut -c1-12
    done
done | sort -u)
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    for unit in \$(systemctl list-units --all --plain --no-legend 'k3py*.service' | awk '{print \$1}'); do
        systemctl stop "\$unit"
    done
fi
for pidfile in /run/k3py*.pid; do
    [ -f "\$pidfile" ] && kill "\$(cat "\$pidfile")" 2>/dev/null
    rm -f "\$pidfile"
done
pkill -f '^$BIN_DIR/k3py (server|agent)' 2>/dev/null
i=0
while pgrep -f '^$BIN_DIR/k3py (server|agent)' >/dev/null 2>&1; do
    i=\$((i + 1))
    [ \$i -lt 40 ] || { pkill -9 -f '^$BIN_DIR/k3py (server|agent)'; break; }
    sleep 0.25
done
if command -v podman >/dev/null 2>&1; then
    for cluster in \$clusters; do
        podman pod ls -q --filter "label=io.k3py.cluster=\$cluster" \\
            | xargs -r podman pod rm -f -t 0 >/dev/null 2>&1
        podman network ls --format '{{.Name}}' | grep "^k3py-\$cluster-" \\
            | xargs -r podman network rm -f >/dev/null 2>&1
    done
fi
# the routes to other nodes' pod CIDRs (agent/network/routes.py: proto 201)
if command -v ip >/dev/null 2>&1; then
    ip -4 route show proto 201 | while read -r dst _; do ip route del "\$dst" proto 201; done
fi
exit 0
EOF
    chmod 0755 "$KILLALL"
}

write_uninstall() {
    cat >"$UNINSTALL" <<EOF
#!/bin/sh
# Removes what install.sh wrote for $SYSTEM_NAME, and its data (only k3py's).
set -u
[ "\$(id -u)" = 0 ] || exec sudo "\$0" "\$@"
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now $SYSTEM_NAME >/dev/null 2>&1
    systemctl reset-failed $SYSTEM_NAME >/dev/null 2>&1
fi
# no systemd: the restart loop stops its k3py before it exits; wait for that (10 s at most)
if [ -f /run/$SYSTEM_NAME.pid ] && pid=\$(cat /run/$SYSTEM_NAME.pid) && kill "\$pid" 2>/dev/null; then
    i=0
    while kill -0 "\$pid" 2>/dev/null && [ \$i -lt 40 ]; do sleep 0.25; i=\$((i + 1)); done
fi
rm -f /run/$SYSTEM_NAME.pid
rm -f '$UNIT' '$ENV_FILE'
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
# the shared parts go with the last k3py service; a binary no other service runs goes now
if ls '$SYSTEMD_DIR'/k3py*.service >/dev/null 2>&1; then
    if ! grep -qs '^ExecStart=$BIN_DIR/k3py ' '$SYSTEMD_DIR'/k3py*.service; then
        [ -L '$BIN_DIR/kubectl' ] && [ "\$(readlink '$BIN_DIR/kubectl')" = k3py ] && rm -f '$BIN_DIR/kubectl'
        rm -f '$BIN_DIR/k3py' '$KILLALL'
    fi
    rm -f "\$0"
    echo "[k3py] uninstalled $SYSTEM_NAME (other k3py services remain)"
    exit 0
fi
'$KILLALL' '$DATA_DIR'
[ -L '$BIN_DIR/kubectl' ] && [ "\$(readlink '$BIN_DIR/kubectl')" = k3py ] && rm -f '$BIN_DIR/kubectl'
rm -rf '$DATA_DIR' /etc/k3py /opt/k3py /var/log/k3py.log /var/log/k3py-install.log
[ "\$(head -n1 /etc/containers/containers.conf 2>/dev/null)" != "$CONF_MARK" ] || \
    rm -f /etc/containers/containers.conf
rm -f '$BIN_DIR/k3py' '$KILLALL' "\$0"
echo "[k3py] uninstalled"
EOF
    chmod 0755 "$UNINSTALL"
}

# ---------------------------------------------------------------------------- start
start_service() {
    # the server writes its kubeconfig once it answers: wait_ready waits for the new one
    [ "$CMD_K3PY" != server ] || [ "${INSTALL_K3PY_SKIP_START:-false}" = true ] || \
        rm -f "$KUBECONFIG_OUT"
    if [ "$HAS_SYSTEMD" = true ]; then
        run_logged systemctl daemon-reload
        [ "${INSTALL_K3PY_SKIP_ENABLE:-false}" = true ] || \
            run_logged systemctl enable "$SYSTEM_NAME"
        [ "${INSTALL_K3PY_SKIP_START:-false}" = true ] && return 0
        info "starting $SYSTEM_NAME"
        systemctl restart "$SYSTEM_NAME" || fatal "$SYSTEM_NAME did not start; see \
journalctl -u $SYSTEM_NAME"
        return 0
    fi
    [ "${INSTALL_K3PY_SKIP_START:-false}" = true ] && return 0
    # no systemd (a container, a minimal host): a supervised background run instead
    pidfile=/run/$SYSTEM_NAME.pid
    if [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null; then
        info "stopped the running $SYSTEM_NAME to upgrade it"
        sleep 1
    fi
    info "no systemd here: running $SYSTEM_NAME under a restart loop (log /var/log/$SYSTEM_NAME.log)"
    # shellcheck disable=SC2086 # the flags are split into words on purpose
    set -- "$BIN_DIR/k3py" "$CMD_K3PY" $EXEC_ARGS $EXTRA_ARGS
    (
        set -a
        # shellcheck disable=SC1090
        . "$ENV_FILE"
        set +a
        trap 'kill "$child" 2>/dev/null; wait "$child"; exit 0' TERM INT
        while :; do
            "$@" >>"/var/log/$SYSTEM_NAME.log" 2>&1 &
            child=$!
            wait "$child"
            sleep 5
        done
    ) </dev/null >/dev/null 2>&1 &
    echo $! >"$pidfile"
}

wait_ready() {
    [ "${INSTALL_K3PY_SKIP_START:-false}" = true ] && return 0
    [ "$CMD_K3PY" = server ] || return 0
    i=0
    while [ $i -lt 120 ] && [ ! -s "$KUBECONFIG_OUT" ]; do sleep 0.5; i=$((i + 1)); done
    [ -s "$KUBECONFIG_OUT" ] || fatal "the server wrote no kubeconfig in 60 s; see the log"
    info "kubeconfig: $KUBECONFIG_OUT (try: k3py kubectl get nodes)"
}

main() {
    setup_env "$@"
    setup_arch
    install_binary
    create_symlinks
    case "$CMD_K3PY $EXEC_ARGS $EXTRA_ARGS " in
        "server "*" --disable-agent "*) ;;  # no pods on this host
        *) setup_podman ;;
    esac
    write_env_file
    write_unit
    write_killall
    write_uninstall
    start_service
    wait_ready
    info "done: $SYSTEM_NAME ($CMD_K3PY); uninstall with $UNINSTALL"
}

main "$@"
