#!/usr/bin/env bash
# The CUDA path on a real GPU in one command, one report, where the project's .venv is installed (on an
# offline GPU node, gpu_bundle/run.sh runs it instead): tools/gpu_node/gpu_check.py says what it runs.
#   tools/gpu_node/gpu_check.sh [--out DIR] [--cpu] [--dataset FILE]
# PYTHON picks the interpreter (default: the repository's .venv when there is one, else python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" tools/gpu_node/gpu_check.py "$@"
