#!/usr/bin/env bash
# The project's GPU check, in one Markdown report: `bench perf agent` for every learning agent at realistic sizes
# in float32 and bfloat16 compute, DreamerV3's update of 5 seeds vmapped in one call against one seed's, a short
# training run on an Atari game through the real runner, and the numerics tests that must also hold on a GPU.
#
#   scripts/gpu_check.sh [OUT_DIR]          # on a GPU machine (writes OUT_DIR/gpu_check.md, default ./gpu_check_out)
#   GPU_CHECK_DRY=1 scripts/gpu_check.sh    # the same steps on the CPU at the debug size (a quick smoke run)
#   GPU_CHECK_PERF_ARGS=--ceiling scripts/gpu_check.sh   # also each update's products-only ceiling (slower)
#
# It stays under 8 minutes. Its jobs run GPU_CHECK_JOBS at a time (default 8) and all end within GPU_CHECK_BUDGET
# seconds from the start (default 400): one is cut at GPU_CHECK_RUN_LIMIT seconds or at the budget, and one that
# would start with less than 30 s left is skipped and named in the report. Side by side, the perf runs compile in
# parallel but time one at a time (`--timing-lock`), and the training run holds that lock throughout, so no
# figure is taken while another job uses the device. The order is what matters most first: the training run,
# DreamerV3 at the first size in float32 with GPU_CHECK_VMAP_SEEDS vmapped seeds, the Atari100k estimate, the
# seeds comparison (GPU_CHECK_SEEDS seeds trained in one vmapped process, then as as many processes at once, each
# for GPU_CHECK_SEEDS_SECONDS and holding the lock), every other agent at the first size in float32, then
# bfloat16, then the next size. The numerics tests get at most 60 s at the end.
#
# Settings (environment): GPU_CHECK_SIZES, GPU_CHECK_DTYPES, GPU_CHECK_AGENTS ("name=module:SPEC" runs at each
# size; "name=module:SPEC@preset" at that preset alone), GPU_CHECK_PERF_ARGS (extra `bench perf agent` flags),
# GPU_CHECK_VMAP_SEEDS (0: none), GPU_CHECK_TESTS, GPU_CHECK_RUN_AGENT, GPU_CHECK_RUN_SUITE, GPU_CHECK_RUN_TASK,
# GPU_CHECK_RUN_CONFIGS, GPU_CHECK_RUN_SECONDS (0: no training run), GPU_CHECK_ESTIMATE (the suite of
# `bench perf agent --estimate` for the training run's agent and configs; empty: none), GPU_CHECK_ESTIMATE_ARGS
# (its extra flags), GPU_CHECK_SEEDS (seeds of the vmapped-against-processes comparison; 0: none),
# GPU_CHECK_SEEDS_SECONDS, GPU_CHECK_SEEDS_AGENT, GPU_CHECK_SEEDS_SUITE, GPU_CHECK_SEEDS_TASK,
# GPU_CHECK_SEEDS_CONFIGS. Agents and suites are named by module
# path, so the check runs from a plain checkout without installing the package; the Atari runs need ale-py
# there (docs/gpu_check.md says how to carry its wheel).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-gpu_check_out}}
mkdir -p "$OUT_DIR/logs"
PYTHON=${PYTHON:-python3}
SIZES=${GPU_CHECK_SIZES:-${GPU_CHECK_SIZE:-"size12m size50m"}}
DTYPES=${GPU_CHECK_DTYPES:-"float32 bfloat16"}
UPDATES=5
BUDGET=${GPU_CHECK_BUDGET:-400}
# No cut of its own by default: a job that waits for the lock waits in its time (on an H200, 2026-12-04, perf
# runs compiled in 120-140 s and then waited for the 240 s of the lock-holding runs, and were cut at 240 s).
RUN_LIMIT=${GPU_CHECK_RUN_LIMIT:-$BUDGET}
JOBS=${GPU_CHECK_JOBS:-8}  # eight: the three lock-holding runs keep their slots while they wait for the lock
VMAP_SEEDS=${GPU_CHECK_VMAP_SEEDS:-5}
TESTS=${GPU_CHECK_TESTS:-"tests/test_hieros_s5.py tests/test_common_numerics.py"}  # S5's 25 tests: 25 s on an H200
RUN_AGENT=${GPU_CHECK_RUN_AGENT:-agents.dreamerv3:SPEC}
RUN_SUITE=${GPU_CHECK_RUN_SUITE:-tasks.atari:SUITE}
RUN_TASK=${GPU_CHECK_RUN_TASK:-pong}
RUN_CONFIGS=${GPU_CHECK_RUN_CONFIGS:-size12m}
RUN_SECONDS=${GPU_CHECK_RUN_SECONDS:-120}
ESTIMATE=${GPU_CHECK_ESTIMATE-tasks.atari:SUITE}  # Atari100k, by module path: a plain checkout has no names
ESTIMATE_ARGS=${GPU_CHECK_ESTIMATE_ARGS:-}
SEEDS=${GPU_CHECK_SEEDS:-5}
SEEDS_SECONDS=${GPU_CHECK_SEEDS_SECONDS:-90}  # at 60 s, 5 processes compiling side by side had not updated yet
SEEDS_AGENT=${GPU_CHECK_SEEDS_AGENT:-$RUN_AGENT}
SEEDS_SUITE=${GPU_CHECK_SEEDS_SUITE:-tasks.toy:SUITE}
SEEDS_TASK=${GPU_CHECK_SEEDS_TASK:-reach}
SEEDS_CONFIGS=${GPU_CHECK_SEEDS_CONFIGS:-"debug quick"}  # as docs/cpu_runs.md's CPU comparison
if [ -n "${GPU_CHECK_DRY:-}" ]; then
  SIZES=${GPU_CHECK_SIZES:-debug}; UPDATES=1; TESTS=${GPU_CHECK_TESTS:-"tests/test_hieros_etbs.py"}
  RUN_CONFIGS=${GPU_CHECK_RUN_CONFIGS:-debug}; RUN_SECONDS=${GPU_CHECK_RUN_SECONDS:-60}
  SEEDS_SECONDS=${GPU_CHECK_SEEDS_SECONDS:-30}
  JOBS=${GPU_CHECK_JOBS:-1}  # the lock keeps timings off a shared device, not off shared CPU cores
