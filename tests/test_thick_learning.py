"""THICK through the runner on the toy key-then-door task: the sparsity scale controls how often the context
changes, and the agent learns the task. Slow (whole runs on the CPU)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json

import numpy as np
import pytest

from bench import runner

RANDOM_SUCCESS = 0.1  # a uniform random policy opens the door in about 10% of keydoor episodes (500 episodes)


def _records(folder, name):
    with open(folder / name) as file:
        return [json.loads(line) for line in file]


def _run(tmp_path, steps, **overrides):
    return runner.run(
        "thick", "toy", "keydoor", seed=0, configs=("debug",),
        overrides={"run.steps": steps, **overrides}, root=tmp_path, quiet=True,
    )  # fmt: skip


@pytest.mark.slow
def test_larger_sparsity_scale_gives_lower_context_change_rate(tmp_path):
    rates = {}
    for beta in (1.0, 100.0):
        folder = _run(
            tmp_path / f"beta{beta:g}", 1200, **{"loss_scales.sparse": beta, "run.final_eval": False}
        )
        values = [
            r["context/change_rate"] for r in _records(folder, "metrics.jsonl") if "context/change_rate" in r
        ]
        assert len(values) >= 2, values
        rates[beta] = float(np.mean(values[-2:]))
    print("context change rate by beta:", rates)
    assert rates[100.0] < 0.5 * rates[1.0], rates


@pytest.mark.slow
def test_thick_learns_keydoor(tmp_path):
    folder = _run(tmp_path, 6000)
    scores = _records(folder, "scores.jsonl")
    final = [s["success"] for s in scores if s["mode"] == "eval" and s.get("final")]
    assert len(final) >= 10, scores[-3:]
    print("final evaluation success rate:", np.mean(final))
    assert np.mean(final) >= 0.5, final
