"""DreamerV3 through the runner on the toy suite: a quick smoke run, and a (slow) learning run.

Learning bar (measured, not guessed): the uniform random policy on toy `reach` returns 11.95 +- 3.22 per
20-step episode (mean +- std over 300 episodes, `tests.helpers.random_policy_episodes`, seeds 10000..10299); the 100
training episodes of `bench run --agent random --suite toy --task reach --run.steps 2000` gave 12.12 +- 3.36.
The learning test asserts that the training episodes ending in the last 1500 agent steps beat that mean by
three standard errors of the random mean plus three of the agent's own.

Settings: the `debug` preset with the learning rate raised to 1e-3, one update per policy step
(train_ratio 128 with 8 x 16 batches) and 255 twohot bins, so that a few thousand updates on the CPU
suffice. Measured with these settings (4000 steps, seed 0): late training mean 13.2 +- 0.4, final evaluation
13.5. The toy images are small coloured objects on black; DreamerV3's sigmoid-MSE image decoder learns the
white agent quickly but the green goal only after several thousand updates (measured with a plain
encoder-decoder: the loss plateaus until ~4500 Adam steps), which is what limits learning speed here.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json

import numpy as np
import pytest

from bench import runner
from tests.helpers import random_policy_episodes

LEARNING_STEPS = 6000
LATE_STEPS = 1500
LEARNING_OVERRIDES = {
    "run.steps": LEARNING_STEPS,
    "run.train_ratio": 128,
    "optimizer.lr": 1e-3,
    "reward_head.bins": 255,
    "critic.bins": 255,
}
# A few updates through the runner: tiny batches so that compilation, not training, dominates.
SMOKE_OVERRIDES = {
    "run.steps": 48,
    "run.train_fill": 24,
    "run.train_ratio": 12,
    "run.log_every": 24,
    "run.eval_episodes": 1,
    "batch_size": 2,
    "batch_length": 6,
    "imagination.horizon": 3,
}


def read_jsonl(path) -> list[dict]:
    with open(path) as file:
        return [json.loads(line) for line in file]


def test_smoke_run_through_the_runner(tmp_path):
    folder = runner.run("dreamerv3", "toy", "reach", seed=0, configs=("debug",), overrides=SMOKE_OVERRIDES,
                        root=tmp_path, quiet=True)  # fmt: skip
    scores = read_jsonl(folder / "scores.jsonl")
    assert any(s["mode"] == "train" for s in scores) and any(s["mode"] == "eval" for s in scores)
    metrics = read_jsonl(folder / "metrics.jsonl")
    trained = [m for m in metrics if "loss/total" in m]
    assert trained, "no update was logged"
    for term in ("rec", "rew", "con", "dyn", "rep", "policy", "value", "repval"):
        assert np.isfinite(trained[-1][f"loss/{term}"])
    assert json.loads((folder / "manifest.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_learns_reach(tmp_path):
    baseline, _ = random_policy_episodes("reach", 300)
    folder = runner.run("dreamerv3", "toy", "reach", seed=0, configs=("debug",), overrides=LEARNING_OVERRIDES,
                        root=tmp_path, quiet=True)  # fmt: skip
    scores = read_jsonl(folder / "scores.jsonl")
    late = np.asarray([s["return"] for s in scores if s["mode"] == "train" and s["step"] > LEARNING_STEPS - LATE_STEPS])
    final = [s["return"] for s in scores if s["mode"] == "eval" and s.get("final")]
    print(f"random {baseline.mean():.2f} +- {baseline.std():.2f}; late training {late.mean():.2f} "
          f"+- {late.std():.2f} (n={late.size}); final evaluation {np.mean(final):.2f}")  # fmt: skip
    bar = baseline.mean() + 3 * baseline.std() / np.sqrt(baseline.size) + 3 * late.std() / np.sqrt(late.size)
    assert late.size >= 50
    assert late.mean() > bar, (late.mean(), bar)
