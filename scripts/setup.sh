#!/usr/bin/env bash
# Creates .venv with all three backends and mmkeras (editable, C++ kernels
# built by CMake). Idempotent: re-runs only when the build inputs changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${MMKERAS_VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi

stamp="$VENV/.mmkeras-setup"
inputs=$(cat scripts/setup.sh pyproject.toml CMakeLists.txt $(find kernels -type f | sort) | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs" ]; then
  exit 0
fi
# The CPU build of torch, pinned: an unpinned torch pulls a multi-GB CUDA build.
echo "setup: installing torch (CPU), tensorflow-cpu, jax, triton and mmkeras" >&2
"$VENV/bin/pip" install -q "torch==2.13.0"
"$VENV/bin/pip" install -q -e ".[all]"
# keras-hub for mmkeras.accelerate and its tests. Without --no-deps pip pulls
# tensorflow-text, which installs the full `tensorflow` (CUDA libraries) over
# tensorflow-cpu; keras-hub imports and builds models without it.
"$VENV/bin/pip" install -q --no-deps "keras-hub==0.32.0"
"$VENV/bin/pip" install -q regex tokenizers sentencepiece kagglehub
echo "$inputs" > "$stamp"
