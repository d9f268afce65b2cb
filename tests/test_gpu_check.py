"""scripts/gpu_check.sh in its CPU dry mode: one tiny perf run, the time budget, the tests, the Markdown report."""

import json
import os
import subprocess
import sys

from tests.runs import ROOT


def test_gpu_check_dry_run_writes_its_report_and_keeps_to_its_time_budget(tmp_path):
    out = tmp_path / "gpu"
    env = dict(os.environ, GPU_CHECK_DRY="1", PYTHON=sys.executable, PYTHONPATH=str(ROOT),
               GPU_CHECK_AGENTS="two=tests.helpers:SIZED_TWO_STREAMS", GPU_CHECK_SIZES="debug size50m",
               GPU_CHECK_DTYPES="float32", GPU_CHECK_BUDGET="1", GPU_CHECK_TESTS="tests/test_perf_estimate.py",
               GPU_CHECK_PERF_ARGS="--suite toy --task reach --policy-steps 5 --matmul 64")  # fmt: skip
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads((out / "perf_two_debug_float32.json").read_text())
    assert figures["batch"] == 2 and figures["length"] == 4 and figures["update_s_median"] > 0
    # the budget (1 s) is spent by the first run: size50m is skipped, never started
    assert not (out / "perf_two_size50m_float32.json").exists()
    assert (out / "skipped.txt").read_text().split("\n")[0] == "two size50m float32"
    report = (out / "gpu_check.md").read_text()
    assert report == proc.stdout[proc.stdout.index("# GPU check"):]
    assert "| two_streams | debug | float32 | 2 x 4 |" in report
    assert "Skipped to stay within the time budget: two size50m float32." in report
    assert "Device: `jax " in report and "passed" in (out / "tests.txt").read_text()
    assert "Failed" not in report
