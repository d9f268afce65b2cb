"""THICK's context RSSM (C-RSSM): DreamerV3's RSSM with a sparsely changing context c_t and a coarse prior.

Latent: `deter` h (B, D), `stoch` z (B, S, K) one-hot, `context` c (B, C). One step from (h, z, c) and the
action a that was taken:

    x       = [proj(z), proj(a)]                                  (cell input, from z and a only)
    c', g   = GateL0RD(x, c)                                       (sparse context update, binary gates g)
    h'      = BlockGRU(h, [z, c'], a)                              (the context enters the GRU input)
    prior   = p(z' | h', c'):            MLP on [h', c']
    post    = q(z' | h', c', tokens'):   MLP on [h', c', tokens']
    coarse  = p_coarse(z' | z, a, c'):   MLP on [x, c']            (NO h: what high-level rollouts use)

Fine features (heads, actor, critic) are [h, z, c]; coarse features [z, c] feed the coarse heads (decoder,
reward, continue), the coarse critic and the high-level model.

Deviations, deliberate: the context joins the block GRU through its stoch input projection (THIX gives it a
separate projection `dynin3`; one projection of [z, c] carries the same information with the block GRU of
agents/common unchanged). The cell input uses its own projections of z and a rather than the GRU's internal
ones (the block GRU does not expose them). The coarse prior is an MLP (`coarse_layers`) on [x, c'] as in the
TF2 code; THIX uses a single layer.
"""

from __future__ import annotations

from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from agents.common import distributions as dists
from agents.common import shards
from agents.common.latents import reset_at_first
from agents.common.nets import MLP, BlockGRU, Linear, MLPHead, NormedLinear
from agents.common.observations import ObservationDecoder
from agents.thick.gatel0rd import GateL0RDCell
from bench.spaces import Space

sg = jax.lax.stop_gradient
Latent = dict[str, Array]


