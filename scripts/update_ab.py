"""Time two variants of one agent's update in ONE process, calls alternated, to compare them on a host whose
speed drifts by 10-20% between minutes (separate `bench perf agent` runs cannot resolve a 5% change there).

    python scripts/update_ab.py --agent dreamerv3 --configs size1m --image 64 --actions 6 \\
        --variants scripts/ab_variants/encoder_pooling.py --rounds 10

The variants file defines VARIANTS = {name: apply} with exactly two entries; `apply()` switches the code to
that variant (e.g. by assigning a module attribute) before the agent is built and its update compiled. The
file may also define COMPILER_OPTIONS = {name: {XLA option: value}}, options passed to that variant's compile
(e.g. {"xla_cpu_enable_fast_math": True}), so that XLA's own settings can be compared within one process too.
With `--batch-shards N` each variant's update runs as N batch shards, as `bench run --run.batch_shards N`
runs it (bench/batch_shards.py). Each variant's update is compiled once, with the same synthetic batch (as
`bench perf agent`) and its own donated state; then the two are called in turn, `--rounds` times each after
one warm-up call. Prints each variant's times and the median of the per-round ratios. Run it under TCMalloc
as `bench` runs (LD_PRELOAD=libtcmalloc_minimal.so.4).
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def load_variants(path: str) -> dict:
    spec = importlib.util.spec_from_file_location("ab_variants", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if len(module.VARIANTS) != 2:
        raise SystemExit(f"{path}: VARIANTS must name exactly two variants, got {list(module.VARIANTS)}")
    options = getattr(module, "COMPILER_OPTIONS", {})
    if set(options) - set(module.VARIANTS):
        unknown = sorted(set(options) - set(module.VARIANTS))
        raise SystemExit(f"{path}: COMPILER_OPTIONS names no variant: {unknown}")
    return {name: (apply, options.get(name, {})) for name, apply in module.VARIANTS.items()}


def prepare_update(args, apply):
    """(agent, compiled agent, stream name, synthetic batch) for `--stream` (the agent's first by default),
    built after `apply()` (`agent` is the spec's object, which a caller may still change before compiling)."""
    import jax
    import numpy as np

    from bench import perf_agent, registry
    from bench.runner import KEY_ACT, CompiledAgent

    apply()
    spec = registry.get_agent(args.agent)
    config = perf_agent._agent_config(spec, args)
    obs_space, act_space, _ = perf_agent._spaces(args)
    agent = spec.make(config, obs_space, act_space)
    compiled = CompiledAgent(agent, jax.random.key(args.seed))
    compiled.set_state(agent.init(key=jax.random.key(args.seed)))
    obs = perf_agent._obs_batch(obs_space, 1, np.random.default_rng(args.seed))
    _, _, extras = compiled.act(compiled.initial_carry(1), obs, (np.int32(0),), KEY_ACT, "train")
    streams = dict(agent.streams())
    name = getattr(args, "stream", None) or next(iter(streams))
    if name not in streams:
        raise SystemExit(f"--stream {name!r}: {args.agent} trains the streams {sorted(streams)}")
    stream = streams[name]
    batch = perf_agent._synthetic_batch(obs_space, act_space, jax.device_get(extras), stream,
                                        np.random.default_rng(args.seed))  # fmt: skip
    return agent, compiled, name, batch


def compile_update(args, apply, compiler_options=None):
    """(executable, state, batch) of the agent's first stream's update, built after `apply()` and compiled
    with `compiler_options` (XLA's, as `jax.stages.Lowered.compile` takes them)."""
    import numpy as np

    from bench import batch_shards, registry
    from bench.runner import CompiledAgent

    agent, compiled, name, batch = prepare_update(args, apply)
    if args.batch_shards > 1:  # the runner's update as batch shards, from the same initial state
        batch_shards.check(registry.get_agent(args.agent), args.batch_shards, {name: batch["is_first"].shape[0]})
        one_device = compiled
        compiled = CompiledAgent(agent, one_device.base_key, args.batch_shards)
        compiled.set_state(one_device.state())
    key = compiled.base_key
    lowered = compiled.jitted_update.lower(compiled.dynamic, key, batch, np.int32(0), name)
    executable = lowered.compile(compiler_options=compiler_options or None)
    return (lambda state, batch, counter: executable(state, key, batch, counter)), compiled.dynamic, batch


def time_alternating(entries: dict, rounds: int) -> None:
    """Call each entry's [update, state, batch] in turn, `rounds` times after one warm-up round; print each
    one's times and the median of the first's time over the second's, per round."""
    import jax
    import numpy as np

    times = {name: [] for name in entries}
    for round_index in range(rounds + 1):
        for name, entry in entries.items():
            executable, state, batch = entry
            start = time.perf_counter()
            state, metrics, replay_updates = executable(state, batch, np.int32(round_index + 1))
            jax.device_get((metrics, replay_updates))  # as the runner does after every update
            entry[1] = state
            if round_index:  # the first round warms up
                times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        print(f"{name}: median {statistics.median(values):.3f} s, min {min(values):.3f} s "
              f"({', '.join(f'{v:.3f}' for v in values)})")  # fmt: skip
    first, second = times
    ratios = [a / b for a, b in zip(times[first], times[second])]
    print(f"{first!r} / {second!r} time per update, per round: median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")  # fmt: skip


def main() -> None:
    from bench import perf_agent

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    perf_agent.add_arguments(parser)
    parser.add_argument("--variants", required=True, help="a Python file defining VARIANTS = {name: apply}")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--stream", default=None, help="the stream whose update is timed (default: the first)")
    args = parser.parse_args()
    variants = load_variants(args.variants)
    from bench import batch_shards

    batch_shards.ensure_devices(args.batch_shards)  # before JAX's first operation
    entries = {}
    for name, (apply, options) in variants.items():
        entries[name] = list(compile_update(args, apply, options))
        print(f"compiled {name!r}", flush=True)
    time_alternating(entries, args.rounds)


if __name__ == "__main__":
    main()
