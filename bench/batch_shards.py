"""Batch shards on a CPU: each update split into equal parts of its batch, one part per XLA CPU device, with
the one-device update's math (`run.batch_shards`, `bench perf agent --batch-shards N`).

Why: on a small model most of an update's operations are too small for XLA to spread over the cores, so with
one device a second core sits idle much of the time (docs/cpu_runs.md, "Where the small sizes lose the
rest"). With N devices, XLA runs N programs at once, each on 1/N of the batch.

How: `jax.config.jax_num_cpu_devices` gives the process N CPU devices (it must be set before JAX runs its first
operation; `ensure_devices`). `shard_update` wraps the runner's keyed update in `jax.shard_map` over a mesh of
those devices: the state, key and counter replicated, the batch and the replay updates split along their first
axis. The agent's update is traced inside `agents.common.shards.batch_shards(N)`, where its random draws, batch
statistics and gradient and metric means (agents/common/shards.py) make every part compute its rows of the
one-device update, and all parts the same new state. Results differ from one device's only by the order of
floating-point sums; tests/test_batch_shards.py compares the two.

Only agents whose spec sets `batch_shards=True` (every random draw of their update through `shards.draw`, and
so on) may run this way. The policy step, reports and checkpoints use the first device's copy of the state.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from agents.common import shards
from bench.api import AgentSpec
from bench.config import ConfigError


class BatchShardsError(ConfigError):
    """`run.batch_shards` cannot be used here; the message says why."""


def check(spec: AgentSpec, parts: int, batch_sizes: dict[str, int]) -> None:
    """One clear line when an agent cannot run its updates as `parts` batch shards."""
    if parts == 1:
        return
    if not spec.batch_shards:
        raise BatchShardsError(f"agent {spec.name!r} does not support batch shards (run.batch_shards={parts}); "
                               "set run.batch_shards=1")  # fmt: skip
    uneven = {name: size for name, size in batch_sizes.items() if size % parts}
    if uneven:
        raise BatchShardsError(f"run.batch_shards={parts} must divide every stream's batch size; got {uneven}")


def ensure_devices(parts: int) -> None:
    """Give this process `parts` CPU devices (before JAX's first operation) and check it computes on the CPU."""
    if parts == 1:
        return
    try:
        jax.config.update("jax_num_cpu_devices", parts)
    except RuntimeError:  # JAX has started; it may have enough devices already
        pass
    if jax.default_backend() != "cpu":
        raise BatchShardsError(f"run.batch_shards={parts} splits updates over CPU cores; this process computes on "
                               f"{jax.default_backend()} (set run.batch_shards=1)")  # fmt: skip
    count = len(jax.devices("cpu"))
    if count < parts:
        raise BatchShardsError(f"run.batch_shards={parts} needs {parts} CPU devices; JAX started with {count} "
                               "before they could be set (start a fresh process)")  # fmt: skip


def mesh(parts: int) -> Mesh:
    return Mesh(np.array(jax.devices("cpu")[:parts]), (shards.AXIS,))


def first_device():
    """The device whose copy of the replicated state the policy step reads (`first_copy`)."""
    return jax.devices("cpu")[0]


def shard_update(keyed_update, parts: int):
    """`jax.jit` of `keyed_update(dynamic, key, batch, counter, stream)` split into `parts` batch shards, with
    the state donated as the one-device update does. Outputs: the new state and the metrics replicated, the
    replay updates split along their first axis (`jax.device_get` gathers them whole)."""
    devices = mesh(parts)
    replicated, split = NamedSharding(devices, P()), NamedSharding(devices, P(shards.AXIS))

    def update(dynamic, key, batch, counter, stream):
        def part(dynamic, key, batch, counter):
            with shards.batch_shards(parts):
                return keyed_update(dynamic, key, batch, counter, stream)

        specs = {"in_specs": (P(), P(), P(shards.AXIS), P()), "out_specs": (P(), P(), P(shards.AXIS))}
        # check_vma off: the agent's pmean makes the state and metrics the same on every part
        return jax.shard_map(part, mesh=devices, check_vma=False, **specs)(dynamic, key, batch, counter)

    return jax.jit(update, static_argnames=("stream",), donate_argnums=(0,),
                   in_shardings=(replicated, replicated, split, replicated),
                   out_shardings=(replicated, replicated, split))  # fmt: skip


def replicate(dynamic, parts: int):
    """The state's arrays replicated on the `parts` devices (the sharded update's input)."""
    return jax.device_put(dynamic, NamedSharding(mesh(parts), P()))


def first_copy(dynamic):
    """The first device's copy of replicated arrays (no copying: views of its buffers)."""
    return jax.tree.map(lambda x: x.addressable_shards[0].data, dynamic)
