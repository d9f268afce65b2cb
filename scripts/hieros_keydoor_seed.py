"""One run of tests/test_hieros_learning.py's settings with another seed, and the test's own bar
(docs/hieros.md, "The keydoor learning test on 2026-12-06"). About 20-35 minutes on 2 CPU cores.

    python scripts/hieros_keydoor_seed.py SEED ROOT                        # at the slow tests' XLA level 0
    DEFAULT_LEVEL=1 python scripts/hieros_keydoor_seed.py SEED ROOT        # at XLA's default level
    cd OTHER_CHECKOUT && python /path/to/scripts/hieros_keydoor_seed.py SEED ROOT   # another commit's code

The code comes from the current directory's checkout (run it from the repository root, or from another
checkout's root). Prints the success rate of the last 2,000 steps' training episodes against the bar.
"""

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if not os.environ.get("DEFAULT_LEVEL"):
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
sys.path.insert(0, os.getcwd())

if __name__ == "__main__":  # env workers are spawned processes that import this file
    import json

    import numpy as np

    from bench import runner
    from tests.helpers import random_policy_episodes

    seed, root = int(sys.argv[1]), sys.argv[2]
    steps, last = 10_000, 2_000
    folder = runner.run("agents.hieros:SPEC", "toy", "keydoor", seed=seed, configs=("debug", "quick"),
                        overrides={"run.steps": steps, "imagination.discount": 0.98}, root=root, quiet=True)
    with open(folder / "scores.jsonl") as file:
        scores = [json.loads(line) for line in file]
    late = [s["success"] for s in scores if s["mode"] == "train" and s["step"] > steps - last]
    _, baseline = random_policy_episodes("keydoor", 500)
    bar = baseline.mean() + 3.0 * baseline.std() / np.sqrt(len(late))
    print(f"seed {seed}: last {len(late)} training episodes success {np.mean(late):.3f}; "
          f"random {baseline.mean():.3f}, bar {bar:.3f}")
