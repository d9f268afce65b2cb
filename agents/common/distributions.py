"""Output distributions of the DreamerV3 family as plain functions of logits (no distribution objects).

* symlog / symexp squashing,
* categorical latents and actions with a uniform mixture ("unimix") and straight-through samples,
* twohot regression over symexp-spaced bins (reward and value heads), exactly zero at initialisation,
* Bernoulli continue flags with soft targets,
* the bounded normal for continuous actions (tanh mean, std in [min, max]).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from agents.common import shards

sg = jax.lax.stop_gradient


def symlog(x: Float[Array, "*s"]) -> Float[Array, "*s"]:
    """sign(x) log(1 + |x|)."""
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def symexp(x: Float[Array, "*s"]) -> Float[Array, "*s"]:
    """sign(x) (exp(|x|) - 1), the inverse of symlog."""
    return jnp.sign(x) * jnp.expm1(jnp.abs(x))


# -------------------------------------------------------------------------------------------- categorical


def unimix_logits(logits: Float[Array, "*s K"], unimix: float) -> Float[Array, "*s K"]:
    """Log-probabilities of (1 - unimix) softmax(logits) + unimix / K (the 1% uniform mixture)."""
    if not 0.0 <= unimix < 1.0:
        raise ValueError(f"unimix must lie in [0, 1), got {unimix}")
    if unimix == 0.0:
        return jax.nn.log_softmax(logits, -1)
    probs = jax.nn.softmax(logits, -1)
    probs = (1.0 - unimix) * probs + unimix / logits.shape[-1]
    return jnp.log(probs)


def sample_onehot(key: PRNGKeyArray, log_probs: Float[Array, "*s K"]) -> Float[Array, "*s K"]:
    """One-hot sample with straight-through gradients: forward the sample, backward d/d probs."""
    index = categorical_sample(key, log_probs)
    onehot = jax.nn.one_hot(index, log_probs.shape[-1], dtype=log_probs.dtype)
    probs = jnp.exp(log_probs)
    return onehot + (probs - sg(probs))


def categorical_sample(key: PRNGKeyArray, log_probs: Float[Array, "*s K"]) -> Int[Array, "*s"]:
    """Class indices argmax(log_probs + Gumbel noise), as `jax.random.categorical(key, log_probs, -1)`; the
    noise is a batch-shards draw over the first axis (agents/common/shards.py)."""
    noise = shards.draw(jax.random.gumbel, key, log_probs.shape, log_probs.dtype)
    return jnp.argmax(log_probs + noise, -1)


def categorical_kl(log_p: Float[Array, "*s K"], log_q: Float[Array, "*s K"]) -> Float[Array, "*s"]:
    """KL(p || q) over the last axis for log-probabilities."""
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), -1)


def categorical_entropy(log_p: Float[Array, "*s K"]) -> Float[Array, "*s"]:
    return -jnp.sum(jnp.exp(log_p) * log_p, -1)


def categorical_log_prob(log_p: Float[Array, "*s K"], onehot: Float[Array, "*s K"]) -> Float[Array, "*s"]:
    return jnp.sum(log_p * onehot, -1)


# ------------------------------------------------------------------------------------------------- twohot


def symexp_bins(num_bins: int = 255, limit: float = 20.0) -> Float[Array, " K"]:
    """Bins at symexp(linspace(-limit, limit)), built from the negative half and mirrored so they are exactly
    symmetric (and the middle bin exactly 0 for an odd count)."""
    if num_bins < 2:
        raise ValueError(f"twohot needs at least 2 bins, got {num_bins}")
    if num_bins % 2 == 1:
        half = symexp(jnp.linspace(-limit, 0.0, (num_bins - 1) // 2 + 1, dtype=jnp.float32))
        return jnp.concatenate([half, -half[:-1][::-1]])
    half = symexp(jnp.linspace(-limit, 0.0, num_bins // 2, dtype=jnp.float32))
    return jnp.concatenate([half, -half[::-1]])


def twohot_encode(x: Float[Array, "*s"], bins: Float[Array, " K"]) -> Float[Array, "*s K"]:
    """Spread x over its two neighbouring bins, weights linear in the raw distance (clipped at the ends)."""
    num = bins.shape[0]
    below = jnp.sum((bins <= x[..., None]).astype(jnp.int32), -1) - 1
    above = num - jnp.sum((bins > x[..., None]).astype(jnp.int32), -1)
    below = jnp.clip(below, 0, num - 1)
    above = jnp.clip(above, 0, num - 1)
    equal = below == above
    to_below = jnp.where(equal, 1.0, jnp.abs(bins[below] - x))
    to_above = jnp.where(equal, 1.0, jnp.abs(bins[above] - x))
    total = to_below + to_above
    return (
        jax.nn.one_hot(below, num) * (to_above / total)[..., None]
        + jax.nn.one_hot(above, num) * (to_below / total)[..., None]
    )


def twohot_mean(logits: Float[Array, "*s K"], bins: Float[Array, " K"]) -> Float[Array, "*s"]:
    """Expected value sum_k p_k bins_k for bins symmetric around zero (as `symexp_bins` builds them).

    A plain sum of p_k b_k over bins reaching +-5e8 is not exactly zero for uniform probabilities: the
    order of accumulation leaves rounding error (upstream sums mirrored pairs for this reason; under XLA
    even that is not enough, as the compiler may drop the reversal and reduce each half separately).
    Writing each mirrored pair as (p_right - p_left) b_right makes every term exactly zero when the pair's
    probabilities are equal, so with the zero-initialised output layer the prediction is exactly 0.
    """
    probs = jax.nn.softmax(logits, -1)
    num = bins.shape[0]
    half = num // 2
    right = slice(num - half, num)
    left_mirrored = probs[..., :half][..., ::-1]
    return jnp.sum((probs[..., right] - left_mirrored) * bins[right], -1)


def twohot_loss(logits: Float[Array, "*s K"], target: Float[Array, "*s"], bins: Float[Array, " K"]) -> Float[Array, "*s"]:  # fmt: skip
    """Cross-entropy of the predicted bin distribution against the twohot encoding of `target`."""
    encoded = twohot_encode(sg(target.astype(jnp.float32)), bins)
    return -jnp.sum(encoded * jax.nn.log_softmax(logits, -1), -1)


# ---------------------------------------------------------------------------------------------- Bernoulli


def bernoulli_prob(logit: Float[Array, "*s"]) -> Float[Array, "*s"]:
    return jax.nn.sigmoid(logit)


def bernoulli_loss(logit: Float[Array, "*s"], target: Float[Array, "*s"]) -> Float[Array, "*s"]:
    """-[t log p + (1 - t) log(1 - p)], valid for soft targets such as the discounted continue flag."""
    target = sg(target.astype(jnp.float32))
    return -(target * jax.nn.log_sigmoid(logit) + (1.0 - target) * jax.nn.log_sigmoid(-logit))


# ---------------------------------------------------------------------------------------- bounded normal


def bounded_normal(mean_raw: Float[Array, "*s"], std_raw: Float[Array, "*s"], min_std: float, max_std: float) -> tuple[Float[Array, "*s"], Float[Array, "*s"]]:  # fmt: skip
    """(mean, std) = (tanh(mean_raw), (max - min) sigmoid(std_raw + 2) + min) as upstream's bounded_normal."""
    return jnp.tanh(mean_raw), (max_std - min_std) * jax.nn.sigmoid(std_raw + 2.0) + min_std


