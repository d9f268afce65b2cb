"""How much a CPU update would gain from running as two data-parallel halves, one per core: a probe, not a
feature. Times one agent's update as `bench perf agent` builds it (one XLA device, both cores through XLA's
own threads) against the same update under `jax.shard_map` over two host devices, each running it on half
the batch, the two calls alternated in one process (as scripts/update_ab.py, for a host whose speed drifts).

    LD_PRELOAD=libtcmalloc_minimal.so.4 python scripts/data_parallel_probe.py --agent dreamerv3 \\
        --configs size1m --image 64 --actions 6 --rounds 12

With `--sync` (the default) the halves' gradients are averaged (`lax.pmean`) before the optimizer, as a
data-parallel update must; `--no-sync` leaves each half on its own, an upper bound. Either way the sharded
update is NOT the agent's exact math: both halves draw the same random numbers and take their return
percentiles and metrics over their own half. A real data-parallel update would need those collectives in
the agent's code; this probe only says what the time would be. The averaging wraps `agent._optimizer()`, so
it covers agents whose gradients all go through it (DreamerV3's class; measured with DreamerV3 only).
"""

from __future__ import annotations

import os

TWO_HOST_DEVICES = "--xla_force_host_platform_device_count=2"
# before JAX starts:
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + TWO_HOST_DEVICES).strip()

import argparse  # noqa: E402
import pathlib  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

AXIS = "halves"


def averaged_gradients(agent) -> None:
    """Make `agent._optimizer()` average the gradients over AXIS before its own update."""
    import jax
    import optax

    build = agent._optimizer

    def optimizer(self):
        inner = build()
        def update(grads, state, params=None):
            return inner.update(jax.lax.pmean(grads, AXIS), state, params)

        return optax.GradientTransformation(inner.init, update)

    object.__setattr__(agent, "_optimizer", types.MethodType(optimizer, agent))  # equinox modules are frozen


def build_update(args, mesh=None, sync=True):
    """(call(state, batch, counter), state, batch) of the agent's first stream's update; over `mesh`'s two
    devices (batch split, state replicated) when given."""
    import jax
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from bench import perf_agent, registry
    from bench.runner import KEY_ACT, CompiledAgent

    spec = registry.get_agent(args.agent)
    obs_space, act_space, _ = perf_agent._spaces(args)
    agent = spec.make(perf_agent._agent_config(spec, args), obs_space, act_space)
    if mesh is not None and sync:
        averaged_gradients(agent)
    compiled = CompiledAgent(agent, jax.random.key(args.seed))
    compiled.set_state(agent.init(key=jax.random.key(args.seed)))
    obs = perf_agent._obs_batch(obs_space, 1, np.random.default_rng(args.seed))
    _, _, extras = compiled.act(compiled.initial_carry(1), obs, (np.int32(0),), KEY_ACT, "train")
    name, stream = next(iter(dict(agent.streams()).items()))
    batch = perf_agent._synthetic_batch(obs_space, act_space, jax.device_get(extras), stream,
                                        np.random.default_rng(args.seed))  # fmt: skip
    state, key = compiled.dynamic, compiled.base_key
    if mesh is None:
        executable = compiled.jitted_update.lower(state, key, batch, np.int32(0), stream=name).compile()
    else:
        state = jax.device_put(state, NamedSharding(mesh, P()))
        batch = {k: jax.device_put(v, NamedSharding(mesh, P(AXIS))) for k, v in batch.items()}
        def update(dynamic, update_key, half_batch, counter):
            return compiled.keyed_update(dynamic, update_key, half_batch, counter, name)

        specs = {"in_specs": (P(), P(), P(AXIS), P()), "out_specs": (P(), P(), P(AXIS))}
        halves = jax.shard_map(update, mesh=mesh, check_vma=False, **specs)
        executable = jax.jit(halves, donate_argnums=(0,)).lower(state, key, batch, np.int32(0)).compile()
    return (lambda s, b, c: executable(s, key, b, c)), state, batch


def main() -> None:
    import jax
    import numpy as np
    from jax.sharding import Mesh

    from bench import perf_agent

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    perf_agent.add_arguments(parser)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--sync", action=argparse.BooleanOptionalAction, default=True,
                        help="average the halves' gradients before the optimizer (default: yes)")
    args = parser.parse_args()
    mesh = Mesh(np.array(jax.devices()[:2]), (AXIS,))
    names = ("one device", "two halves" + (", gradients averaged" if args.sync else ", not synchronised"))
    entries = {}
    for name, entry_mesh in zip(names, (None, mesh)):
        start = time.perf_counter()
        entries[name] = list(build_update(args, entry_mesh, args.sync))
        print(f"compiled {name!r} in {time.perf_counter() - start:.1f} s", flush=True)
    times = {name: [] for name in entries}
    for round_index in range(args.rounds + 1):
        for name, entry in entries.items():
            call, state, batch = entry
            start = time.perf_counter()
            state, metrics, replay_updates = call(state, batch, np.int32(round_index + 1))
            jax.device_get((metrics, replay_updates))
            entry[1] = state
            if round_index:  # the first round warms up
                times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        print(f"{name}: median {statistics.median(values):.3f} s ({', '.join(f'{v:.3f}' for v in values)})")
    first, second = times
    ratios = [a / b for a, b in zip(times[first], times[second])]
    print(f"{first!r} / {second!r} time per update, per round: median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
