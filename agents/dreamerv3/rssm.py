"""The DreamerV3 (2024) RSSM: block-diagonal GRU core, categorical latents with unimix, KL with free nats.

Latent: `deter` (B, D) and `stoch` (B, S, K) one-hot. Features = [deter, flat stoch].

    deter_t  = BlockGRU(deter_{t-1}, stoch_{t-1}, a_{t-1})              (zeros at episode start)
    prior    = p(stoch_t | deter_t):          MLP(img_layers) -> S x K logits
    post     = q(stoch_t | deter_t, tokens_t): MLP(obs_layers) on [deter, tokens] -> S x K logits
    dyn      = max(free, KL(sg(post) || prior)),   rep = max(free, KL(post || sg(prior)))   (summed over S)

Both categoricals mix in 1% uniform; samples pass straight-through gradients.

Option `latent="gaussian"` (DreamerV1/2): `stoch` (B, S) continuous, prior and posterior output a mean and
std = softplus(raw) + min_std per dimension, reparameterised samples, the same dyn / rep KL split with free
nats (agents/common/latents.py: gaussian_kl_terms). Features = [deter, stoch].
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from agents.common.actions import ActionLayout
from agents.common.latents import (
    check_latent_kind,
    latent_decoder_inputs,
    latent_features,
    latent_kl_terms,
    latent_sample,
    latent_stats,
    reset_at_first,
)
from agents.common.nets import MLP, BlockGRU, Linear, batched
from agents.dreamerv3.dynamics import AbstractDynamics, Latent, WorldModelData


class RSSM(AbstractDynamics):
    core: BlockGRU
    prior_mlp: MLP
    prior_out: Linear
    post_mlp: MLP
    post_out: Linear
    deter: int = eqx.field(static=True)
    stoch: int = eqx.field(static=True)
    classes: int = eqx.field(static=True)
    unimix: float = eqx.field(static=True)
    free_nats: float = eqx.field(static=True)
    absolute: bool = eqx.field(static=True)
    feature_size: int = eqx.field(static=True)
    latent: str = eqx.field(static=True)
    min_std: float = eqx.field(static=True)

    def __init__(self, token_size: int, action_size: int, *, deter: int, hidden: int, stoch: int, classes: int,
                 blocks: int = 8, dyn_layers: int = 1, img_layers: int = 2, obs_layers: int = 1,
                 unimix: float = 0.01, free_nats: float = 1.0, absolute: bool = False, act: str = "silu",
                 latent: str = "categorical", min_std: float = 0.1, key: PRNGKeyArray):  # fmt: skip
        check_latent_kind(latent)
        keys = jax.random.split(key, 5)
        # Gaussian latents: `stoch` dimensions, each with a mean and a std output.
        stoch_size = stoch * classes if latent == "categorical" else stoch
        stats_size = stoch * classes if latent == "categorical" else 2 * stoch
        self.core = BlockGRU(deter, stoch_size, action_size, hidden, blocks, dyn_layers, act, key=keys[0])
        self.prior_mlp = MLP(deter, hidden, img_layers, act, key=keys[1])
        self.prior_out = Linear(self.prior_mlp.out_size, stats_size, key=keys[2])
        post_in = token_size if absolute else deter + token_size
        self.post_mlp = MLP(post_in, hidden, obs_layers, act, key=keys[3])
        self.post_out = Linear(self.post_mlp.out_size, stats_size, key=keys[4])
        self.deter, self.stoch, self.classes = deter, stoch, classes
        self.unimix, self.free_nats, self.absolute = unimix, free_nats, absolute
        self.latent, self.min_std = latent, min_std
        self.feature_size = deter + stoch_size

    # ----------------------------------------------------------------------------------- distributions

    @property
    def gaussian(self) -> bool:
        return self.latent == "gaussian"

    def _stats(self, raw: Float[Array, " O"]) -> Float[Array, "S K"] | Float[Array, "S 2"]:
        return latent_stats(raw, self.latent, self.stoch, self.classes, self.unimix, self.min_std)

    def _sample(self, key: PRNGKeyArray, stats: Array) -> Array:
        return latent_sample(key, stats, self.latent)

    def _prior_one(self, deter: Float[Array, " D"]) -> Array:
        return self._stats(self.prior_out(self.prior_mlp(deter)))

    def _post_one(self, deter: Float[Array, " D"], token: Float[Array, " E"]) -> Array:
        x = token if self.absolute else jnp.concatenate([deter, token])
        return self._stats(self.post_out(self.post_mlp(x)))

    # ------------------------------------------------------------------------------------------ contract

    def initial(self, batch_size: int) -> Latent:
        stoch_shape = (self.stoch,) if self.gaussian else (self.stoch, self.classes)
        return {
            "deter": jnp.zeros((batch_size, self.deter), jnp.float32),
            "stoch": jnp.zeros((batch_size, *stoch_shape), jnp.float32),
        }

    def observe(self, latent: Latent, tokens: Float[Array, "B T E"], prev_actions: Float[Array, "B T A"],
                is_first: Bool[Array, "B T"], *, key: PRNGKeyArray) -> tuple[Latent, Latent, Latent]:  # fmt: skip
        batch, steps = tokens.shape[:2]
        if prev_actions.shape[:2] != (batch, steps) or is_first.shape != (batch, steps):
            raise ValueError(
                f"RSSM.observe: tokens {tokens.shape}, prev_actions {prev_actions.shape} and is_first "
                f"{is_first.shape} must share (B, T)"
            )

        def step(carry, inputs):
            token, action, first, step_key = inputs
            carry, action = reset_at_first(carry, action, first)
            deter = jax.vmap(self.core)(carry["deter"], carry["stoch"].reshape(batch, -1), action)
            post = jax.vmap(self._post_one)(deter, token)
            stoch = self._sample(step_key, post)
            return {"deter": deter, "stoch": stoch}, (deter, stoch, post)

        time_major = lambda x: jnp.swapaxes(x, 0, 1)
        inputs = (time_major(tokens), time_major(prev_actions), time_major(is_first), jax.random.split(key, steps))
        last, (deters, stochs, posts) = jax.lax.scan(step, latent, inputs)
        deters, stochs, posts = time_major(deters), time_major(stochs), time_major(posts)
        # The prior does not feed the recurrence, so it runs once over all (B, T) steps after the scan.
        priors = batched(self._prior_one, deters)
        # `logits`: the distribution statistics (categorical log-probabilities, or Gaussian (mean, std) pairs).
        posteriors = {"deter": deters, "stoch": stochs, "logits": posts}
        return last, posteriors, {"logits": priors}

    def imagine_step(self, latent: Latent, action: Float[Array, "B A"], *, key: PRNGKeyArray) -> Latent:
        batch = action.shape[0]
        deter = jax.vmap(self.core)(latent["deter"], latent["stoch"].reshape(batch, -1), action)
        prior = jax.vmap(self._prior_one)(deter)
        return {"deter": deter, "stoch": self._sample(key, prior)}

    def features(self, latent: Latent) -> Float[Array, "... F"]:
        return latent_features(latent, self.latent)

    def decoder_inputs(self, latent: Latent) -> tuple[Float[Array, "... W"], Float[Array, "... N"]]:
        return latent_decoder_inputs(latent, self.latent)

    def losses(self, posteriors: Latent, priors: Latent, data: WorldModelData, *,
               key: PRNGKeyArray) -> tuple[dict[str, Float[Array, "B T"]], dict[str, Array]]:  # fmt: skip
        del data, key
        losses, metrics = latent_kl_terms(self.latent)(posteriors["logits"], priors["logits"], self.free_nats)
        return losses, {f"dyn/{k}": v for k, v in metrics.items()}


def make_rssm(config, obs_space, layout: ActionLayout, token_size: int, *, key: PRNGKeyArray) -> RSSM:
    """The `make_dynamics` of plain DreamerV3: an RSSM sized by `config.rssm` (categorical or Gaussian latents)."""
    del obs_space
    r = config.rssm
    return RSSM(
        token_size, layout.size, deter=r.deter, hidden=r.hidden, stoch=r.stoch, classes=r.classes,
        blocks=r.blocks, dyn_layers=r.dyn_layers, img_layers=r.img_layers, obs_layers=r.obs_layers,
        unimix=r.unimix, free_nats=r.free_nats, absolute=r.absolute, act=r.act, latent=r.latent,
        min_std=r.min_std, key=key,
    )  # fmt: skip
