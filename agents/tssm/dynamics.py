"""TSSM: a transformer state-space model as the latent dynamics of the DreamerV3 agent.

Reference: /work/shared/reference/transformer_wm.md (TSSM section; upstream mauicv/world-model-rl). Every
environment step contributes three tokens, each embedded by its own small MLP (Linear -> act -> Linear):
the categorical latent z_t, the action a_t and the reward r_t (symlog). The stream of a sequence is
upstream's order z_0, a_0, r_0, z_1, a_1, r_1, ...; we group it as chunks [a_{t-1}, r_{t-1}, z_t] so that
one chunk is one step of the `AbstractDynamics` contract (`observe` step t gets the action that led to t;
at episode starts the action and reward are zero). Heads, as upstream, by token:

* the a_{t-1} output predicts z_t: the prior (S x K categorical with unimix, straight-through samples; or,
  with `latent="gaussian"`, S normals with std = softplus(raw) + min_std and reparameterised samples, the
  continuous latents the seed project compares against the categoricals, as DreamerV3's RSSM option);
* the r_{t-1} output predicts symlog r_t (upstream's reward head on the r token; here it supplies the reward
  token in imagination, loss `tokrew`: unit-variance Gaussian NLL in symlog space, i.e. 0.5 * error^2);
* the z_t output is the deterministic state `deter` h_t. Features = [h_t, z_t] feed the agent's own reward,
  continue, actor and critic heads exactly as with the RSSM (upstream's done head reads the z token too).

The posterior q(z_t | o_t) reads the encoder tokens only (upstream encodes z from the image alone); the
dynamics loss is DreamerV3's KL split (dyn on the prior, rep on the posterior, free nats), so the only
difference to the RSSM agent is the sequence model. Training runs all 3T tokens at once (no scan);
imagination runs step by step on a fixed-size key/value window, carried in the latent as `keys`, `values`
and `valid`, which gives the same result as the full causal pass (tests/test_tssm.py).

Deliberate differences to upstream, documented: features include h_t (upstream's actor reads z only); the
first imagined action comes from the actor (upstream reuses the replayed action); imagination starts from
every posterior state with its full history window (upstream starts from the state alone); no dropout.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from agents.common import distributions as dists
from agents.common.latents import (
    check_latent_kind,
    latent_decoder_inputs,
    latent_features,
    latent_kl_terms,
    latent_sample,
    latent_stats,
)
from agents.common.nets import MLP, Linear, activation, batched
from agents.dreamerv3.dynamics import AbstractDynamics, Latent, WorldModelData
from agents.tssm.transformer import Transformer, visibility

sg = jax.lax.stop_gradient
CACHE_KEYS = ("keys", "values", "valid")


class TokenEmbed(eqx.Module):
    """Linear -> activation -> Linear: one token type's embedding (upstream's small MLP embedders)."""

    first: Linear
    second: Linear
    act: str = eqx.field(static=True)

    def __init__(self, in_size: int, embed: int, act: str, *, key: PRNGKeyArray):
        k1, k2 = jax.random.split(key)
        self.first = Linear(in_size, embed, key=k1)
        self.second = Linear(embed, embed, key=k2)
        self.act = act

    def __call__(self, x: Float[Array, " i"]) -> Float[Array, " e"]:
        return self.second(activation(self.act)(self.first(x)))


class TSSM(AbstractDynamics):
    post_mlp: MLP
    post_out: Linear
    embed_z: TokenEmbed
    embed_a: TokenEmbed
    embed_r: TokenEmbed
    transformer: Transformer
    prior_mlp: MLP
    prior_out: Linear
    reward_mlp: MLP
    reward_out: Linear
    stoch: int = eqx.field(static=True)
    classes: int = eqx.field(static=True)
    embed: int = eqx.field(static=True)
    unimix: float = eqx.field(static=True)
    free_nats: float = eqx.field(static=True)
    latent: str = eqx.field(static=True)
    min_std: float = eqx.field(static=True)
    feature_size: int = eqx.field(static=True)

    observes_reward: ClassVar[bool] = True  # the agent appends the raw reward to observe's tokens
    carry_only: ClassVar[tuple[str, ...]] = CACHE_KEYS  # the window: not stored in replay or trajectories

    def __init__(self, token_size: int, action_size: int, *, embed: int, layers: int, heads: int, context: int,
                 hidden: int, stoch: int, classes: int, img_layers: int = 2, obs_layers: int = 1,
                 reward_layers: int = 1, unimix: float = 0.01, free_nats: float = 1.0, act: str = "silu",
                 latent: str = "categorical", min_std: float = 0.1, key: PRNGKeyArray):  # fmt: skip
        if context < 1:
            raise ValueError(f"TSSM: context must be at least 1 step, got {context}")
        check_latent_kind(latent)
        stoch_size = stoch * classes if latent == "categorical" else stoch
        stats_size = stoch * classes if latent == "categorical" else 2 * stoch
        keys = jax.random.split(key, 10)
        self.post_mlp = MLP(token_size, hidden, obs_layers, act, key=keys[0])
        self.post_out = Linear(self.post_mlp.out_size, stats_size, key=keys[1])
        self.embed_z = TokenEmbed(stoch_size, embed, act, key=keys[2])
        self.embed_a = TokenEmbed(action_size, embed, act, key=keys[3])
        self.embed_r = TokenEmbed(1, embed, act, key=keys[4])
        # A token sees `context` steps of 3 tokens: itself and the 3 * context - 1 tokens before it.
        self.transformer = Transformer(embed, layers, heads, 3 * context, key=keys[5])
        self.prior_mlp = MLP(embed, hidden, img_layers, act, key=keys[6])
        self.prior_out = Linear(self.prior_mlp.out_size, stats_size, key=keys[7])
        self.reward_mlp = MLP(embed, hidden, reward_layers, act, key=keys[8])
        self.reward_out = Linear(self.reward_mlp.out_size, 1, key=keys[9])
        self.stoch, self.classes, self.embed = stoch, classes, embed
        self.unimix, self.free_nats = unimix, free_nats
        self.latent, self.min_std = latent, min_std
        self.feature_size = embed + stoch_size

    # ------------------------------------------------------------------------------------------ pieces

    @property
    def gaussian(self) -> bool:
        return self.latent == "gaussian"

    def _stats(self, raw: Float[Array, " O"]) -> Float[Array, "S K"] | Float[Array, "S 2"]:
        return latent_stats(raw, self.latent, self.stoch, self.classes, self.unimix, self.min_std)

    def _sample(self, key: PRNGKeyArray, stats: Array) -> Array:
        return latent_sample(key, stats, self.latent)

    def _post_one(self, token: Float[Array, " E"]) -> Array:
        return self._stats(self.post_out(self.post_mlp(token)))

    def _prior_one(self, out: Float[Array, " e"]) -> Array:
        return self._stats(self.prior_out(self.prior_mlp(out)))

    def _reward_one(self, out: Float[Array, " e"]) -> Float[Array, ""]:
        return self.reward_out(self.reward_mlp(out))[0]

    def _cache_shape(self) -> tuple[int, int, int, int]:
        t = self.transformer
        return (len(t.blocks), t.slots, t.heads, self.embed // t.heads)

    def _embed_action(self, action: Float[Array, " A"]) -> Float[Array, " e"]:
        """The action token. Actions are rescaled to magnitude at most 1 per dimension, a / max(1, |a|)
        without gradient through the divisor, as DreamerV3's RSSM does (agents/common/nets.py BlockGRU; reference
        dreamerv3.md): replay holds the environment's clipped actions in [-1, 1], while the bounded-normal
        policy samples beyond them in imagination, which the model would otherwise extrapolate to."""
        return self.embed_a(action / sg(jnp.maximum(1.0, jnp.abs(action))))

    def _chunk(self, prev_action, prev_reward, stoch) -> Float[Array, "3 e"]:
        """The tokens [a_{t-1}, r_{t-1}, z_t] of one step, embedded."""
        return jnp.stack(
            [self._embed_action(prev_action), self.embed_r(prev_reward[None]), self.embed_z(stoch.reshape(-1))]
        )

    def _run(self, latent: Latent, x: Float[Array, "n e"], segment) -> tuple[Array, Array, Array, Array, Array]:
        """Run new tokens of one sequence against its window; returns outputs and the concatenated
        [cache, new] keys, values, validity and segments (cache slots are segment 0)."""
        valid = latent["valid"] > 0.5
        cache_segment = jnp.zeros(valid.shape, segment.dtype)
        out, k, v = self.transformer(x, latent["keys"], latent["values"], visibility(valid, cache_segment, segment))
        keys = jnp.concatenate([latent["keys"], k], 1)
        values = jnp.concatenate([latent["values"], v], 1)
        all_valid = jnp.concatenate([valid, jnp.ones(segment.shape, bool)])
        all_segment = jnp.concatenate([cache_segment, segment])
        return out, keys, values, all_valid, all_segment

    def _window(self, keys, values, valid, segment, end: Array, current) -> Latent:
        """The cache after the token at index `end - 1` of the concatenated arrays: the C entries before
        `end`, emptied where invalid or from another episode segment."""
        slots = self.transformer.slots
        start = end - slots
        take = lambda x: jax.lax.dynamic_slice_in_dim(x, start, slots, axis=1)  # noqa: E731
        keep = jax.lax.dynamic_slice_in_dim(valid & (segment == current), start, slots)
        zero = lambda x: x * keep[None, :, None, None].astype(x.dtype)  # noqa: E731
        return {"keys": zero(take(keys)), "values": zero(take(values)), "valid": keep.astype(jnp.float32)}

    # ---------------------------------------------------------------------------------------- contract

    def initial(self, batch_size: int) -> Latent:
        shape = self._cache_shape()
        stoch_shape = (self.stoch,) if self.gaussian else (self.stoch, self.classes)
        return {
            "deter": jnp.zeros((batch_size, self.embed), jnp.float32),
            "stoch": jnp.zeros((batch_size, *stoch_shape), jnp.float32),
            "reward": jnp.zeros((batch_size,), jnp.float32),
            "keys": jnp.zeros((batch_size, *shape), jnp.float32),
            "values": jnp.zeros((batch_size, *shape), jnp.float32),
            "valid": jnp.zeros((batch_size, shape[1]), jnp.float32),
        }

    def observe(self, latent: Latent, tokens: Float[Array, "B T E+1"], prev_actions: Float[Array, "B T A"],
                is_first: Bool[Array, "B T"], *, key: PRNGKeyArray) -> tuple[Latent, Latent, Latent]:  # fmt: skip
        """All T steps in one causal pass. `tokens` carry the step's raw reward as their last column."""
        batch, steps = tokens.shape[:2]
        if prev_actions.shape[:2] != (batch, steps) or is_first.shape != (batch, steps):
            raise ValueError(
                f"TSSM.observe: tokens {tokens.shape}, prev_actions {prev_actions.shape} and is_first "
                f"{is_first.shape} must share (B, T)"
            )
        sensor_tokens, reward = tokens[..., :-1], dists.symlog(tokens[..., -1])
        post = batched(self._post_one, sensor_tokens)
        stoch = self._sample(key, post)
        keep = 1.0 - is_first.astype(jnp.float32)
        prev_reward = jnp.concatenate([latent["reward"][:, None], reward[:, :-1]], 1) * keep
        cache = {k: latent[k] for k in CACHE_KEYS}
        deter, prior, reward_pred, windows = self.sequence(cache, prev_actions * keep[..., None], prev_reward,
                                                           stoch, is_first)  # fmt: skip
        posteriors = {"deter": deter, "stoch": stoch, "reward": reward, **windows, "logits": post}
        last = {k: v[:, -1] for k, v in posteriors.items() if k != "logits"}
        return last, posteriors, {"logits": prior, "reward": reward_pred}

    def sequence(self, cache: Latent, prev_actions: Float[Array, "B T A"], prev_reward: Float[Array, "B T"],
                 stoch: Float[Array, "B T S ..."], is_first: Bool[Array, "B T"]) -> tuple[Array, Array, Array, dict]:  # fmt: skip
        """The full causal pass over T chunks [a_{t-1}, r_{t-1} (symlog), z_t] after the window `cache`.

        Returns deter (B, T, e), prior statistics of z_t (B, T, S, K or 2), predicted symlog r_t (B, T)
        and the window after every step (B, T, ...). A new episode segment starts at every `is_first`;
        earlier tokens (and the cache) are invisible to it.
        """
        steps = stoch.shape[1]
        slots = self.transformer.slots

        def one(lat, prev_a, prev_r, z, first):
            x = jax.vmap(self._chunk)(prev_a, prev_r, z).reshape(3 * steps, -1)
            step_segment = jnp.cumsum(first.astype(jnp.int32))  # a new segment at every episode start
            out, keys, values, valid, segment = self._run(lat, x, jnp.repeat(step_segment, 3))
            out = out.reshape(steps, 3, -1)
            ends = slots + 3 * jnp.arange(steps) + 3  # one past each step's z token in [cache, new]
            windows = jax.vmap(lambda end, cur: self._window(keys, values, valid, segment, end, cur))(
                ends, step_segment
            )
            prior = jax.vmap(self._prior_one)(out[:, 0])
            reward_pred = jax.vmap(self._reward_one)(out[:, 1])
            return out[:, 2], prior, reward_pred, windows

        return jax.vmap(one)(cache, prev_actions, prev_reward, stoch, is_first)

    def imagine_step(self, latent: Latent, action: Float[Array, "B A"], *, key: PRNGKeyArray) -> Latent:
        """Feed [a_t, r_t] (prior and reward of step t+1 from their outputs), sample z_{t+1}, feed it."""

        def feed(lat, x):
            n = x.shape[0]
            out, keys, values, valid, _ = self._run(lat, x, jnp.zeros((n,), jnp.int32))
            cache = {"keys": keys[:, n:], "values": values[:, n:], "valid": valid[n:].astype(jnp.float32)}
            return out, cache

        def first_half(lat, a):
            x = jnp.stack([self._embed_action(a), self.embed_r(lat["reward"][None])])
            out, cache = feed(lat, x)
            return self._prior_one(out[0]), self._reward_one(out[1]), cache

        def second_half(cache, z):
            out, cache = feed(cache, self.embed_z(z.reshape(-1))[None])
            return out[0], cache

        cache = {k: latent[k] for k in CACHE_KEYS}
        prior, reward, cache = jax.vmap(first_half)({**cache, "reward": latent["reward"]}, action)
        stoch = self._sample(key, prior)
        deter, cache = jax.vmap(second_half)(cache, stoch)
        return {"deter": deter, "stoch": stoch, "reward": reward, **cache}

    def features(self, latent: Latent) -> Float[Array, "... F"]:
        return latent_features(latent, self.latent)

    def decoder_inputs(self, latent: Latent) -> tuple[Float[Array, "... W"], Float[Array, "... N"]]:
        return latent_decoder_inputs(latent, self.latent)

    def losses(self, posteriors: Latent, priors: Latent, data: WorldModelData, *,
               key: PRNGKeyArray) -> tuple[dict[str, Float[Array, "B T"]], dict[str, Array]]:  # fmt: skip
        del data, key
        losses, metrics = latent_kl_terms(self.latent)(posteriors["logits"], priors["logits"], self.free_nats)
        # The reward token's prediction: unit-variance Gaussian NLL (up to a constant) in symlog space.
        losses["tokrew"] = 0.5 * jnp.square(priors["reward"] - sg(posteriors["reward"]))
        metrics["tokrew_pred"] = priors["reward"].mean()
        return losses, {f"dyn/{k}": v for k, v in metrics.items()}
