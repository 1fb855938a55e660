#!/bin/sh
# The data-analysis demo in one command: the mapper image (built offline if missing), the edge
# node labelled and tainted as the reference cluster's, the Deployment applied, its pod 2/2
# Running on the edge node, then `kubectl logs` of the analysis container once it has alerted.
#   examples/data-analysis/run.sh        (environment: see examples/lib.sh; FOLLOW=1 follows)
set -eu
. "$(dirname "$0")/../lib.sh"

EDGE="$(edge_node)"
say "edge node: $EDGE (labelled $EDGE_LABEL, tainted NoSchedule); broker 127.0.0.1:$MQTT_PORT"
prepare_edge_node "$EDGE" taint
ensure_image
render "$EXAMPLES/data-analysis/deployment.yaml" | kn apply -f -
POD="$(wait_running data-analysis 2/2 "${TIMEOUT:-120}")"
kn get pod "$POD" -o wide
say "waiting for the analysis to close a window with an alert"
deadline=$(( $(date +%s) + ${TIMEOUT:-120} ))
until kn logs "$POD" -c analysis 2>/dev/null | grep -q '^ALERT'; do
  [ "$(date +%s)" -lt "$deadline" ] || { kn logs "$POD" -c analysis >&2 || true
    die "no alert from the analysis container in time"; }
  sleep 1
done
say "kubectl logs $POD -c analysis"
if [ "${FOLLOW:-0}" = 1 ]; then exec $KUBECTL -n "$NAMESPACE" logs -f "$POD" -c analysis; fi
kn logs "$POD" -c analysis
