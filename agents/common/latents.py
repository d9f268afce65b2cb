"""Helpers shared by the latent dynamics (DreamerV3's RSSM, VSG's gated RSSM, THICK's C-RSSM, TSSM): categorical
latents, and the Gaussian option of the RSSM and TSSM (`rssm.latent`).

A latent is the recurrent state as a dict of arrays with a leading batch shape (RSSM: `deter` (B, D) and
one-hot `stoch` (B, S, K)). The contract these dynamics implement is agents/dreamerv3/dynamics.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from agents.common import distributions as dists
from agents.common import shards

Latent = dict[str, Array]


def reset_at_first(latent: Latent, action: Float[Array, "B A"], first: Bool[Array, " B"]) -> tuple[Latent, Array]:
    """Zero every latent array and the previous action of the sequences that start a new episode."""
    keep = (~first).astype(jnp.float32)

    def mask(x):
        return x * keep.reshape(-1, *([1] * (x.ndim - 1)))

    return {k: mask(v) for k, v in latent.items()}, mask(action)


def categorical_features(latent: Latent) -> Float[Array, "... F"]:
    """`deter` (..., D) and the flattened one-hot `stoch` (..., S, K) side by side: (..., D + S*K)."""
    return jnp.concatenate(categorical_decoder_inputs(latent), -1)


def categorical_decoder_inputs(latent: Latent) -> tuple[Float[Array, "... D"], Float[Array, "... N"]]:
    """(wide, narrow) decoder inputs of a `deter` + categorical `stoch` latent: `deter` and flat `stoch`."""
    stoch = latent["stoch"]
    return latent["deter"], stoch.reshape(*stoch.shape[:-2], stoch.shape[-2] * stoch.shape[-1])


def categorical_kl_terms(
    post: Float[Array, "B T S K"], prior: Float[Array, "B T S K"], free_nats: float
) -> tuple[dict[str, Float[Array, "B T"]], dict[str, Array]]:
    """DreamerV3's dynamics and representation losses (KL with stop-gradients, free nats) and their metrics."""
    sg = jax.lax.stop_gradient
    dyn = dists.categorical_kl(sg(post), prior).sum(-1)
    rep = dists.categorical_kl(post, sg(prior)).sum(-1)
    metrics = {
        "dyn_kl": dyn.mean(),
        "rep_kl": rep.mean(),
        "prior_ent": dists.categorical_entropy(prior).sum(-1).mean(),
        "post_ent": dists.categorical_entropy(post).sum(-1).mean(),
    }
    return {"dyn": jnp.maximum(dyn, free_nats), "rep": jnp.maximum(rep, free_nats)}, metrics


# --------------------------------------------------------------------------------------- Gaussian latents


def gaussian_stats(raw: Float[Array, "... S 2"], min_std: float) -> Float[Array, "... S 2"]:
    """DreamerV1/2 continuous latents: raw (mean, pre-std) -> (mean, softplus(pre-std) + min_std)."""
    return jnp.stack([raw[..., 0], jax.nn.softplus(raw[..., 1]) + min_std], -1)


def gaussian_sample(key, stats: Float[Array, "... S 2"]) -> Float[Array, "... S"]:
    """Reparameterised sample mean + std * eps (gradients reach mean and std)."""
    mean, std = stats[..., 0], stats[..., 1]
    return mean + std * shards.draw(jax.random.normal, key, mean.shape, mean.dtype)


def gaussian_kl(p: Float[Array, "... S 2"], q: Float[Array, "... S 2"]) -> Float[Array, "... S"]:
    """KL(p || q) of diagonal normals per dimension: log(s_q / s_p) + (s_p^2 + (m_p - m_q)^2) / (2 s_q^2) - 1/2."""
    mp, sp, mq, sq = p[..., 0], p[..., 1], q[..., 0], q[..., 1]
    return jnp.log(sq / sp) + (jnp.square(sp) + jnp.square(mp - mq)) / (2.0 * jnp.square(sq)) - 0.5


def gaussian_kl_terms(
    post: Float[Array, "B T S 2"], prior: Float[Array, "B T S 2"], free_nats: float
) -> tuple[dict[str, Float[Array, "B T"]], dict[str, Array]]:
    """The dyn / rep split of `categorical_kl_terms` for Gaussian latents, each summed over the S dimensions
    and clipped below at `free_nats`. With scales dyn = rep = 1 the gradient is DreamerV1's single KL with
    free nats (the two halves add up to the KL's gradient); dyn 0.8 / rep 0.2 is DreamerV2's KL balancing."""
    sg = jax.lax.stop_gradient
    dyn = gaussian_kl(sg(post), prior).sum(-1)
    rep = gaussian_kl(post, sg(prior)).sum(-1)
    metrics = {
        "dyn_kl": dyn.mean(),
        "rep_kl": rep.mean(),
        "prior_std": prior[..., 1].mean(),
        "post_std": post[..., 1].mean(),
    }
    return {"dyn": jnp.maximum(dyn, free_nats), "rep": jnp.maximum(rep, free_nats)}, metrics


# ------------------------------------------------------------------- either kind, chosen by `rssm.latent`


def check_latent_kind(latent: str) -> None:
    if latent not in ("categorical", "gaussian"):
        raise ValueError(f"rssm.latent must be 'categorical' or 'gaussian', got {latent!r}")


def latent_stats(raw: Float[Array, " O"], latent: str, stoch: int, classes: int, unimix: float,
                 min_std: float) -> Array:  # fmt: skip
    """Categorical log-probabilities (S, K) with unimix, or Gaussian (mean, std) pairs (S, 2), from raw outputs."""
    if latent == "gaussian":
        return gaussian_stats(raw.reshape(stoch, 2), min_std)
    return dists.unimix_logits(raw.reshape(stoch, classes), unimix)


def latent_sample(key, stats: Array, latent: str) -> Array:
    """Reparameterised Gaussian sample, or straight-through one-hot sample."""
    return gaussian_sample(key, stats) if latent == "gaussian" else dists.sample_onehot(key, stats)


def latent_features(state: Latent, latent: str) -> Float[Array, "... F"]:
    return jnp.concatenate(latent_decoder_inputs(state, latent), -1)


def latent_decoder_inputs(state: Latent, latent: str) -> tuple[Array, Array]:
    if latent == "gaussian":
        return state["deter"], state["stoch"]
    return categorical_decoder_inputs(state)


def latent_kl_terms(latent: str):
    """`gaussian_kl_terms` or `categorical_kl_terms`."""
    return gaussian_kl_terms if latent == "gaussian" else categorical_kl_terms
