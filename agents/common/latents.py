"""Helpers shared by the categorical-latent dynamics (DreamerV3's RSSM, VSG's gated RSSM, THICK's C-RSSM).

A latent is the recurrent state as a dict of arrays with a leading batch shape (RSSM: `deter` (B, D) and
one-hot `stoch` (B, S, K)). The contract these dynamics implement is agents/dreamerv3/dynamics.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from agents.common import distributions as dists

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
