#!/usr/bin/env bash
# The project's GPU check: `bench perf agent` for every learning agent at a realistic size, plus the numerics tests
# that must also hold on an accelerator, summarised in one Markdown report.
#
#   scripts/gpu_check.sh [OUT_DIR]          # on a GPU machine (writes OUT_DIR/gpu_check.md, default ./gpu_check_out)
#   GPU_CHECK_DRY=1 scripts/gpu_check.sh    # the same steps on the CPU at the debug size (a quick smoke run)
#
# Agents are named by module path, so the check runs from a plain checkout without installing the package.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-gpu_check_out}}
mkdir -p "$OUT_DIR"
PYTHON=${PYTHON:-python3}
SIZE=${GPU_CHECK_SIZE:-size12m}
UPDATES=5
TESTS="tests/test_hieros_s5.py tests/test_hieros_s5wm.py tests/test_common_numerics.py"
if [ -n "${GPU_CHECK_DRY:-}" ]; then SIZE=debug; UPDATES=1; TESTS="tests/test_hieros_etbs.py"; fi
AGENTS=${GPU_CHECK_AGENTS:-"dreamerv3=agents.dreamerv3:SPEC thick=agents.thick:SPEC vsg=agents.vsg:VSG_SPEC svsg=agents.vsg:SVSG_SPEC"}
export PYTHONUNBUFFERED=1

"$PYTHON" -c "import jax; print('jax', jax.__version__, jax.devices())" 2>&1 | tee "$OUT_DIR/device.txt"
status=0
for item in $AGENTS; do
  name=${item%%=*}; spec=${item#*=}
  echo "== perf agent $name $SIZE"
  "$PYTHON" -m bench.cli perf agent --agent "$spec" --configs "$SIZE" --updates "$UPDATES" --policy-steps 100 \
    --json "$OUT_DIR/perf_$name.json" 2>&1 | tee -a "$OUT_DIR/log.txt" || status=1
  [ -f "$OUT_DIR/perf_$name.json" ] || { echo "perf agent $name failed" | tee -a "$OUT_DIR/log.txt"; status=1; }
done
echo "== numerics tests"
# shellcheck disable=SC2086
"$PYTHON" -m pytest -q -p no:cacheprovider $TESTS > "$OUT_DIR/tests_full.log" 2>&1 || status=1
tail -n 15 "$OUT_DIR/tests_full.log" | tee "$OUT_DIR/tests.txt"; cat "$OUT_DIR/tests_full.log" >> "$OUT_DIR/log.txt"; rm -f "$OUT_DIR/tests_full.log"
"$PYTHON" scripts/gpu_report.py "$OUT_DIR" "$SIZE" > "$OUT_DIR/gpu_check.md" || status=1
cat "$OUT_DIR/gpu_check.md"
exit $status
