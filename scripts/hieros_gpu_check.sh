#!/usr/bin/env bash
# Hieros on an accelerator: the world-model update time of the S5WM against DreamerV3's RSSM (same encoder,
# decoder, heads and losses; batch 16 x length 64), then `bench perf agent` for Hieros with 3 levels and flat.
#
#   scripts/hieros_gpu_check.sh [OUT_DIR]       # default ./hieros_gpu_out (or $OUT on the device machine)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-hieros_gpu_out}}
mkdir -p "$OUT_DIR"
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
"$PYTHON" -c "import jax; print('jax', jax.__version__, jax.devices())" 2>&1 | tee "$OUT_DIR/device.txt"
git log -1 --oneline 2>/dev/null | tee -a "$OUT_DIR/device.txt"
echo "== world models"
"$PYTHON" scripts/perf_world_models.py --updates 5 --json "$OUT_DIR/world_models.json" 2>&1 | tee "$OUT_DIR/world_models.txt"
for levels in 3 1; do
  echo "== perf agent hieros max_hierarchy=$levels"
  "$PYTHON" -m bench.cli perf agent --agent agents.hieros:SPEC --set "max_hierarchy=$levels" --updates 3 \
    --policy-steps 100 --json "$OUT_DIR/perf_hieros_$levels.json" 2>&1 | tail -n 40 | tee "$OUT_DIR/perf_hieros_$levels.txt"
done
