#!/usr/bin/env bash
# IRIS on a GPU machine, one step per call:
#
#   scripts/iris_gpu.sh perf [OUT_DIR]   # `bench perf agent` at the Atari 100k size (per-stream updates/s,
#                                        # imagination steps/s with the KV cache vs recomputing the context,
#                                        # peak memory), then the GPT's cache tests at float32 matmul precision
#   scripts/iris_gpu.sh learn [OUT_DIR]  # the slow learning test on toy reach (quick preset); it names the
#                                        # suite "toy", so the package's entry points must be installed there
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:?usage: scripts/iris_gpu.sh perf|learn [OUT_DIR]}
OUT_DIR=${2:-${OUT:-iris_gpu_out}}
mkdir -p "$OUT_DIR"
PYTHON=${PYTHON:-python3}
# The tests default JAX to the CPU unless JAX_PLATFORMS is set; one process at a time, so no preallocation.
export PYTHONUNBUFFERED=1 JAX_PLATFORMS=${JAX_PLATFORMS:-cuda} XLA_PYTHON_CLIENT_PREALLOCATE=false
"$PYTHON" -c "import jax; print('jax', jax.__version__, jax.devices())" 2>&1 | tee "$OUT_DIR/device_$MODE.txt"
if [ "$MODE" = perf ]; then
  timeout "${IRIS_PERF_TIMEOUT:-400}" "$PYTHON" -m bench.cli perf agent --agent agents.iris:SPEC \
    --configs atari100k --updates 3 --policy-steps 50 --imagination-batch "${IRIS_IMAGINATION_BATCH:-16}" \
    --json "$OUT_DIR/perf_iris_atari100k.json" 2>&1 | tee "$OUT_DIR/perf_iris_atari100k.txt"
  JAX_DEFAULT_MATMUL_PRECISION=highest timeout 100 "$PYTHON" -m pytest -q -p no:cacheprovider \
    tests/test_iris_transformer.py 2>&1 | tail -n 5 | tee "$OUT_DIR/tests.txt"
else
  timeout "${IRIS_LEARN_TIMEOUT:-500}" "$PYTHON" -m pytest -m slow -q -s -p no:cacheprovider \
    --basetemp=/tmp/iris_learn tests/test_iris_runs.py -k learn 2>&1 | tail -n 20 | tee "$OUT_DIR/learn.txt"
  run=$(dirname "$(find /tmp/iris_learn -name scores.jsonl | head -n 1)")
  [ -d "$run" ] && cp "$run/scores.jsonl" "$run/metrics.jsonl" "$OUT_DIR/"
fi
