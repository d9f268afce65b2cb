"""Hieros through the runner on the toy key-then-door task (slow: a whole run on the CPU).

The bar is measured inside the test: the random policy's success rate on keydoor plus three standard errors
of the agent's late training episodes (as THICK's learning test). Settings: `debug` + `quick` and a discount
of 0.98 (keydoor episodes last at most 40 steps), so the sparse reward propagates within a short run.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json

import numpy as np
import pytest

from bench import runner
from tests.helpers import random_policy_episodes

SPEC = "agents.hieros:SPEC"


def _records(folder, name):
    with open(folder / name) as file:
        return [json.loads(line) for line in file]


@pytest.mark.slow
def test_hieros_learns_keydoor(tmp_path):
    steps, last = 10_000, 2_000
    folder = runner.run(
        SPEC, "toy", "keydoor", seed=0, configs=("debug", "quick"),
        overrides={"run.steps": steps, "imagination.discount": 0.98}, root=tmp_path, quiet=True,
    )  # fmt: skip
    scores = _records(folder, "scores.jsonl")
    late = [s["success"] for s in scores if s["mode"] == "train" and s["step"] > steps - last]
    _, baseline = random_policy_episodes("keydoor", 500)
    bar = baseline.mean() + 3.0 * baseline.std() / np.sqrt(len(late))
    print(f"hieros keydoor: last {len(late)} training episodes success {np.mean(late):.2f}; "
          f"random {baseline.mean():.3f}, bar {bar:.3f}")  # fmt: skip
    assert len(late) >= 40
    assert np.mean(late) > bar
