"""The sparse update gate of VSG/SVSG and the two KL terms built on it.

Jain et al. 2022, "Learning Robust Dynamics through Variational Sparse Gating":

* Each latent dimension gets an update gate g ~ Bernoulli(p), p = sigmoid(u - 1). The sample is used in the
  forward pass and the gradient reaches p through the straight-through estimator g = sample + p - sg(p).
* The gate KL KL(Bern(p) || Bern(prior)) summed over dimensions pulls the open rate towards the gate prior
  (0.4 in the paper); it is clipped from below by free bits (0.1) after averaging over batch and time.
* SVSG's state KL only counts dimensions whose gate is open: sum_d g_d KL_d.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from agents.common import shards

# p = sigmoid(u + GATE_BIAS): the GRU update bias of DreamerV2/V3 and of the VSG code; gates start mostly
# closed (p ~ 0.27 at u = 0), so the state is carried by default.
GATE_BIAS = -1.0


def sample_gate(logits: Float[Array, "*shape"], *, key) -> Float[Array, "*shape"]:
    """Bernoulli sample with a straight-through gradient: forward value in {0, 1}, d gate / d p = 1.

    `logits` are the gate logits (u + GATE_BIAS). The zero `p - sg(p)` is added to the sample last so the
    forward value stays exactly 0 or 1 in floating point.
    """
    probs = jax.nn.sigmoid(logits)
    # uniform < p, as `jax.random.bernoulli(key, probs)`; a batch-shards draw over the first axis
    noise = shards.draw(jax.random.uniform, key, probs.shape, probs.dtype)
    sample = (noise < probs).astype(probs.dtype)
    return sample + (probs - jax.lax.stop_gradient(probs))


def bernoulli_kl(logits: Float[Array, "*shape"], prior: float) -> Float[Array, "*shape"]:
    """Elementwise KL(Bern(sigmoid(logits)) || Bern(prior)) in nats, stable for saturated logits."""
    if not 0.0 < prior < 1.0:
        raise ValueError(f"the gate prior must lie in (0, 1), got {prior}")
    probs = jax.nn.sigmoid(logits)
    log_p = jax.nn.log_sigmoid(logits)
    log_not_p = jax.nn.log_sigmoid(-logits)
    return probs * (log_p - jnp.log(prior)) + (1.0 - probs) * (log_not_p - jnp.log1p(-prior))


def gate_kl(
    logits: Float[Array, "B T D"], *, prior: float, free: float
) -> tuple[Float[Array, ""], Float[Array, "B T"]]:
    """The VSG sparsity term max(mean_{B,T} sum_d KL(Bern(p_d) || Bern(prior)), free).

    Returns (loss, per-step KL). The free bits apply to the batch mean as in the VSG code (not per step):
    below `free` nats the term has no gradient.
    """
    per_step = bernoulli_kl(logits, prior).sum(-1)
    # the whole batch's mean under batch shards (agents/common/shards.py), where the free bits clip it
    return jnp.maximum(shards.mean(per_step.mean()), free), per_step


def gaussian_kl(
    mean_a: Float[Array, "*shape"],
    std_a: Float[Array, "*shape"],
    mean_b: Float[Array, "*shape"],
    std_b: Float[Array, "*shape"],
) -> Float[Array, "*shape"]:
    """Elementwise KL(N(mean_a, std_a) || N(mean_b, std_b)) in nats."""
    return jnp.log(std_b / std_a) + (std_a**2 + (mean_a - mean_b) ** 2) / (2.0 * std_b**2) - 0.5


def masked_kl(kl: Float[Array, "*batch D"], gate: Float[Array, "*batch D"]) -> Float[Array, "*batch"]:
    """SVSG's state KL: only dimensions whose gate is open count, sum_d g_d KL_d.

    The gate keeps its straight-through gradient as in the VSG code, so the KL also pushes gates to close.
    """
    if kl.shape != gate.shape:
        raise ValueError(f"masked_kl: KL shape {kl.shape} does not match gate shape {gate.shape}")
    return (gate * kl).sum(-1)
