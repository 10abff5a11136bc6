#!/usr/bin/env bash
# The CUDA path on a real GPU in one command, one report: scripts/gpu_check.py says what it runs.
#   scripts/gpu_check.sh [--out DIR] [--cpu]
# PYTHON picks the interpreter (default: the repository's .venv when there is one, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" scripts/gpu_check.py "$@"
