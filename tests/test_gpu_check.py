"""scripts/gpu_check.sh in its CPU dry mode: tiny perf runs in both compute dtypes, the time budget, the tests,
the Markdown report."""

import json
import os
import subprocess
import sys

from tests.runs import ROOT


def _gpu_check(out, **settings) -> subprocess.CompletedProcess:
    env = dict(os.environ, GPU_CHECK_DRY="1", PYTHON=sys.executable, PYTHONPATH=str(ROOT),
               GPU_CHECK_AGENTS="two=tests.helpers:SIZED_TWO_STREAMS", GPU_CHECK_TESTS="tests/test_perf_estimate.py",
               GPU_CHECK_PERF_ARGS="--suite toy --task reach --policy-steps 5 --matmul 64", **settings)  # fmt: skip
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out)], env=env, cwd=out.parent,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_gpu_check_dry_run_writes_its_report_in_both_compute_dtypes(tmp_path):
    """Two jobs at a time: the training run (holding the timing lock) beside the perf runs."""
    out = tmp_path / "gpu"
    proc = _gpu_check(out, GPU_CHECK_SIZES="debug", GPU_CHECK_JOBS="2", GPU_CHECK_VMAP_SEEDS="3",
                      GPU_CHECK_RUN_AGENT="tests.helpers:SIZED_TWO_STREAMS", GPU_CHECK_RUN_SUITE="tasks.toy:SUITE",
                      GPU_CHECK_RUN_TASK="reach", GPU_CHECK_RUN_CONFIGS="debug", GPU_CHECK_RUN_SECONDS="25",
                      GPU_CHECK_ESTIMATE="toy", GPU_CHECK_ESTIMATE_ARGS="--eval-episode-steps 50", GPU_CHECK_SEEDS="2", GPU_CHECK_SEEDS_CONFIGS="debug",
                      GPU_CHECK_SEEDS_SECONDS="20")  # fmt: skip
    figures = {dtype: json.loads((out / f"perf_two_debug_{dtype}.json").read_text()) for dtype in ("float32", "bfloat16")}
    assert all(f["batch"] == 2 and f["length"] == 4 and f["update_s_median"] > 0 for f in figures.values())
    # the matmul peak each run compares with is in its compute dtype
    assert [f["compute_dtype"] for f in figures.values()] == ["float32", "bfloat16"]
    report = (out / "gpu_check.md").read_text()
    assert report == proc.stdout[proc.stdout.index("# GPU check"):]
    assert "| two_streams | debug | float32 | 2 x 4 |" in report and "| two_streams | debug | bfloat16 | 2 x 4 |" in report
    assert "Device: `jax " in report and "passed" in (out / "tests.txt").read_text()
    assert "Failed" not in report and "Skipped" not in report
    # the first agent at the first size, float32, also timed 3 seeds vmapped (each stream)
    assert figures["float32"]["streams"]["fast"]["vmap"]["seeds"] == 3 and "vmap" not in figures["bfloat16"]["streams"]["fast"]
    assert "| two_streams | debug | float32 | fast | 3 |" in report and "| two_streams | debug | float32 | slow | 3 |" in report
    assert ("Training run: `bench run --agent tests.helpers:SIZED_TWO_STREAMS --suite tasks.toy:SUITE --task reach "
            "--configs debug`, stopped with SIGINT after 25 s") in report  # fmt: skip
    assert "Reached agent step " in report and "run status: stopped." in report
    # the estimate of the training run's agent and configs for the toy suite, with its arithmetic
    estimate = json.loads((out / "estimate_toy.json").read_text())["estimate"]
    assert "Estimate for toy (`bench perf agent --estimate`, two_streams with presets debug, float32): one run " in report
    assert estimate["lines"][-1] in report and estimate["board_s"] > estimate["run_s"] > 0
    # the 2 seeds trained vmapped in one process, then as 2 processes: both ways reached their updates
    assert "Seeds 0-1 trained in one process, vmapped (`--seeds 0:2 --vmap`), and as 2 processes at once" in report
    assert "| vmapped, 1 process | 2 of 2 |" in report and "| 2 processes | 2 of 2 |" in report
    assert "Vmapped / processes, aggregate: " in report
    for way in ("seeds_vmap", "seeds_processes"):
        manifests = sorted((out / way).glob("**/manifest.json"))
        assert len(manifests) == 2 and all(json.loads(m.read_text())["status"] == "stopped" for m in manifests)


