#!/usr/bin/env bash
# The project's GPU check: `bench perf agent` for every learning agent at realistic sizes, in float32 and in
# bfloat16 compute, plus the numerics tests that must also hold on an accelerator, in one Markdown report.
#
#   scripts/gpu_check.sh [OUT_DIR]          # on a GPU machine (writes OUT_DIR/gpu_check.md, default ./gpu_check_out)
#   GPU_CHECK_DRY=1 scripts/gpu_check.sh    # the same steps on the CPU at the debug size (a quick smoke run)
#   GPU_CHECK_PERF_ARGS=--ceiling scripts/gpu_check.sh   # also each update's products-only ceiling (slower)
#
# It stays under 8 minutes: the perf runs go smallest first (size12m float32, size12m bfloat16, then size50m)
# and all end within GPU_CHECK_BUDGET seconds from the start (default 380): each is cut at GPU_CHECK_RUN_LIMIT
# seconds or at the budget, one with less than 30 s left is skipped and named in the report, and the numerics
# tests get at most 70 s. Settings (environment): GPU_CHECK_SIZES, GPU_CHECK_DTYPES,
# GPU_CHECK_AGENTS (name=module:SPEC ...), GPU_CHECK_PERF_ARGS (extra `bench perf agent` flags), GPU_CHECK_TESTS.
# Agents are named by module path, so the check runs from a plain checkout without installing the package.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-gpu_check_out}}
mkdir -p "$OUT_DIR"
PYTHON=${PYTHON:-python3}
SIZES=${GPU_CHECK_SIZES:-${GPU_CHECK_SIZE:-"size12m size50m"}}
DTYPES=${GPU_CHECK_DTYPES:-"float32 bfloat16"}
UPDATES=5
BUDGET=${GPU_CHECK_BUDGET:-380}
RUN_LIMIT=${GPU_CHECK_RUN_LIMIT:-150}
TESTS=${GPU_CHECK_TESTS:-"tests/test_hieros_s5.py tests/test_hieros_s5wm.py tests/test_common_numerics.py"}
if [ -n "${GPU_CHECK_DRY:-}" ]; then
  SIZES=${GPU_CHECK_SIZES:-debug}; UPDATES=1; TESTS=${GPU_CHECK_TESTS:-"tests/test_hieros_etbs.py"}
fi
AGENTS=${GPU_CHECK_AGENTS:-"dreamerv3=agents.dreamerv3:SPEC thick=agents.thick:SPEC vsg=agents.vsg:VSG_SPEC svsg=agents.vsg:SVSG_SPEC"}
PERF_ARGS=${GPU_CHECK_PERF_ARGS:-}
export PYTHONUNBUFFERED=1
: > "$OUT_DIR/log.txt"
: > "$OUT_DIR/skipped.txt"

start=$SECONDS
"$PYTHON" -c "import jax; print('jax', jax.__version__, jax.devices())" 2>&1 | tee "$OUT_DIR/device.txt"
status=0
for size in $SIZES; do
  for dtype in $DTYPES; do
    for item in $AGENTS; do
      name=${item%%=*}; spec=${item#*=}
      label="$name $size $dtype"
      left=$((BUDGET - (SECONDS - start)))
      if [ "$left" -lt 30 ]; then
        echo "$label" >> "$OUT_DIR/skipped.txt"; echo "== perf agent $label: skipped (time budget)"; continue
      fi
      limit=$(( left < RUN_LIMIT ? left : RUN_LIMIT ))
      echo "== perf agent $label" | tee -a "$OUT_DIR/log.txt"
      json="$OUT_DIR/perf_${name}_${size}_${dtype}.json"
      dtype_set=""; [ "$dtype" = float32 ] || dtype_set="--set compute_dtype=$dtype"  # float32: the default
      # shellcheck disable=SC2086
      timeout "$limit" "$PYTHON" -m bench.cli perf agent --agent "$spec" --configs "$size" --updates "$UPDATES" \
        --policy-steps 100 $dtype_set $PERF_ARGS --json "$json" 2>&1 | tee -a "$OUT_DIR/log.txt" || status=1
      [ -f "$json" ] || { echo "perf agent $label failed" | tee -a "$OUT_DIR/log.txt"; status=1; }
    done
  done
done
echo "== numerics tests"
# shellcheck disable=SC2086
timeout 70 "$PYTHON" -m pytest -q -p no:cacheprovider $TESTS > "$OUT_DIR/tests_full.log" 2>&1 || status=1
tail -n 15 "$OUT_DIR/tests_full.log" | tee "$OUT_DIR/tests.txt"; cat "$OUT_DIR/tests_full.log" >> "$OUT_DIR/log.txt"; rm -f "$OUT_DIR/tests_full.log"
echo "$((SECONDS - start))" > "$OUT_DIR/seconds.txt"
"$PYTHON" scripts/gpu_report.py "$OUT_DIR" > "$OUT_DIR/gpu_check.md" || status=1
cat "$OUT_DIR/gpu_check.md"
exit $status
