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
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import update_ab  # noqa: E402  (scripts/update_ab.py, beside this file)

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


def compile_halves(args, mesh, sync: bool):
    """(call(state, batch, counter), state, batch) of the agent's first stream's update under `shard_map` over
    `mesh`'s two devices: the batch split along its first axis, the state replicated."""
    import jax
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    agent, compiled, name, batch = update_ab.prepare_update(args, lambda: None)
    if sync:
        averaged_gradients(agent)  # the compiled agent holds this same object: traced below, after the change
    state = jax.device_put(compiled.dynamic, NamedSharding(mesh, P()))
    batch = {k: jax.device_put(v, NamedSharding(mesh, P(AXIS))) for k, v in batch.items()}
    key = compiled.base_key

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
    halves = "two halves" + (", gradients averaged" if args.sync else ", not synchronised")
    builds = {"one device": lambda: update_ab.compile_update(args, lambda: None),
              halves: lambda: compile_halves(args, mesh, args.sync)}  # fmt: skip
    entries = {}
    for name, build in builds.items():
        start = time.perf_counter()
        entries[name] = list(build())
        print(f"compiled {name!r} in {time.perf_counter() - start:.1f} s", flush=True)
    update_ab.time_alternating(entries, args.rounds)


if __name__ == "__main__":
    main()
