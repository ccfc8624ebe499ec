#!/usr/bin/env bash
# Runs the whole test suite once per Keras backend (tensorflow, jax, torch).
# Extra arguments go to pytest. Fails if any backend fails or collects nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
VENV=${MMKERAS_VENV:-.venv}
BACKENDS=${MMKERAS_TEST_BACKENDS:-"tensorflow jax torch"}
status=0
for backend in $BACKENDS; do
  echo "=== KERAS_BACKEND=$backend ==="
  start=$(date +%s)
  KERAS_BACKEND=$backend "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
  rc=$?
  echo "=== $backend: exit $rc in $(( $(date +%s) - start )) s ==="
  # pytest exit 5 = no tests collected: a failure of intent, not a pass.
  if [ $rc -ne 0 ]; then status=1; fi
done
exit $status
