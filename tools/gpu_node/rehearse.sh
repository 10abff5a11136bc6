#!/usr/bin/env bash
# The GPU node, rehearsed on the CPU (`make gpu-rehearsal`, run by .ci/run):
# 1. a copy of the repository's tracked files, as the node receives it;
# 2. a fresh Python 3.11 venv holding only the node's preinstalled packages (node-packages.txt) at the
#    versions the CPU torch allows (torch 2.13 CPU, numpy 2.x): no simulator, no project requirement;
# 3. the bundle built for that Python into the copy, then `gpu_bundle/run.sh OUT --cpu` run there, the node's
#    way (its wheels installed with --no-index --no-deps);
# 4. the run that comes back evaluated on the CPU by eval_lspc.py in the project's own .venv, which has the
#    simulator;
# 5. every wheel of the default bundle (cp312) checked by tag for CPython 3.12 on manylinux_2_28 x86-64.
# REHEARSAL_DIR keeps the work (default: a temporary folder, removed on success).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
PY=${PY:-$ROOT/.venv/bin/python}
NODE_PYTHON=${NODE_PYTHON:-python3.11}
WORK=${REHEARSAL_DIR:-$(mktemp -d)}
mkdir -p "$WORK"
step() { echo "gpu-rehearsal: $* ($SECONDS s)"; }

step "the repository's tracked files, copied to $WORK/tree"
rm -rf "$WORK/tree" "$WORK/out"
mkdir -p "$WORK/tree"
git ls-files -z | xargs -0 tar -cf - | tar -xf - -C "$WORK/tree"

step "a fresh $NODE_PYTHON venv with the node's preinstalled packages"
if [ ! -x "$WORK/node/bin/python" ]; then
    "$NODE_PYTHON" -m venv "$WORK/node"
    "$WORK/node/bin/python" -m pip install --quiet --upgrade pip
    # the node's list, less what it marks not-rehearsed; torch and numpy at the versions the CPU allows
    packages=$(sed -e '/^#/d' -e '/not-rehearsed/d' -e 's/ *#.*//' -e '/^torch$/d' -e '/^numpy$/d' tools/gpu_node/node-packages.txt)
    # shellcheck disable=SC2086
    "$WORK/node/bin/python" -m pip install --quiet torch==2.13.0 'numpy>=2,<3' $packages
fi
node_python=$("$WORK/node/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
"$WORK/node/bin/python" -c 'import importlib.util, sys, numpy; sys.exit(numpy.__version__ < "2" or any(importlib.util.find_spec(m) for m in ("pybullet", "bullet_safety_gym", "gymnasium", "dsrl")))' \
    || { echo "error: the rehearsal venv must hold numpy 2 and no simulator or project requirement" >&2; exit 1; }

step "the bundle for Python $node_python, in the copy"
(cd "$WORK/tree" && "$PY" tools/gpu_node/bundle.py build --python "$node_python" --out "$WORK/tree/gpu_bundle")

step "gpu_bundle/run.sh OUT --cpu with the node's Python"
PYTHON="$WORK/node/bin/python" bash "$WORK/tree/gpu_bundle/run.sh" "$WORK/out" --cpu

step "the returned run evaluated on the CPU in the project's .venv"
mkdir -p "$WORK/returned"
tar -xzf "$WORK/out/run.tar.gz" -C "$WORK/returned"
"$PY" eval_lspc.py --path "$WORK/returned/lspc" --device cpu --eval_episodes 2 --no_figures --wandb_mode disabled

step "every wheel of the default cp312 bundle, by tag"
mkdir -p "$WORK/bundle312" && cp -r "$WORK/tree/gpu_bundle/data" "$WORK/bundle312/"  # the same BallRun file
"$PY" tools/gpu_node/bundle.py build --python 3.12 --out "$WORK/bundle312" >/dev/null
"$PY" tools/gpu_node/bundle.py check-tags "$WORK/bundle312" --python 3.12 --platform manylinux_2_28_x86_64

step "passed"
[ -n "${REHEARSAL_DIR:-}" ] || rm -rf "$WORK"
