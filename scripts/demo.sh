#!/usr/bin/env bash
# Train LSPC briefly on OfflineBallRun-v0 on the CPU, evaluate both policies, print the run dir.
# Uses DSRL's dataset when it is already on disk, else collects a small one from the simulator.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DATA_DIR=${DATA_DIR:-$HOME/.lspc/datasets}
STEPS=${STEPS:-5000}  # past the early phase in which LSPC-O is still unsafe (docs/index.md, "The demo")
DSRL_FILE=${DSRL_DATASET_DIR:-$HOME/.dsrl/datasets}/SafetyBallRun-v0-80-940.hdf5

COLLECTED_FILE=$DATA_DIR/OfflineBallRun-v0.hdf5   # written by `make datasets`
if [ -f "$DSRL_FILE" ]; then
  echo "demo: using DSRL's dataset $DSRL_FILE"
  DATA_ARGS=()
elif [ -f "$COLLECTED_FILE" ]; then
  echo "demo: DSRL's dataset is not on disk; using the collected dataset $COLLECTED_FILE"
  DATA_ARGS=(--dataset_path "$COLLECTED_FILE")
else
  DEMO_FILE=$DATA_DIR/OfflineBallRun-v0-demo.hdf5
  if [ ! -f "$DEMO_FILE" ]; then
    echo "demo: DSRL's dataset is not on disk (its hub is unreachable here); collecting a small one"
    echo "demo: from the Bullet simulator with a behaviour controller into $DEMO_FILE"
    "$PY" scripts/collect_dataset.py --task OfflineBallRun-v0 --episodes 300 --seed 0 --out "$DEMO_FILE"
  else
    echo "demo: DSRL's dataset is not on disk; using the collected dataset $DEMO_FILE"
  fi
  DATA_ARGS=(--dataset_path "$DEMO_FILE")
fi

NAME=demo-$(date +%Y%m%d-%H%M%S)
"$PY" train_lspc_iql.py --task OfflineBallRun-v0 "${DATA_ARGS[@]}" --logdir runs --name "$NAME" \
  --max_timesteps "$STEPS" --eval_every 1000 --log_every 250 --eval_episodes 10 --device cpu
RUN_DIR=runs/OfflineBallRun-v0-cost-10/$NAME
"$PY" eval_lspc.py --path "$RUN_DIR" --eval_episodes 10
echo "demo: run directory $RUN_DIR (config.yaml, metrics.jsonl, checkpoint/, eval/)"
