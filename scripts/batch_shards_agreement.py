"""How closely two batch shards reproduce the one-device update, per agent that allows them: the largest
relative difference of the second update's metrics and the largest absolute difference of its replay latents
(the same two updates from nudged weights as tests/test_batch_shards.py, which asserts the bounds).

    python scripts/batch_shards_agreement.py
"""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def main() -> None:
    import jax

    jax.config.update("jax_num_cpu_devices", 2)  # before JAX's first operation
    import numpy as np

    from tests.test_batch_shards import CASES, case_agent, case_batch, two_updates

    for case, (_, _, stream) in CASES.items():
        agent, _ = case_agent(case)
        batch = case_batch(agent, stream)
        one, one_replay, _ = two_updates(agent, batch, 1, stream)
        two, two_replay, _ = two_updates(agent, batch, 2, stream)
        metrics = max(abs(float(one[k]) - float(two[k])) / max(abs(float(one[k])), 1e-6) for k in one)
        replay = [float(np.abs(one_replay[k].astype(np.float32) - two_replay[k].astype(np.float32)).max())
                  for k in one_replay]  # fmt: skip
        latents = f"replay latents within {max(replay):.2e}" if replay else "no replay latents (the agent stores none)"
        print(f"{case}: metrics within a relative {metrics:.2e}; {latents}", flush=True)


if __name__ == "__main__":
    main()
