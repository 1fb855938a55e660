#!/bin/sh
# The temperature demo in one command: the mapper image (built offline if missing), the edge
# node (the Pi) labelled, the DeviceModel and the Device `temperature` bound to it, the DHT11
# mapper pod on it (--simulated: the simulated mapper, for a machine without the sensor), then
# `kubectl get device temperature -o yaml -w`: the temperature as the Pi reports it, live.
#   examples/temperature/run.sh [--simulated]   (environment: see examples/lib.sh)
set -eu
. "$(dirname "$0")/../lib.sh"
MAPPER_YAML=mapper.yaml
case "${1:-}" in
  --simulated) MAPPER_YAML=mapper-simulated.yaml ;;
  "") ;;
  *) die "unknown argument ${1}; usage: run.sh [--simulated]" ;;
esac

EDGE="$(edge_node)"
say "edge node: $EDGE (labelled $EDGE_LABEL); broker 127.0.0.1:$MQTT_PORT; $MAPPER_YAML"
prepare_edge_node "$EDGE"
ensure_image
render "$EXAMPLES/temperature/model.yaml" | kn apply -f -
render "$EXAMPLES/temperature/device.yaml" | kn apply -f -
# the two mapper manifests are one Deployment: switching replaces the other's pod
render "$EXAMPLES/temperature/$MAPPER_YAML" | kn apply -f -
POD="$(wait_running temperature-mapper 1/1 "${TIMEOUT:-120}")" || {
  [ "$MAPPER_YAML" = mapper.yaml ] && echo "no DHT11 on $EDGE? run.sh --simulated" >&2; exit 1; }
kn get pod "$POD" -o wide
say "$KUBECTL get device temperature -o yaml -w   (Ctrl-C to stop)"
exec $KUBECTL -n "$NAMESPACE" get device temperature -o yaml -w
