#!/usr/bin/env bash
# The offline GPU node's one command (docs/gpu.md), copied into the bundle by `make gpu-bundle`:
#   bash gpu_bundle/run.sh OUT [--cpu]
# It installs the bundle's wheels into a temporary folder (pip --no-index --no-deps --target), runs the GPU
# check (tools/gpu_node/gpu_check.py) on the bundle's BallRun file with no simulator, and writes into OUT:
#   report.json, report.md   the report
#   run.tar.gz               the 20,000-step LSPC run directory (evaluate it where the simulator is)
#   logs.tar.gz              each step's log and tables
# Four files, each checked under 16 MiB. $PYTHON is the interpreter (default: python3). --cpu: a dry run on
# the CPU at toy sizes.
#
# The plan, in seconds on one H100, is gpu_check.py's BUDGET_S (each step is stopped at its budget) and
# RUN_SH_S (this script's own work): under 8 minutes in all (docs/gpu.md shows it).
set -euo pipefail
BUNDLE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$BUNDLE")  # the repository the bundle sits in
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
    echo "usage: bash gpu_bundle/run.sh OUT [--cpu]" >&2
    exit 2
fi
OUT=$1
shift
CPU=()
for arg in "$@"; do
    case $arg in
        --cpu) CPU=(--cpu) ;;
        *) echo "error: unknown argument $arg; usage: bash gpu_bundle/run.sh OUT [--cpu]" >&2; exit 2 ;;
    esac
done
PYTHON=${PYTHON:-python3}
fail() { echo "error: $*" >&2; exit 2; }

[ -f "$BUNDLE/manifest.tsv" ] || fail "$BUNDLE has no manifest.tsv; build the bundle with make gpu-bundle"
want=$(sed -n 's/^# python: //p' "$BUNDLE/manifest.tsv")
have=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || fail "cannot run $PYTHON; set PYTHON"
[ "$want" = "$have" ] || fail "this bundle's wheels are for Python $want, but $PYTHON is Python $have; rebuild it with make gpu-bundle BUNDLE_PYTHON=$have (or set PYTHON)"
while IFS=$'\t' read -r _ path; do
    [ -f "$BUNDLE/$path" ] || fail "the bundle lacks $path, which its manifest lists; rebuild it with make gpu-bundle BUNDLE_PYTHON=$want"
done < <(grep -v '^#' "$BUNDLE/manifest.tsv" | tail -n +2)

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
start=$SECONDS
"$PYTHON" -m pip install --quiet --no-index --no-deps --disable-pip-version-check --target "$WORK/site" "$BUNDLE"/wheels/*.whl \
    || fail "pip could not install the bundle's wheels (above); rebuild it with make gpu-bundle BUNDLE_PYTHON=$want"
export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
echo "run.sh: installed $(ls "$BUNDLE"/wheels/*.whl | wc -l) wheels in $((SECONDS - start)) s"
if [ ${#CPU[@]} -eq 0 ]; then
    "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
        || fail "torch sees no CUDA device on this machine; bash gpu_bundle/run.sh OUT --cpu runs the dry run on the CPU"
fi

mkdir -p "$OUT"
status=0
(cd "$ROOT" && "$PYTHON" tools/gpu_node/gpu_check.py --out "$WORK/check" --dataset "$BUNDLE/data/OfflineBallRun-v0.hdf5" "${CPU[@]}") || status=$?
cp "$WORK/check/report.json" "$WORK/check/report.md" "$OUT/" 2>/dev/null || true
if [ -d "$WORK/check/runs/gpu-check/lspc" ]; then
    tar -czf "$OUT/run.tar.gz" -C "$WORK/check/runs/gpu-check" lspc
fi
tar -czf "$OUT/logs.tar.gz" -C "$WORK/check" --exclude ./runs .
for file in "$OUT"/*; do
    if [ "$(stat -c %s "$file")" -ge $((16 * 1024 * 1024)) ]; then  # bundle.py's RETURN_FILE_MIB
        echo "error: $file is 16 MiB or more, over what comes back from the node" >&2
        status=1
    fi
done
echo "run.sh: $(ls "$OUT" | tr '\n' ' ')in $OUT after $((SECONDS - start)) s (exit $status)"
exit $status