fi
AGENTS=${GPU_CHECK_AGENTS:-"dreamerv3=agents.dreamerv3:SPEC thick=agents.thick:SPEC vsg=agents.vsg:VSG_SPEC svsg=agents.vsg:SVSG_SPEC p2e=agents.p2e:SPEC tssm=agents.tssm:SPEC hieros=agents.hieros:SPEC iris=agents.iris:SPEC@atari100k"}
PERF_ARGS=${GPU_CHECK_PERF_ARGS:-}
LOCK="$OUT_DIR/timing.lock"
# Several processes share the device: each takes memory as it needs it, not 75% up front.
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
rm -f "$OUT_DIR"/perf_*.json "$OUT_DIR"/estimate_*.json "$OUT_DIR/failed.txt" "$OUT_DIR/run.txt" \
  "$OUT_DIR/seeds.txt" "$OUT_DIR/logs"/*.log
rm -rf "$OUT_DIR/training_run" "$OUT_DIR/seeds_vmap" "$OUT_DIR/seeds_processes"
: > "$OUT_DIR/log.txt"
: > "$OUT_DIR/skipped.txt"
: > "$OUT_DIR/order.txt"

start=$SECONDS
"$PYTHON" -c "import jax; print('jax', jax.__version__, jax.devices())" 2>&1 | tee "$OUT_DIR/device.txt"
# The agents without a compute_dtype option (float32 only), one name per line.
"$PYTHON" - $AGENTS > "$OUT_DIR/float32_only.txt" <<'EOF'
import sys
from bench import registry
for item in sys.argv[1:]:
    name, spec = item.split("=", 1)
    if not hasattr(registry.get_agent(spec.split("@")[0]).config_cls(), "compute_dtype"):
        print(name)
EOF

# run_job LABEL SLUG COMMAND...: start COMMAND in the background once fewer than JOBS run, within the budget.
run_job() {
  local label=$1 slug=$2; shift 2
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
  local left=$((BUDGET - (SECONDS - start)))
  if [ "$left" -lt 30 ]; then
    echo "$label" >> "$OUT_DIR/skipped.txt"; echo "== $label: skipped (time budget)"; return
  fi
  local limit=$((left < RUN_LIMIT ? left : RUN_LIMIT))
  echo "== $label (started at $((SECONDS - start)) s, limit $limit s)"
  echo "$slug $label" >> "$OUT_DIR/order.txt"
  (
    timeout -s INT -k 30 "$limit" "$@" > "$OUT_DIR/logs/$slug.log" 2>&1
    code=$?
    [ "$code" -eq 124 ] && echo "$label: cut at its $limit s limit" >> "$OUT_DIR/failed.txt"
    [ "$code" -ne 0 ] && [ "$code" -ne 124 ] && echo "$label: exit status $code" >> "$OUT_DIR/failed.txt"
    echo "== $label: done at $((SECONDS - start)) s (exit status $code)"
  ) &
}

perf_job() {  # perf_job NAME SPEC CONFIG DTYPE [EXTRA FLAGS...]
  local name=$1 spec=$2 config=$3 dtype=$4; shift 4
  local dtype_set=""; [ "$dtype" = float32 ] || dtype_set="--set compute_dtype=$dtype"  # float32: the default
  # shellcheck disable=SC2086
  run_job "$name $config $dtype" "perf_${name}_${config}_${dtype}" "$PYTHON" -m bench.cli perf agent --agent "$spec" \
    --configs "$config" --updates "$UPDATES" --policy-steps 100 $dtype_set $PERF_ARGS --timing-lock "$LOCK" \
    --json "$OUT_DIR/perf_${name}_${config}_${dtype}.json" "$@"
}

# locked_run_job LABEL SLUG SECONDS `bench run` ARGS...: a training command that holds the timing lock from its
# start (compilation included) and is stopped with SIGINT after SECONDS (it checkpoints), which counts as success.
# A cut at the budget passes the SIGINT on to the run (or, while waiting for the lock, gives up): the inner
# `timeout` has a process group of its own, which the outer one's signals do not reach, so a wrapper that died
# without passing them on left the run training on (seen on the H200 run of 2026-12-04).
LOCKED='import fcntl, signal, subprocess, sys
proc = None
def stop(signum, _frame):
    if proc is None:
        sys.exit(124)
    proc.send_signal(signum)
for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, stop)
lock = open(sys.argv[1], "a"); fcntl.flock(lock, fcntl.LOCK_EX)
proc = subprocess.Popen(sys.argv[2:])
code = proc.wait()
sys.exit(0 if code == 124 else code)  # 124: stopped at its time, as planned'
locked_run_job() {
  local label=$1 slug=$2 seconds=$3; shift 3
  run_job "$label" "$slug" "$PYTHON" -c "$LOCKED" "$LOCK" timeout -s INT -k 30 "$seconds" \
    "$PYTHON" -m bench.cli run "$@" --steps 100000 --quiet
}

# 1. The training run on an Atari game, holding the timing lock throughout.
if [ "$RUN_SECONDS" -gt 0 ]; then
  echo "$RUN_AGENT $RUN_SUITE $RUN_TASK $RUN_CONFIGS $RUN_SECONDS" > "$OUT_DIR/run.txt"
  # shellcheck disable=SC2086
  locked_run_job "training run" run "$RUN_SECONDS" --agent "$RUN_AGENT" --suite "$RUN_SUITE" --task "$RUN_TASK" \
    --configs $RUN_CONFIGS --run.log_every 250 --logdir "$OUT_DIR/training_run"
fi
# Jobs 3 and 4, started after the first perf run: the estimate, and the seeds trained vmapped then as processes.
extra_jobs() {
  if [ -n "$ESTIMATE" ]; then
    # shellcheck disable=SC2086
    run_job "estimate $ESTIMATE" estimate "$PYTHON" -m bench.cli perf agent --agent "$RUN_AGENT" \
      --estimate "$ESTIMATE" --configs $RUN_CONFIGS --updates "$UPDATES" --policy-steps 100 $PERF_ARGS \
      $ESTIMATE_ARGS --timing-lock "$LOCK" --json "$OUT_DIR/estimate_${ESTIMATE//[^A-Za-z0-9_]/_}.json"
  fi
  if [ "$SEEDS" -gt 0 ]; then
    echo "$SEEDS_AGENT $SEEDS_SUITE $SEEDS_TASK $SEEDS_CONFIGS $SEEDS $SEEDS_SECONDS" > "$OUT_DIR/seeds.txt"
    local common=(--agent "$SEEDS_AGENT" --suite "$SEEDS_SUITE" --task "$SEEDS_TASK" --seeds "0:$SEEDS"
                  --run.log_every 25)
    # shellcheck disable=SC2086
    locked_run_job "$SEEDS seeds vmapped" seeds_vmap "$SEEDS_SECONDS" "${common[@]}" --configs $SEEDS_CONFIGS \
      --vmap --logdir "$OUT_DIR/seeds_vmap"
    # shellcheck disable=SC2086
    locked_run_job "$SEEDS seeds as processes" seeds_processes "$SEEDS_SECONDS" "${common[@]}" \
      --configs $SEEDS_CONFIGS --parallel "$SEEDS" --logdir "$OUT_DIR/seeds_processes"
  fi
}
# 2. Perf runs: per size, float32 then the other dtypes; the first agent at the first size also vmapped,
# then the extra jobs.
first=1
for size in $SIZES; do
  for dtype in $DTYPES; do
    for item in $AGENTS; do
      name=${item%%=*}; spec=${item#*=}; config=$size
      if [ "$spec" != "${spec%@*}" ]; then  # a fixed preset: run once, at the first size's turn
        config=${spec##*@}; spec=${spec%@*}
        [ "$size" = "${SIZES%% *}" ] || continue
      fi
      if [ "$dtype" != float32 ] && grep -qx "$name" "$OUT_DIR/float32_only.txt"; then continue; fi
      if [ "$first" = 1 ] && [ "$VMAP_SEEDS" -gt 0 ]; then
        perf_job "$name" "$spec" "$config" "$dtype" --vmap-seeds "$VMAP_SEEDS"
      else
        perf_job "$name" "$spec" "$config" "$dtype"
      fi
      [ "$first" = 1 ] && extra_jobs
      first=0
    done
  done
done
wait
while read -r slug label; do
  { echo "== $label"; cat "$OUT_DIR/logs/$slug.log"; } >> "$OUT_DIR/log.txt"
done < "$OUT_DIR/order.txt"
echo "== numerics tests"
# shellcheck disable=SC2086
timeout 60 "$PYTHON" -m pytest -q -p no:cacheprovider $TESTS > "$OUT_DIR/tests_full.log" 2>&1 \
  || echo "numerics tests: failed or cut at 60 s" >> "$OUT_DIR/failed.txt"
tail -n 15 "$OUT_DIR/tests_full.log" | tee "$OUT_DIR/tests.txt"; cat "$OUT_DIR/tests_full.log" >> "$OUT_DIR/log.txt"; rm -f "$OUT_DIR/tests_full.log"
echo "$((SECONDS - start))" > "$OUT_DIR/seconds.txt"
status=0
[ -s "$OUT_DIR/failed.txt" ] && status=1
"$PYTHON" scripts/gpu_report.py "$OUT_DIR" > "$OUT_DIR/gpu_check.md" || status=1
cat "$OUT_DIR/gpu_check.md"
exit $status