def test_gpu_check_skips_what_would_start_after_its_time_budget(tmp_path):
    out = tmp_path / "gpu"
    _gpu_check(out, GPU_CHECK_SIZES="size50m", GPU_CHECK_BUDGET="0")
    assert not list(out.glob("perf_*.json"))
    order = ["training run", "two size50m float32", "estimate tasks.atari:SUITE", "5 seeds vmapped", "5 seeds as processes",
             "two size50m bfloat16"]  # fmt: skip
    assert (out / "skipped.txt").read_text().split("\n")[:6] == order
    report = (out / "gpu_check.md").read_text()
    assert f"Skipped to stay within the time budget: {'; '.join(order)}." in report


def test_gpu_report_shows_the_ceiling_of_runs_made_with_it(tmp_path, capsys, monkeypatch):
    """GPU_CHECK_PERF_ARGS=--ceiling: the report adds a table of each stream's products-only time and
    ceiling."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import gpu_report

    stream = {"utilisation": 0.25, "ceiling": {"products_only_s": 0.012, "products_share_of_update": 0.6,
                                               "ceiling_utilisation": 0.5}}  # fmt: skip
    figures = {"agent": "dreamerv3", "configs": ["size12m"], "compute_dtype": "float32", "batch": 16, "length": 64,
               "parameters": 1e7, "update_compile_s": 40.0, "update_s_median": 0.02, "updates_per_s": 50.0,
               "update_gflop_products": 1000.0, "achieved_gflops": 5e4, "matmul_peak_gflops": 2e5,
               "utilisation": 0.25, "policy_steps_per_s": 500.0, "xla_temp_mib": 100.0,
               "streams": {"train": stream}}  # fmt: skip
    (tmp_path / "perf_dreamerv3_size12m_float32.json").write_text(json.dumps(figures))
    assert gpu_report.main(str(tmp_path)) == 0
    report = capsys.readouterr().out
    assert "| dreamerv3 | size12m | float32 | train | 12.0 | 60% | 25.0% | 50.0% |" in report
    del figures["streams"]["train"]["ceiling"]
    (tmp_path / "perf_dreamerv3_size12m_float32.json").write_text(json.dumps(figures))
    gpu_report.main(str(tmp_path))
    assert "Ceiling" not in capsys.readouterr().out


def test_a_training_job_cut_at_its_limit_stops_its_run_and_leaves_nothing_running(tmp_path):
    """A lock-holding training job cut before its own time (here GPU_CHECK_RUN_LIMIT 20 s < 300 s) passes the
    SIGINT on: each run saves its checkpoint and stops, and no process is left training after the check."""
    out = tmp_path / "gpu"
    env = dict(os.environ, GPU_CHECK_DRY="1", PYTHON=sys.executable, PYTHONPATH=str(ROOT), GPU_CHECK_SIZES="debug",
               GPU_CHECK_AGENTS="two=tests.helpers:SIZED_TWO_STREAMS", GPU_CHECK_TESTS="tests/test_perf_estimate.py",
               GPU_CHECK_PERF_ARGS="--suite toy --task reach --policy-steps 5 --matmul 64", GPU_CHECK_DTYPES="float32",
               GPU_CHECK_VMAP_SEEDS="0", GPU_CHECK_RUN_SECONDS="0", GPU_CHECK_ESTIMATE="", GPU_CHECK_SEEDS="2",
               GPU_CHECK_SEEDS_AGENT="tests.helpers:SIZED_TWO_STREAMS", GPU_CHECK_SEEDS_CONFIGS="debug",
               GPU_CHECK_SEEDS_SECONDS="300",
               GPU_CHECK_RUN_LIMIT="20", GPU_CHECK_JOBS="3")  # fmt: skip
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out)], env=env, cwd=out.parent,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert "2 seeds vmapped: cut at its 20 s limit" in (out / "failed.txt").read_text(), proc.stdout[-3000:]
    left = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True).stdout.split()
    assert not left, subprocess.run(["ps", "-o", "pid,args", "-p", ",".join(left)], capture_output=True, text=True).stdout
    manifests = sorted(out.glob("seeds_*/**/manifest.json"))
    assert len(manifests) >= 2 and {json.loads(m.read_text())["status"] for m in manifests} == {"stopped"}
