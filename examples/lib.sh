# Sourced by the demos' run.sh (POSIX sh, `set -eu` in the caller): the kubectl to use, the
# edge node, the mapper image, the manifests with this cluster's node name and MQTT port.
#
# Environment (all optional):
#   KUBECTL          kubectl command (default: kubectl, else `k3py kubectl`); KUBECONFIG as usual
#                    (default /etc/k3py/k3py.yaml when it is readable and KUBECONFIG is unset)
#   K3PY_DATA_DIR    the edge node's data dir, where the image tarball is dropped
#                    (<data-dir>/agent/images/k3py-mapper.tar; default /var/lib/k3py)
#   K3PY_MQTT_PORT   the edge node's MQTT broker port (the agent's --mqtt-port; default 1883)
#   EDGE_NODE        the node to run the edge side on (default: the node labelled
#                    node-role.kubernetes.io/edge, else the only node: a one-machine k3py)
#   NAMESPACE        namespace of the demo's objects (default: default)
#   K3PY_SKIP_IMAGE  1: do not build or load the image here (it is on the edge node already:
#                    a joined agent imports <its data-dir>/agent/images/ at start)
#   K3PY_REBUILD     1: build the image again (after changing k3py or the demos' programs)

DEMO="$(basename "$(cd "$(dirname "$0")" && pwd)")"
EXAMPLES="$(cd "$(dirname "$0")/.." && pwd)"
REPO="$(cd "$EXAMPLES/.." && pwd)"
DATA_DIR="${K3PY_DATA_DIR:-/var/lib/k3py}"
MQTT_PORT="${K3PY_MQTT_PORT:-1883}"
NAMESPACE="${NAMESPACE:-default}"
IMAGE="k3py.local/mapper:latest"
EDGE_LABEL="node-role.kubernetes.io/edge"

die() { echo "$DEMO/run.sh: $*" >&2; exit 1; }
say() { echo "==> $*"; }

if [ -z "${KUBECTL:-}" ]; then
  if command -v kubectl >/dev/null 2>&1; then KUBECTL=kubectl
  elif command -v k3py >/dev/null 2>&1; then KUBECTL="k3py kubectl"
  else die "no kubectl: install kubectl or k3py, or set KUBECTL"; fi
fi
if [ -z "${KUBECONFIG:-}" ] && [ -r /etc/k3py/k3py.yaml ]; then
  KUBECONFIG=/etc/k3py/k3py.yaml
  export KUBECONFIG
fi
# shellcheck disable=SC2086  # KUBECTL may be two words (k3py kubectl)
k() { $KUBECTL "$@"; }
kn() { $KUBECTL -n "$NAMESPACE" "$@"; }

k get --raw /readyz >/dev/null 2>&1 ||
  die "cannot reach the cluster with '$KUBECTL' (KUBECONFIG=${KUBECONFIG:-unset})"

# the edge node: EDGE_NODE, else the one labelled edge, else the only node
edge_node() {
  if [ -n "${EDGE_NODE:-}" ]; then
    k get node "$EDGE_NODE" >/dev/null 2>&1 || die "node $EDGE_NODE (EDGE_NODE) not found"
    echo "$EDGE_NODE"
    return
  fi
  labelled="$(k get nodes -l "$EDGE_LABEL" -o jsonpath='{.items[*].metadata.name}')"
  set -- $labelled
  if [ $# -ge 1 ]; then echo "$1"; return; fi
  all="$(k get nodes -o jsonpath='{.items[*].metadata.name}')"
  set -- $all
  [ $# -eq 1 ] || die "no node labelled $EDGE_LABEL and $# nodes: set EDGE_NODE to the edge node"
  echo "$1"
}

# label (and with `taint`, taint) the edge node as KubeEdge's keadm join does
prepare_edge_node() {
  node="$1"
  k label node "$node" "$EDGE_LABEL=" --overwrite >/dev/null
  if [ "${2:-}" = taint ]; then
    k taint node "$node" "$EDGE_LABEL=:NoSchedule" --overwrite >/dev/null
  fi
}

# the mapper image on this machine's podman, its tarball in the node's images directory
ensure_image() {
  [ "${K3PY_SKIP_IMAGE:-0}" = 1 ] && return 0
  command -v podman >/dev/null 2>&1 ||
    die "podman not found here: build the image on the edge node (airgap/build-mapper-image.sh), drop it in its <data-dir>/agent/images/ and set K3PY_SKIP_IMAGE=1"
  tarball="$DATA_DIR/agent/images/k3py-mapper.tar"
  if [ "${K3PY_REBUILD:-0}" != 1 ] && [ -s "$tarball" ] && podman image exists "$IMAGE"; then
    return 0
  fi
  mkdir -p "$DATA_DIR/agent/images" 2>/dev/null ||
    die "cannot write $DATA_DIR/agent/images (set K3PY_DATA_DIR, or run as root)"
  say "building the mapper image $IMAGE into $tarball (offline)"
  sh "$REPO/airgap/build-mapper-image.sh" "$tarball" >/dev/null ||
    die "building the mapper image failed"
}

# a manifest with this cluster's edge node name and broker port
render() {
  sed -e "s/127\.0\.0\.1:1883/127.0.0.1:$MQTT_PORT/g" -e "s/\bedge-node\b/$EDGE/g" \
    -e "s/^\( *namespace:\) default$/\1 $NAMESPACE/" "$1"
}

# poll until a pod of the app (label app=$1) is Running with all containers ready
wait_running() {
  app="$1" want="$2" deadline=$(( $(date +%s) + ${3:-120} ))
  while :; do
    pod="$(kn get pods -l "app=$app" --no-headers 2>/dev/null |
      awk -v w="$want" '$2 == w && $3 == "Running" {print $1; exit}')"
    [ -z "$pod" ] || { echo "$pod"; return 0; }
    [ "$(date +%s)" -lt "$deadline" ] ||
      { kn get pods -l "app=$app" -o wide >&2; die "pod app=$app not $want Running in time"; }
    sleep 1
  done
}
