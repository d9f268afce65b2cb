#!/usr/bin/env bash
# What a session lent a GPU runs there, in one call of the device tool (docs/gpu_check.md):
#
#   run(command="scripts/gpu_session.sh", carry=[".whl"], timeout_s=560)
#
# Installs the wheels carried in .whl (ale-py for the Atari run: the device image lacks it), runs
# scripts/gpu_check.sh, and leaves in $OUT its report (gpu_check.md) and every file it wrote as one archive
# (checkpoints left out): the device tool brings back at most 8 files.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_session_out}
mkdir -p "$OUT"
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia_smi.txt" 2>&1
scripts/gpu_check.sh /tmp/gpu_check
status=$?
cp /tmp/gpu_check/gpu_check.md "$OUT/" 2>/dev/null
tar czf "$OUT/gpu_check_files.tgz" --exclude=ckpt -C /tmp gpu_check
exit $status
