#!/bin/sh
# The one test command: sets up what the tests need, then runs the whole suite.
# Extra arguments go to pytest (e.g. `sh scripts/test.sh -m unit`).
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
PY="${PYTHON:-python3}"
"$PY" -m ruff check k3py tests bench examples tools 2>/dev/null || {
  "$PY" -m ruff check k3py tests bench examples tools; exit 1; }
# The layering contracts in pyproject.toml ([tool.importlinter]); quiet unless one is broken.
lint_imports() {
  "$PY" -c 'from importlinter.cli import lint_imports_command; lint_imports_command()' \
    --no-logo --no-cache
}
lint_imports >/dev/null 2>&1 || { lint_imports; exit 1; }
# Two workers (tests/conftest.py: what may share the host runs on one of them, in order);
# K3PY_TEST_WORKERS=0 runs everything in this one process. The slowest tests are listed at the end.
exec "$PY" -m pytest -q -p no:cacheprovider -n "${K3PY_TEST_WORKERS:-2}" --dist loadgroup \
  --durations=25 "$@"