def normal_log_prob(x: Float[Array, "*s"], mean: Float[Array, "*s"], std: Float[Array, "*s"]) -> Float[Array, "*s"]:  # fmt: skip
    return -0.5 * jnp.square((x - mean) / std) - jnp.log(std) - 0.5 * math.log(2.0 * math.pi)


def normal_entropy(std: Float[Array, "*s"]) -> Float[Array, "*s"]:
    return 0.5 + 0.5 * math.log(2.0 * math.pi) + jnp.log(std)


def sample_normal(key: PRNGKeyArray, mean: Float[Array, "*s"], std: Float[Array, "*s"]) -> Float[Array, "*s"]:
    return mean + std * shards.draw(jax.random.normal, key, mean.shape, mean.dtype)


def onehot(index: Int[Array, "*s"], classes: int) -> Float[Array, "*s K"]:
    return jax.nn.one_hot(index, classes, dtype=jnp.float32)


# ---------------------------------------------------------------------------------- policy distributions


class Categorical(eqx.Module):
    """Categorical over the last axis from (unimixed) log-probabilities; actions are one-hot vectors."""

    log_probs: Float[Array, "*s K"]

    def sample(self, key: PRNGKeyArray) -> Float[Array, "*s K"]:
        index = categorical_sample(key, self.log_probs)
        return jax.nn.one_hot(index, self.log_probs.shape[-1], dtype=jnp.float32)

    def mode(self) -> Float[Array, "*s K"]:
        return jax.nn.one_hot(jnp.argmax(self.log_probs, -1), self.log_probs.shape[-1], dtype=jnp.float32)

    def log_prob(self, action: Float[Array, "*s K"]) -> Float[Array, "*s"]:
        return categorical_log_prob(self.log_probs, action)

    def entropy(self) -> Float[Array, "*s"]:
        return categorical_entropy(self.log_probs)


class Normal(eqx.Module):
    """Diagonal normal over the last axis; log-probabilities and entropies are summed over it."""

    mean: Float[Array, "*s D"]
    std: Float[Array, "*s D"]

    def sample(self, key: PRNGKeyArray) -> Float[Array, "*s D"]:
        return sample_normal(key, self.mean, self.std)

    def mode(self) -> Float[Array, "*s D"]:
        return self.mean

    def log_prob(self, action: Float[Array, "*s D"]) -> Float[Array, "*s"]:
        return jnp.sum(normal_log_prob(action, self.mean, self.std), -1)

    def entropy(self) -> Float[Array, "*s"]:
        return jnp.sum(normal_entropy(self.std), -1)
