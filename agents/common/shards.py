"""Batch shards: one update computed as equal parts of its batch, one part per device, with the one-device
update's math (data parallelism that changes nothing but the order of floating-point sums).

The runner (bench/batch_shards.py) calls an agent's update under `jax.shard_map` with the batch split along
its first axis and the state replicated, inside `batch_shards(parts)`. An agent that opts in writes its update
so that each part computes its rows of what the whole update computes, with these three helpers:

* `draw(sample, key, shape)`: random numbers whose first axis is the batch's (or batch x time, batch-major)
  are drawn at the whole batch's shape from the same key, and each part keeps its own rows; every part then
  samples what the one-device update samples for those rows. The draws cost the whole batch's, a small part
  of an update.
* `split(key, shape)` and `per_row(fn)`: for code vmapped over the batch's rows with a key per row (Hieros's
  S5 world model, IRIS's transformer), `split` gives each part its rows of the whole batch's keys, and
  `per_row(fn)` traces `fn` (one row's code) with plain draws: inside the vmap a draw's first axis is not the
  batch's.
* `gather(x)`: the whole batch's rows of `x`, for statistics over the batch that are not means (DreamerV3's
  return percentiles); `masked_means(values, mask)` for means over a batch-dependent number of items (THICK's
  high-level targets).
* `mean(tree)`: the mean over the parts. The loss is a mean over equal parts of the batch, so its gradient
  is the mean of the parts' gradients; metrics that are batch means become the whole batch's means; a term
  that clips a batch mean (VSG's gate free bits) clips the whole batch's. Differentiated inside a part, the
  mean passes every part's cotangent back to each part in full, and the parts' gradients are then averaged:
  together the whole batch's gradient (tests/test_batch_shards.py checks it on the gate term).

Outside `batch_shards` (one part, the default) the helpers are the identity and `draw` is the plain draw, so an
agent's update is unchanged bit for bit.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray, PyTree

AXIS = "batch_shards"  # the mesh axis the batch is split along
_PARTS = contextvars.ContextVar("batch_shards", default=1)


@contextlib.contextmanager
def batch_shards(parts: int) -> Iterator[None]:
    """Trace the code inside as one of `parts` equal parts of the batch, under a `shard_map` over AXIS."""
    if parts < 1:
        raise ValueError(f"batch_shards: parts must be >= 1, got {parts}")
    token = _PARTS.set(parts)
    try:
        yield
    finally:
        _PARTS.reset(token)


def parts() -> int:
    """How many parts the batch is split into while tracing (1 outside `batch_shards`)."""
    return _PARTS.get()


def draw(sample: Callable[..., Array], key: PRNGKeyArray, shape: tuple[int, ...], *args, axis: int = 0) -> Array:
    """`sample(key, shape, *args)` (e.g. `jax.random.normal`), whose axis `axis` (the first by default; 1 for
    time-major draws) runs over the batch: this part's rows of the draw at the whole batch's shape."""
    count = parts()
    if count == 1:
        return sample(key, shape, *args)
    if not -len(shape) <= axis < len(shape):
        raise ValueError(f"a draw under batch shards needs an axis {axis} over the batch; got shape {shape}")
    axis %= len(shape)
    rows = shape[axis]
    whole = sample(key, (*shape[:axis], rows * count, *shape[axis + 1:]), *args)
    return jax.lax.dynamic_slice_in_dim(whole, jax.lax.axis_index(AXIS) * rows, rows, axis)


def split(key: PRNGKeyArray, shape: int | tuple[int, ...]) -> PRNGKeyArray:
    """This part's rows of `jax.random.split(key, shape)` at the whole batch's shape (the first axis of `shape`
    runs over this part's rows): one key per row, the key the one-device update gives that row."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return draw(lambda k, whole: jax.random.split(k, whole), key, shape)


def per_row(fn: Callable) -> Callable:
    """`fn` traced as the code of one row of the batch, which a caller vmaps over the rows with keys from `split`:
    its draws are plain draws (each row has its own key already), and it must hold no batch statistics."""

    @functools.wraps(fn)
    def one_row(*args, **kwargs):
        token = _PARTS.set(1)
        try:
            return fn(*args, **kwargs)
        finally:
            _PARTS.reset(token)

    return one_row


def masked_means(values: dict[str, Array], mask: Array) -> dict[str, Array]:
    """sum(x * mask) / max(sum(mask), 1) over the whole batch for each x of `values` (every part gets the same
    numbers; one mean over the parts for all of them): means over a batch-dependent count of items, which the
    mean of the parts' own masked means is not."""
    totals, count = mean(({name: (x * mask).sum() for name, x in values.items()}, mask.sum().astype(jnp.float32)))
    return {name: total / jnp.maximum(count, 1.0 / parts()) for name, total in totals.items()}


def gather(x: Array) -> Array:
    """The whole batch's rows of `x` (first axis over this part's rows), in the one-device order."""
    return x if parts() == 1 else jax.lax.all_gather(x, AXIS, axis=0, tiled=True)


def mean(tree: PyTree) -> PyTree:
    """The mean of `tree` over the parts (equal parts: the whole batch's mean of per-part means).

    The leaves travel as one vector per dtype, not as XLA's all-reduce of a tuple of leaves: on a CPU that made
    `debug` updates 1.05x as fast (docs/cpu_runs.md). The same numbers as a `pmean` per leaf.
    """
    if parts() == 1:
        return tree
    leaves, treedef = jax.tree.flatten(tree)
    by_dtype: dict = {}
    for index, leaf in enumerate(leaves):
        by_dtype.setdefault(jnp.result_type(leaf), []).append(index)
    out = list(leaves)
    for indices in by_dtype.values():
        means = jax.lax.pmean(jnp.concatenate([jnp.ravel(leaves[i]) for i in indices]), AXIS)
        start = 0
        for i in indices:
            size = math.prod(jnp.shape(leaves[i]))
            out[i] = means[start:start + size].reshape(jnp.shape(leaves[i]))
            start += size
    return jax.tree.unflatten(treedef, out)
