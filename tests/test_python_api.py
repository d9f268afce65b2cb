"""The notebook API: `import bench` is cheap; bench.run / load_runs / load_episodes / leaderboard round trip."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import bench
from leaderboard.normalize import TOY_BASELINES
from tests.runs import ROOT, bench as bench_cli


def test_import_bench_is_cheap():
    code = "import sys, bench; print(sorted(m for m in ('jax', 'pandas', 'gymnasium', 'leaderboard') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        bench.nope  # noqa: B018


def test_round_trip(tmp_path):
    settings = dict(steps=200, logdir=tmp_path, overrides={"run.eval_episodes": 3})
    folder = bench.run("random", "toy", "reach", **settings)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["command"].startswith("bench.run('random'")
    # the CLI with the same settings finds the same folder and skips it (same config hash, nothing rewritten)
    scores_before = (folder / "scores.jsonl").read_bytes()
    proc = bench_cli("run", "--agent", "random", "--suite", "toy", "--task", "reach", "--steps", "200",
                     "--run.eval_episodes", "3", root=tmp_path)  # fmt: skip
    assert "already finished" in proc.stderr and proc.stdout.strip() == str(folder)
    assert (folder / "scores.jsonl").read_bytes() == scores_before
    assert bench.run("random", "toy", "reach", **settings) == folder  # and so does the Python API

    episodes = bench.load_episodes(folder)
    evals = episodes[episodes["mode"] == "eval"]
    assert len(evals) == 3

    two = bench.run("random", "toy", "reach", seeds=[1, 2], **settings)
    assert [p.name for p in two] == ["seed1", "seed2"]

    runs = bench.load_runs("toy", roots=[tmp_path], any_budget=True)
    assert list(runs["seed"]) == [0, 1, 2] and set(runs["method"]) == {f"random@{manifest['config_hash']}"}
    # the final_eval score is the mean return of the final evaluation episodes, read here from the file
    records = [json.loads(line) for line in (folder / "scores.jsonl").read_text().splitlines()]
    expected = np.mean([r["return"] for r in records if r["mode"] == "eval" and r["final"]])
    assert runs.loc[runs["seed"] == 0, "score"].item() == pytest.approx(expected)
    assert bench.load_runs("toy", roots=[tmp_path]).empty  # 200 steps is not the suite's budget

    board = bench.leaderboard("toy", runs=[tmp_path], out=tmp_path / "board", tasks=["reach"], any_budget=True,
                              reps=100, no_plots=True)  # fmt: skip
    assert board.index_html.exists() and board.plots == []
    row = board.table[board.table["method"] == f"random@{manifest['config_hash']}"]
    random, optimal = TOY_BASELINES["reach"]  # the board shows toy scores from random (0) to optimal (1)
    assert row["mean"].item() == pytest.approx((runs["score"].mean() - random) / (optimal - random), abs=1e-3)
    with pytest.raises(TypeError, match="unknown option 'nope'"):
        bench.leaderboard("toy", runs=[tmp_path], nope=1)


def test_errors_are_the_cli_errors(tmp_path):
    from bench.registry import RegistryError

    with pytest.raises(RegistryError, match="Did you mean 'toy'"):
        bench.run("random", "tyo", "reach", logdir=tmp_path)
    with pytest.raises(ValueError, match="seed or seeds"):
        bench.run("random", "toy", "reach", seed=0, seeds=[1], logdir=tmp_path)


@pytest.mark.slow
def test_example_script_end_to_end(tmp_path):
    """docs/examples/python_api.py: DreamerV3 (debug) and random on toy reach, 300 steps, then the board
    (about 1-4 minutes on a CPU, mostly DreamerV3's compilation)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    script = ROOT / "docs" / "examples" / "python_api.py"
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), "300"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dreamerv3@" in proc.stdout and "random@" in proc.stdout
    assert (tmp_path / "leaderboard" / "index.html").exists()
    assert (tmp_path / "leaderboard" / "aggregates.png").exists()