class ContextRSSM(eqx.Module):
    """The C-RSSM networks and their recurrences; all methods work on batches (B, ...)."""

    core: BlockGRU
    stoch_in: NormedLinear
    action_in: NormedLinear
    cell: GateL0RDCell
    coarse_mlp: MLP
    coarse_out: Linear
    prior_mlp: MLP
    prior_out: Linear
    post_mlp: MLP
    post_out: Linear
    deter: int = eqx.field(static=True)
    stoch: int = eqx.field(static=True)
    classes: int = eqx.field(static=True)
    context: int = eqx.field(static=True)
    unimix: float = eqx.field(static=True)

    def __init__(self, token_size: int, action_size: int, *, deter: int, hidden: int, stoch: int, classes: int,
                 context: int, blocks: int = 8, dyn_layers: int = 1, img_layers: int = 2, obs_layers: int = 1,
                 coarse_layers: int = 2, gate_noise: float = 0.1, unimix: float = 0.01, act: str = "silu",
                 key: PRNGKeyArray):  # fmt: skip
        keys = jax.random.split(key, 10)
        flat = stoch * classes
        self.core = BlockGRU(deter, flat + context, action_size, hidden, blocks, dyn_layers, act, key=keys[0])
        self.stoch_in = NormedLinear(flat, hidden, act, key=keys[1])
        self.action_in = NormedLinear(action_size, hidden, act, key=keys[2])
        self.cell = GateL0RDCell(2 * hidden, context, noise=gate_noise, key=keys[3])
        self.coarse_mlp = MLP(2 * hidden + context, hidden, coarse_layers, act, key=keys[4])
        self.coarse_out = Linear(self.coarse_mlp.out_size, flat, key=keys[5])
        self.prior_mlp = MLP(deter + context, hidden, img_layers, act, key=keys[6])
        self.prior_out = Linear(self.prior_mlp.out_size, flat, key=keys[7])
        self.post_mlp = MLP(deter + context + token_size, hidden, obs_layers, act, key=keys[8])
        self.post_out = Linear(self.post_mlp.out_size, flat, key=keys[9])
        self.deter, self.stoch, self.classes, self.context = deter, stoch, classes, context
        self.unimix = unimix

    # --------------------------------------------------------------------------------- one-example nets

    def _logits(self, mlp: MLP, out: Linear, x: Array) -> Float[Array, "S K"]:
        logits = out(mlp(x)).reshape(self.stoch, self.classes)
        return dists.unimix_logits(logits, self.unimix)

    def _cell_input(self, stoch: Float[Array, "S K"], action: Float[Array, " A"]) -> Float[Array, " X"]:
        # Actions rescaled to magnitude <= 1 as in the block GRU (upstream a / max(1, |a|), no gradient).
        action = action / sg(jnp.maximum(1.0, jnp.abs(action)))
        return jnp.concatenate([self.stoch_in(stoch.reshape(-1)), self.action_in(action)])

    def _coarse_one(self, x: Float[Array, " X"], context: Float[Array, " C"]) -> Float[Array, "S K"]:
        return self._logits(self.coarse_mlp, self.coarse_out, jnp.concatenate([x, context]))

    def _prior_one(self, deter: Float[Array, " D"], context: Float[Array, " C"]) -> Float[Array, "S K"]:
        return self._logits(self.prior_mlp, self.prior_out, jnp.concatenate([deter, context]))

    def _post_one(self, deter, context, token) -> Float[Array, "S K"]:
        return self._logits(self.post_mlp, self.post_out, jnp.concatenate([deter, context, token]))

    def _transition_one(self, deter, stoch, context, action, noise):
        """(h, z, c, a) -> (h', c', binary gates, cell input x): everything before z' is drawn."""
        x = self._cell_input(stoch, action)
        context, gates = self.cell(x, context, noise)
        deter = self.core(deter, jnp.concatenate([stoch.reshape(-1), context]), action)
        return deter, context, gates, x

    # ---------------------------------------------------------------------------------------- batches

    def initial(self, batch_size: int) -> Latent:
        return {
            "deter": jnp.zeros((batch_size, self.deter), jnp.float32),
            "stoch": jnp.zeros((batch_size, self.stoch, self.classes), jnp.float32),
            "context": jnp.zeros((batch_size, self.context), jnp.float32),
        }

    def observe(self, latent: Latent, tokens: Float[Array, "B T E"], prev_actions: Float[Array, "B T A"],
                is_first: Bool[Array, "B T"], *, key: PRNGKeyArray) -> tuple[Latent, Latent, Latent]:  # fmt: skip
        """Filter a sequence. Posteriors: deter, stoch, context, logits, gates, coarse_logits (B, T, ...);
        priors: logits (B, T, S, K). The latent (h, z, c) and the action are reset to zero at episode starts.
        """
        batch, steps = tokens.shape[:2]
        if prev_actions.shape[:2] != (batch, steps) or is_first.shape != (batch, steps):
            raise ValueError(
                f"ContextRSSM.observe: tokens {tokens.shape}, prev_actions {prev_actions.shape} and is_first "
                f"{is_first.shape} must share (B, T)"
            )
        missing = {"deter", "stoch", "context"} - set(latent)
        if missing:
            raise ValueError(
                f"ContextRSSM.observe: the latent lacks {sorted(missing)} (has {sorted(latent)})"
            )

        def step(carry, inputs):
            token, action, first, noise, sample_key = inputs
            carry, action = reset_at_first(carry, action, first)
            deter, context, gates, x = jax.vmap(self._transition_one)(
                carry["deter"], carry["stoch"], carry["context"], action, noise
            )
            post = jax.vmap(self._post_one)(deter, context, token)
            stoch = dists.sample_onehot(sample_key, post)
            new = {"deter": deter, "stoch": stoch, "context": context}
            return new, (new, post, gates, x)

        time_major = lambda x: jnp.swapaxes(x, 0, 1)
        noise_key, sample_key = jax.random.split(key)
        # All gate noise of the sequence in one draw, outside the sequential loop (batch shards: axis 1).
        noise = shards.draw(jax.random.normal, noise_key, (steps, batch, self.context), jnp.float32, axis=1)
        inputs = (
            time_major(tokens), time_major(prev_actions), time_major(is_first), noise,
            jax.random.split(sample_key, steps),
        )  # fmt: skip
        last, (states, posts, gates, xs) = jax.lax.scan(
            step, {k: latent[k] for k in ("deter", "stoch", "context")}, inputs
        )
        states, posts, gates, xs = jax.tree.map(time_major, (states, posts, gates, xs))
        # Neither prior feeds the recurrence, so both run once over all (B, T) steps after the scan.
        over_time = lambda fn: jax.vmap(jax.vmap(fn))
        priors = over_time(self._prior_one)(states["deter"], states["context"])
        coarse = over_time(self._coarse_one)(xs, states["context"])
        posteriors = {**states, "logits": posts, "gates": gates, "coarse_logits": coarse}
        return last, posteriors, {"logits": priors}

    def imagine_step(self, latent: Latent, action: Float[Array, "B A"], *, key: PRNGKeyArray) -> Latent:
        batch = action.shape[0]
        noise_key, sample_key = jax.random.split(key)
        noise = shards.draw(jax.random.normal, noise_key, (batch, self.context), jnp.float32)
        deter, context, _, _ = jax.vmap(self._transition_one)(
            latent["deter"], latent["stoch"], latent["context"], action, noise
        )
        prior = jax.vmap(self._prior_one)(deter, context)
        return {"deter": deter, "stoch": dists.sample_onehot(sample_key, prior), "context": context}

    def coarse_step(
        self, stoch: Float[Array, "N S K"], context: Float[Array, "N C"], action: Float[Array, "N A"], *, key
    ) -> tuple[Float[Array, "N S K"], Float[Array, "N C"], Float[Array, "N S K"]]:
        """One coarse prior step WITHOUT the deterministic state: (z, c, a) -> (z' sample, c', logits)."""
        batch = action.shape[0]
        noise_key, sample_key = jax.random.split(key)
        noise = shards.draw(jax.random.normal, noise_key, (batch, self.context), jnp.float32)

        def one(z, c, a, n):
            x = self._cell_input(z, a)
            c, _ = self.cell(x, c, n)
            return c, self._coarse_one(x, c)

        context, logits = jax.vmap(one)(stoch, context, action, noise)
        return dists.sample_onehot(sample_key, logits), context, logits

    def flat_stoch(self, stoch: Float[Array, "... S K"]) -> Float[Array, "... SK"]:
        return stoch.reshape(*stoch.shape[:-2], self.stoch * self.classes)

    def features(self, latent: Mapping[str, Array]) -> Float[Array, "... F"]:
        """Fine features [h, z, c]."""
        return jnp.concatenate([latent["deter"], self.flat_stoch(latent["stoch"]), latent["context"]], -1)

    def coarse_features(self, stoch: Float[Array, "... S K"], context: Float[Array, "... C"]) -> Array:
        """Coarse features [z, c]."""
        return jnp.concatenate([self.flat_stoch(stoch), context], -1)

    @property
    def feature_size(self) -> int:
        return self.deter + self.stoch * self.classes + self.context

    @property
    def coarse_size(self) -> int:
        return self.stoch * self.classes + self.context


