"""VSG and SVSG learn the toy `reach` task through the runner (slow: whole runs on the CPU).

The bar is the uniform random policy measured on the same task: the mean return of the last training episodes
must beat the random mean by three standard errors. The runs shorten the discount horizon to 50 steps (the
toy episodes last 20) so that the critic's targets settle within a short run; everything else is the `debug`
preset.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json

import numpy as np
import pytest

from bench import runner
from tests.helpers import random_policy_episodes

STEPS = 6000
LAST_STEPS = 1500  # training episodes that end in this final stretch are scored


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["vsg", "svsg"])
def test_learns_reach(agent, tmp_path):
    overrides = {"run.steps": STEPS, "run.train_ratio": 128, "imagination.discount_horizon": 50}
    folder = runner.run(agent, "toy", "reach", seed=0, configs=("debug",), overrides=overrides, root=tmp_path, quiet=True)
    with open(folder / "scores.jsonl") as file:
        scores = [json.loads(line) for line in file]
    late = [s["return"] for s in scores if s["mode"] == "train" and s["step"] > STEPS - LAST_STEPS]
    final = [s["return"] for s in scores if s["mode"] == "eval" and s.get("final")]
    baseline, _ = random_policy_episodes("reach", 300)
    bar = baseline.mean() + 3.0 * baseline.std() / np.sqrt(len(late))
    gates = [r["dyn/gate/open_rate"] for r in map(json.loads, open(folder / "metrics.jsonl")) if "dyn/gate/open_rate" in r]
    print(f"{agent}: last {len(late)} training episodes {np.mean(late):.2f}, final eval {np.mean(final):.2f}; "
          f"random {baseline.mean():.2f} +- {baseline.std():.2f}, bar {bar:.2f}; gate open rate {gates[-1]:.3f}")  # fmt: skip
    assert len(late) >= 50 and len(final) >= 10
    assert np.mean(late) > bar
    assert 0.0 < gates[-1] < 1.0
