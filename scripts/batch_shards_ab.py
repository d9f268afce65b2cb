"""Time one agent's update as one device and as batch shards (bench/batch_shards.py), in ONE process with the
calls alternated (as scripts/update_ab.py, for a host whose speed drifts between minutes):

    LD_PRELOAD=libtcmalloc_minimal.so.4 python scripts/batch_shards_ab.py --agent dreamerv3 \\
        --configs size1m --image 64 --actions 6 --rounds 12 [--parts 2]

Both are the runner's own compiled update (`bench.runner.CompiledAgent` with `batch_shards` 1 and `--parts`),
each with its own donated state and the same synthetic batch as `bench perf agent`. Prints each one's times and
the median of the per-round ratios (one device's time over the shards').
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import update_ab  # noqa: E402  (scripts/update_ab.py, beside this file)


def compile_update(args, parts: int):
    """(call(state, batch, counter), state, batch) of `--stream`'s update (default: the agent's first stream) as
    `parts` shards."""
    import jax
    import numpy as np

    from bench import batch_shards, registry
    from bench.runner import CompiledAgent

    agent, one, name, batch = update_ab.prepare_update(args, lambda: None)
    compiled = CompiledAgent(agent, one.base_key, parts)
    compiled.set_state(one.state())
    key = compiled.base_key
    if parts > 1:
        batch_shards.check(registry.get_agent(args.agent), parts, {name: batch["is_first"].shape[0]})
    executable = compiled.jitted_update.lower(compiled.dynamic, key, batch, np.int32(0), name).compile()
    jax.block_until_ready(compiled.dynamic)
    return (lambda state, b, counter: executable(state, key, b, counter)), compiled.dynamic, batch


def main() -> None:
    import jax

    from bench import batch_shards, perf_agent

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    perf_agent.add_arguments(parser)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--parts", type=int, default=2, help="batch shards of the second variant (default 2)")
    parser.add_argument("--stream", default=None, help="the stream whose update is timed (default: the first)")
    args = parser.parse_args()
    batch_shards.ensure_devices(args.parts)
    print(f"devices: {jax.devices()}", flush=True)
    entries = {}
    for name, parts in (("one device", 1), (f"{args.parts} batch shards", args.parts)):
        start = time.perf_counter()
        entries[name] = list(compile_update(args, parts))
        print(f"compiled {name!r} in {time.perf_counter() - start:.1f} s", flush=True)
    update_ab.time_alternating(entries, args.rounds)


if __name__ == "__main__":
    main()