def kl_terms(
    post: Float[Array, "B T S K"], prior: Float[Array, "B T S K"], free_nats: float
) -> tuple[Array, Array]:
    """DreamerV3's (dyn, rep) = (KL(sg(post) || prior), KL(post || sg(prior))), summed over S, clipped
    below at `free_nats`."""
    dyn = dists.categorical_kl(sg(post), prior).sum(-1)
    rep = dists.categorical_kl(post, sg(prior)).sum(-1)
    return jnp.maximum(dyn, free_nats), jnp.maximum(rep, free_nats)


class CoarseHeads(eqx.Module):
    """Heads on the coarse features [z, c]: observation decoder, twohot reward, continue (discount folded in).

    The decoder is DreamerV3's observation decoder with [z, c] as its only input: the wide (block-linear)
    image path reads [z, c] (zero-padded to a multiple of the decoder blocks) since there is no h, and the
    narrow path is empty. The decoder takes any leading batch shape (its convolutions see the whole batch); the
    reward and continue heads take one example (batch outside).
    """

    decoder: ObservationDecoder
    reward: MLPHead
    cont: MLPHead
    wide_size: int = eqx.field(static=True)

    def __init__(self, obs_space: Mapping[str, Space], coarse_size: int, *, decoder: Mapping, units: int,
                 layers: int, bins: int, act: str = "silu", key: PRNGKeyArray):  # fmt: skip
        keys = jax.random.split(key, 3)
        self.wide_size = -(-coarse_size // decoder["blocks"]) * decoder["blocks"]
        self.decoder = ObservationDecoder(obs_space, coarse_size, self.wide_size, 0, **decoder, key=keys[0])
        self.reward = MLPHead(coarse_size, bins, units, layers, act=act, outscale=0.0, key=keys[1])
        self.cont = MLPHead(coarse_size, 1, units, layers, act=act, key=keys[2])

    def _decoder_inputs(self, features: Float[Array, "*b G"]) -> tuple[Array, Array, Array]:
        padding = [(0, 0)] * (features.ndim - 1) + [(0, self.wide_size - features.shape[-1])]
        wide = jnp.pad(features, padding)
        return features, wide, jnp.zeros((*features.shape[:-1], 0), features.dtype)

    def decode(self, features: Float[Array, "*b G"]) -> dict[str, Array]:
        return self.decoder(*self._decoder_inputs(features))

    def reconstruction_loss(
        self, features: Float[Array, "*b G"], obs: Mapping[str, Array]
    ) -> Float[Array, "*b"]:
        return sum(self.decoder.loss(*self._decoder_inputs(features), obs).values())

    def cont_logit(self, features: Float[Array, " G"]) -> Float[Array, ""]:
        return self.cont(features)[0]
