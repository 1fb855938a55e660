#!/bin/sh
# The counter demo in one command: the mapper image (built offline if missing), the edge node
# labelled, the upstream-shaped DeviceModel (v1alpha1) and Device (v1alpha2) bound to it, the
# counter mapper on the edge node, the web controller on the server node (host network, port
# WEB_PORT, default 8089), both Running; then the controller's STATUS answer.
#   examples/counter/run.sh        (environment: see examples/lib.sh; WEB_PORT)
set -eu
. "$(dirname "$0")/../lib.sh"
WEB_PORT="${WEB_PORT:-8089}"

EDGE="$(edge_node)"
say "edge node: $EDGE (labelled $EDGE_LABEL); broker 127.0.0.1:$MQTT_PORT"
prepare_edge_node "$EDGE"
ensure_image
render "$EXAMPLES/counter/model.yaml" | kn apply -f -
render "$EXAMPLES/counter/device.yaml" | kn apply -f -
render "$EXAMPLES/counter/mapper.yaml" | kn apply -f -
render "$EXAMPLES/counter/web-controller.yaml" |
  sed "s/value: \"8089\"/value: \"$WEB_PORT\"/" | kn apply -f -
MAPPER="$(wait_running counter-mapper 1/1 "${TIMEOUT:-120}")"
WEB="$(wait_running counter-web-controller 1/1 "${TIMEOUT:-120}")"
kn get pods "$MAPPER" "$WEB" -o wide
SERVER="$(kn get pod "$WEB" -o jsonpath='{.status.hostIP}')"
URL="http://${SERVER:-127.0.0.1}:$WEB_PORT"
if command -v curl >/dev/null 2>&1; then
  deadline=$(( $(date +%s) + 30 ))
  until answer="$(curl -fsS "$URL/track/control/STATUS" 2>/dev/null)"; do
    [ "$(date +%s)" -lt "$deadline" ] || { kn logs "$WEB" >&2 || true
      die "the web controller does not answer at $URL"; }
    sleep 1
  done
  say "GET $URL/track/control/STATUS -> $answer"
fi
say "open $URL/ and press ON; or: curl -X POST $URL/track/control/ON"
say "the count as the edge reports it: $KUBECTL -n $NAMESPACE get device counter -o jsonpath='{.status.twins[0].reported.value}'"
