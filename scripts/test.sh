#!/bin/sh
# The one test command: sets up what the tests need, then runs the whole suite.
# Extra arguments go to pytest (e.g. `sh scripts/test.sh -m unit`).
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
PY="${PYTHON:-python3}"
"$PY" -m ruff check k3py tests bench 2>/dev/null || { "$PY" -m ruff check k3py tests bench; exit 1; }
exec "$PY" -m pytest -q -p no:cacheprovider "$@"
