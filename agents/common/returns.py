"""Returns for the imagination actor-critic: lambda returns, the percentile return normaliser, slow targets."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from agents.common import shards

sg = jax.lax.stop_gradient


def lambda_return(
    reward: Float[Array, "N H+1"],
    cont: Float[Array, "N H+1"],
    bootstrap: Float[Array, "N H+1"],
    lam: float,
    last: Float[Array, "N H+1"] | None = None,
) -> Float[Array, "N H"]:
    """TD(lambda) returns R_t for t < H over a trajectory of H + 1 steps (upstream `lambda_return`):

        R_t = r_{t+1} + c_{t+1} ((1 - l_{t+1}) b_{t+1} + l_{t+1} R_{t+1}),   R_H = b_H,
        l_{t+1} = lam (1 - last_{t+1}).

    `reward[:, t]` is the reward received on entering step t, `cont[:, t]` its continue flag with the
    discount folded in ((1 - terminal) gamma) and `bootstrap[:, t]` the value estimate the return falls back
    on there (entries at t = 0 are unused). In imagination the bootstrap is the critic's value; over replayed
    sequences (repval) it is the imagination return from each state, and `last` marks episode ends, where the
    return restarts from the bootstrap.
    """
    if not reward.shape == cont.shape == bootstrap.shape:
        raise ValueError(
            f"lambda_return: shapes differ: reward {reward.shape}, cont {cont.shape}, bootstrap {bootstrap.shape}"
        )
    if last is None:
        last = jnp.zeros_like(reward)
    live = cont[:, 1:]
    mix = (1.0 - last[:, 1:]) * lam
    interm = reward[:, 1:] + (1.0 - mix) * live * bootstrap[:, 1:]

    def step(following, inputs):
        interm_t, live_t, mix_t = inputs
        current = interm_t + live_t * mix_t * following
        return current, current

    _, returns = jax.lax.scan(step, bootstrap[:, -1], (interm.T, live.T, mix.T), reverse=True)
    return returns.T


class PercentileNormalizer(eqx.Module):
    """EMA of the 5th and 95th return percentiles; scale = max(limit, high - low) (upstream `perc`, no debias).

    Advantages are divided by the scale: returns spread over less than `limit` are not scaled up, so sparse
    small rewards keep their size (the paper's max(1, S)).
    """

    low: Float[Array, ""]
    high: Float[Array, ""]
    rate: float = eqx.field(static=True)
    limit: float = eqx.field(static=True)
    percentile_low: float = eqx.field(static=True)
    percentile_high: float = eqx.field(static=True)

    def __init__(self, rate: float = 0.01, limit: float = 1.0, percentile_low: float = 5.0,
                 percentile_high: float = 95.0):  # fmt: skip
        self.low = jnp.zeros((), jnp.float32)
        self.high = jnp.zeros((), jnp.float32)
        self.rate = rate
        self.limit = limit
        self.percentile_low = percentile_low
        self.percentile_high = percentile_high

    def update(self, values: Float[Array, "..."]) -> PercentileNormalizer:
        """The normaliser after one EMA step towards the percentiles of `values` (no gradient), the whole
        batch's under batch shards (first axis over the batch)."""
        values = shards.gather(sg(values.astype(jnp.float32))).reshape(-1)
        low, high = jnp.percentile(values, jnp.array([self.percentile_low, self.percentile_high]))
        new_low = (1.0 - self.rate) * self.low + self.rate * low
        new_high = (1.0 - self.rate) * self.high + self.rate * high
        return eqx.tree_at(lambda n: (n.low, n.high), self, (new_low, new_high))

    def stats(self) -> tuple[Float[Array, ""], Float[Array, ""]]:
        """(offset, scale) = (low, max(limit, high - low)), stop-gradiented."""
        return sg(self.low), sg(jnp.maximum(self.limit, self.high - self.low))


def ema_update(slow: PyTree, online: PyTree, rate: float) -> PyTree:
    """slow <- (1 - rate) slow + rate online over the inexact arrays (the slow critic, rate 0.02)."""
    slow_arrays, static = eqx.partition(slow, eqx.is_inexact_array)
    online_arrays = eqx.filter(online, eqx.is_inexact_array)
    mixed = jax.tree.map(lambda s, o: (1.0 - rate) * s + rate * sg(o), slow_arrays, online_arrays)
    return eqx.combine(mixed, static)
