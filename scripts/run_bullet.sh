#!/usr/bin/env bash
# The paper's protocol (DSRL's cost thresholds) on the Bullet Safety Gym tasks: every task x seed x method
# trained and evaluated by scripts/sweep.py, then Table 1 in $LOGDIR/table.md and table.csv.
# Also the shared body of run_safetygym.sh and run_metadrive.sh, which only set SUITE.
#
# Environment (all optional): SUITE (bullet), LOGDIR (sweeps/<suite>), SEEDS (0 1 2),
# METHODS (all: lspc and every baseline), JOBS (cores), EXECUTOR (local | slurm),
# DATASET_DIR (<dir>/<task>.hdf5 as the datasets), EXTRA (flags for every training command),
# PYTHON (the repository's .venv). Arguments are passed on to sweep.py, e.g.
#   JOBS=4 scripts/run_bullet.sh --max_timesteps 100000 --dry_run
#   EXECUTOR=slurm scripts/run_metadrive.sh --slurm_partition gpu --slurm_gpus_per_job 1
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SUITE=${SUITE:-bullet}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
# unset variables are left to sweep.py's defaults (seeds 0 1 2, all methods, jobs = cores)
args=(--executor "${EXECUTOR:-local}" --suite $SUITE --logdir "${LOGDIR:-sweeps/${SUITE// /+}}")
if [ -n "${SEEDS:-}" ]; then args+=(--seeds $SEEDS); fi
if [ -n "${METHODS:-}" ]; then args+=(--methods $METHODS); fi
if [ -n "${JOBS:-}" ]; then args+=(--jobs "$JOBS"); fi
if [ -n "${DATASET_DIR:-}" ]; then args+=(--dataset_dir "$DATASET_DIR"); fi
if [ -n "${EXTRA:-}" ]; then args+=("--extra=$EXTRA"); fi
exec "$PYTHON" "$ROOT/scripts/sweep.py" "${args[@]}" "$@"
