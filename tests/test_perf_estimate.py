"""`bench perf agent --estimate`: the arithmetic from measured figures to run and board wall times."""

import json

import pytest

from bench import cli
from bench.perf_agent import StreamPlan, estimate_run


def test_estimate_of_a_run_and_a_board_from_fixed_figures():
    # Atari100k-like: 100k agent steps, train_ratio 256 at batch 16 x 64 after 1024 fill steps, 0.5 s/update,
    # 200 policy steps/s, one final round of 100 episodes of 500 steps; a second stream starts at step 5000
    streams = [StreamPlan("main", 256.0, 16, 64, 0, 0.5), StreamPlan("late", 64.0, 8, 8, 5000, 0.1),
               StreamPlan("never", 64.0, 8, 8, 200_000, 9.0)]  # fmt: skip
    result = estimate_run(steps=100_000, train_fill=1024, streams=streams, policy_steps_per_s=200.0, eval_rounds=1,
                          eval_episodes=100, eval_episode_steps=500, tasks=26, seeds=5)  # fmt: skip
    main_updates = (100_000 - 1024) * 256 / (16 * 64)  # 24,744 updates
    late_updates = (100_000 - 5000) * 64 / (8 * 8)  # 95,000 updates
    run_s = main_updates * 0.5 + late_updates * 0.1 + 100_000 / 200 + 1 * 100 * 500 / 200
    assert run_s == pytest.approx(12_372 + 9_500 + 500 + 250)
    assert result["run_s"] == pytest.approx(run_s)
    assert result["board_s"] == pytest.approx(run_s * 26 * 5)
    text = "\n".join(result["lines"])
    assert "24,744 updates x 0.5 s = 12,372 s" in text and "95,000 updates x 0.1 s = 9,500 s" in text
    assert "= 0 updates" in text  # a stream that starts after the budget never updates
    assert "board: 26 tasks x 5 seeds" in text and f"{run_s * 130:,.0f} s" in text


def test_estimate_without_evaluation_rounds_counts_no_evaluation_steps():
    result = estimate_run(steps=1000, train_fill=0, streams=[StreamPlan("main", 32.0, 4, 8, 0, 1.0)],
                          policy_steps_per_s=100.0, eval_rounds=0, eval_episodes=10, eval_episode_steps=50,
                          tasks=1, seeds=1)  # fmt: skip
    assert result["run_s"] == pytest.approx(1000 * 32 / 32 * 1.0 + 1000 / 100)


def test_estimate_takes_a_suite_by_module_path(tmp_path, capsys):
    """A plain checkout (scripts/gpu_check.sh on a device) has no registered names: `--estimate module:NAME`
    resolves that suite throughout (it failed with "unknown suite 'crashing'")."""
    out = tmp_path / "estimate.json"
    code = cli.main(["perf", "agent", "--agent", "tests.helpers:TINY", "--estimate", "tests.helpers:CRASHING",
                     "--updates", "1", "--policy-steps", "2", "--matmul", "64", "--eval-episode-steps", "10",
                     "--board-seeds", "3", "--json", str(out)])  # fmt: skip
    assert code == 0
    figures = json.loads(out.read_text())
    assert figures["estimate"]["board_s"] == pytest.approx(figures["estimate"]["run_s"] * 1 * 3)
    assert "estimate for crashing (reach measured" in capsys.readouterr().out
