"""VSG and SVSG latent dynamics (Jain et al. 2022) as `AbstractDynamics` (agents/dreamerv3/dynamics.py).

VSG, the gated RSSM. Latent `deter` (B, D) and `stoch` (B, S, K) one-hot; features [deter, flat stoch]:

    x_t      = act(norm(Linear([z_{t-1}; a_{t-1}])))
    r, c, u  = Linear([x_t; h_{t-1}])                       (block-diagonal over h when blocks > 1)
    h_hat    = tanh(sigmoid(r) * c),   p = sigmoid(u - 1),   g ~ Bernoulli(p) straight-through
    h_t      = g * h_hat + (1 - g) * h_{t-1}
    prior    = p(z_t | h_t),  posterior = q(z_t | h_t, tokens_t)   (categoricals with unimix, as DreamerV3)
    losses   dyn / rep: DreamerV3's KL terms;  gate = max(mean_{B,T} sum_d KL(Bern(p_d) || Bern(prior)), free)

SVSG, no deterministic path. Latent `stoch` (B, S) Gaussian; features = stoch:

    x_t, r, c, u as above with z_{t-1} in place of h_{t-1};   cand = tanh(sigmoid(r) * c), g as above
    prior:      (mean, std) = Linear(act(norm(Linear(cand))));           z_hat   ~ N(mean, std)
    posterior:  (mean, std) = Linear(act(norm(Linear([cand; tokens])))); z_tilde ~ N(mean, std)
    z_t        = g * z + (1 - g) * z_{t-1}   with the SAME gate g for prior and posterior
    losses      dyn / rep: sum_d g_d KL_d (only open dimensions count), each clipped at free nats; gate as VSG

Deliberate choices where the paper (a DreamerV2 code base) and the DreamerV3 agent differ:

* The input layer uses the agent's Linear -> RMSNorm -> activation block instead of DreamerV2's ELU Dense,
  so the gated cell trains under the same optimizer and activation as the rest of the agent; the gate math
  itself (one Dense(3 * size) on [x; state], update bias -1, no norm on the parts) is the paper's.
  `act` is configurable (the published runs used "elu").
* The recurrent layer may be block-diagonal (`blocks`, DreamerV3's trick to afford large states); every
  block sees x and its own slice of the state. `blocks = 1` is exactly the paper's dense cell.
* dyn / rep follow DreamerV3 (two terms weighted by `loss_scales.dyn` / `.rep`, each clipped per step at
  free nats) instead of DreamerV2's balance 0.8 with the free nats on the batch mean. The gate KL keeps the
  paper's batch-mean free bits.
* Actions are rescaled by 1 / max(1, |a|) as in the DreamerV3 RSSM (a no-op for actions in [-1, 1]).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from agents.common import distributions as dists
from agents.common.latents import (
    categorical_decoder_inputs,
    categorical_features,
    categorical_kl_terms,
    reset_at_first,
)
from agents.common.nets import MLP, BlockLinear, Linear, NormedLinear, batched
from agents.dreamerv3.dynamics import AbstractDynamics, Latent, WorldModelData
from agents.vsg import gate as gate_lib

sg = jax.lax.stop_gradient


def _scale_action(action: Float[Array, "*b A"]) -> Float[Array, "*b A"]:
    return action / sg(jnp.maximum(1.0, jnp.abs(action)))


def _time_major(x: Array) -> Array:
    return jnp.swapaxes(x, 0, 1)


def _check_sequence(name: str, tokens, prev_actions, is_first) -> tuple[int, int]:
    batch, steps = tokens.shape[:2]
    if prev_actions.shape[:2] != (batch, steps) or is_first.shape != (batch, steps):
        raise ValueError(
            f"{name}.observe: tokens {tokens.shape}, prev_actions {prev_actions.shape} and is_first "
            f"{is_first.shape} must share (B, T)"
        )
    return batch, steps


def _gate_metrics(gate: Float[Array, "B T D"], gate_logits: Float[Array, "B T D"], gate_kl) -> dict:
    return {
        # fraction of state dimensions updated per step (the sample, not the probability)
        "gate/open_rate": sg(gate).mean(),
        "gate/open_prob": jax.nn.sigmoid(gate_logits).mean(),
        "gate/kl": gate_kl.mean(),
    }


def gated_update(state: Float[Array, "*b D"], candidate: Float[Array, "*b D"], gate: Float[Array, "*b D"]):
    """g * candidate + (1 - g) * state: closed dimensions carry the state unchanged."""
    return gate * candidate + (1.0 - gate) * state


class GatedCell(eqx.Module):
    """VSG's stochastic GRU cell on one example: (state, inputs) -> (candidate, gate logits).

    x = act(norm(Linear(inputs))); per block [state_block; x] -> block-linear -> (reset, candidate, update);
    candidate = tanh(sigmoid(reset) * candidate); gate logits = update - 1. Sampling the gate and mixing
    the state are left to the caller (the same gate serves SVSG's prior and posterior).
    """

    input_layer: NormedLinear
    parts: BlockLinear
    blocks: int = eqx.field(static=True)

    def __init__(self, state_size: int, input_size: int, hidden: int, blocks: int, act: str, *, key):
        if state_size % blocks:
            raise ValueError(f"GatedCell: state size {state_size} is not divisible by {blocks} blocks")
        keys = jax.random.split(key)
        self.input_layer = NormedLinear(input_size, hidden, act, key=keys[0])
        self.parts = BlockLinear(state_size + blocks * hidden, 3 * state_size, blocks, key=keys[1])
        self.blocks = blocks

    def __call__(self, state: Float[Array, " D"], inputs: Float[Array, " I"]):
        x = self.input_layer(inputs)
        parts = self.parts.with_shared(state, x).reshape(self.blocks, 3, -1)  # per block [state_block; x]
        reset, candidate, update = (parts[:, i].reshape(-1) for i in range(3))
        candidate = jnp.tanh(jax.nn.sigmoid(reset) * candidate)
        return candidate, update + gate_lib.GATE_BIAS


# ------------------------------------------------------------------------------------------------------ VSG


class GatedRSSM(AbstractDynamics):
    """VSG: the RSSM whose deterministic state is updated only where a sampled Bernoulli gate opens."""

    cell: GatedCell
    prior_mlp: MLP
    prior_out: Linear
    post_mlp: MLP
    post_out: Linear
    deter: int = eqx.field(static=True)
    stoch: int = eqx.field(static=True)
    classes: int = eqx.field(static=True)
    unimix: float = eqx.field(static=True)
    free_nats: float = eqx.field(static=True)
    gate_prior: float = eqx.field(static=True)
    gate_free: float = eqx.field(static=True)
    feature_size: int = eqx.field(static=True)

    def __init__(self, token_size: int, action_size: int, *, deter: int, hidden: int, stoch: int, classes: int,
                 blocks: int = 1, img_layers: int = 1, obs_layers: int = 1, unimix: float = 0.01,
                 free_nats: float = 1.0, gate_prior: float = 0.4, gate_free: float = 0.1, act: str = "silu",
                 key: PRNGKeyArray):  # fmt: skip
        if not 0.0 < gate_prior < 1.0:
            raise ValueError(f"GatedRSSM: gate_prior must lie in (0, 1), got {gate_prior}")
        keys = jax.random.split(key, 5)
        self.cell = GatedCell(deter, stoch * classes + action_size, hidden, blocks, act, key=keys[0])
        self.prior_mlp = MLP(deter, hidden, img_layers, act, key=keys[1])
        self.prior_out = Linear(self.prior_mlp.out_size, stoch * classes, key=keys[2])
        self.post_mlp = MLP(deter + token_size, hidden, obs_layers, act, key=keys[3])
        self.post_out = Linear(self.post_mlp.out_size, stoch * classes, key=keys[4])
        self.deter, self.stoch, self.classes = deter, stoch, classes
        self.unimix, self.free_nats = unimix, free_nats
        self.gate_prior, self.gate_free = gate_prior, gate_free
        self.feature_size = deter + stoch * classes

    # -------------------------------------------------------------------------------------- one example

    def _cell_one(self, deter, stoch, action):
        """h_{t-1}, z_{t-1} (S, K), a_{t-1} -> (candidate h_hat, gate logits)."""
        return self.cell(deter, jnp.concatenate([stoch.reshape(-1), _scale_action(action)]))

    def _recurrent(self, deter, stoch, action, key):
        """One gated step for a batch: (B, D), (B, S, K), (B, A) -> (h_t, gate, gate logits), each (B, D).

        The gates of the whole batch are drawn with one call (cheaper than one key per example).
        """
        candidate, gate_logits = jax.vmap(self._cell_one)(deter, stoch, action)
        gate = gate_lib.sample_gate(gate_logits, key=key)
        return gated_update(deter, candidate, gate), gate, gate_logits

    def _prior_one(self, deter: Float[Array, " D"]) -> Float[Array, "S K"]:
        logits = self.prior_out(self.prior_mlp(deter)).reshape(self.stoch, self.classes)
        return dists.unimix_logits(logits, self.unimix)

    def _post_one(self, deter: Float[Array, " D"], token: Float[Array, " E"]) -> Float[Array, "S K"]:
        logits = self.post_out(self.post_mlp(jnp.concatenate([deter, token]))).reshape(self.stoch, self.classes)
        return dists.unimix_logits(logits, self.unimix)

    # ------------------------------------------------------------------------------------------ contract

    def initial(self, batch_size: int) -> Latent:
        return {
            "deter": jnp.zeros((batch_size, self.deter), jnp.float32),
            "stoch": jnp.zeros((batch_size, self.stoch, self.classes), jnp.float32),
        }

    def observe(self, latent: Latent, tokens: Float[Array, "B T E"], prev_actions: Float[Array, "B T A"],
                is_first: Bool[Array, "B T"], *, key: PRNGKeyArray) -> tuple[Latent, Latent, Latent]:  # fmt: skip
        _, steps = _check_sequence("GatedRSSM", tokens, prev_actions, is_first)

        def step(carry, inputs):
            token, action, first, step_key = inputs
            gate_key, stoch_key = jax.random.split(step_key)
            carry, action = reset_at_first(carry, action, first)
            deter, gate, gate_logits = self._recurrent(carry["deter"], carry["stoch"], action, gate_key)
            post = jax.vmap(self._post_one)(deter, token)
            stoch = dists.sample_onehot(stoch_key, post)
            return {"deter": deter, "stoch": stoch}, (deter, stoch, post, gate, gate_logits)

        inputs = (_time_major(tokens), _time_major(prev_actions), _time_major(is_first), jax.random.split(key, steps))
        last, outputs = jax.lax.scan(step, latent, inputs)
        deters, stochs, posts, gates, gate_logits = map(_time_major, outputs)
        # The prior does not feed the recurrence: one batched pass over all (B, T) steps after the scan.
        priors = batched(self._prior_one, deters)
        posteriors = {"deter": deters, "stoch": stochs, "logits": posts, "gate": gates, "gate_logits": gate_logits}
        return last, posteriors, {"logits": priors}

    def imagine_step(self, latent: Latent, action: Float[Array, "B A"], *, key: PRNGKeyArray) -> Latent:
        gate_key, stoch_key = jax.random.split(key)
        deter, _, _ = self._recurrent(latent["deter"], latent["stoch"], action, gate_key)
        prior = jax.vmap(self._prior_one)(deter)
        return {"deter": deter, "stoch": dists.sample_onehot(stoch_key, prior)}

    def features(self, latent: Latent) -> Float[Array, "... F"]:
        return categorical_features(latent)

    def decoder_inputs(self, latent: Latent) -> tuple[Float[Array, "... W"], Float[Array, "... N"]]:
        return categorical_decoder_inputs(latent)

    def losses(self, posteriors: Latent, priors: Latent, data: WorldModelData, *,
               key: PRNGKeyArray) -> tuple[dict[str, Float[Array, "B T"]], dict[str, Array]]:  # fmt: skip
        del data, key
        losses, metrics = categorical_kl_terms(posteriors["logits"], priors["logits"], self.free_nats)
        gate_loss, gate_kl = gate_lib.gate_kl(posteriors["gate_logits"], prior=self.gate_prior, free=self.gate_free)
        metrics.update(_gate_metrics(posteriors["gate"], posteriors["gate_logits"], gate_kl))
        # a batch-level term spread over (B, T): its mean over the steps is the paper's value
        losses["gate"] = jnp.broadcast_to(gate_loss, losses["dyn"].shape)
        return losses, {f"dyn/{k}": v for k, v in metrics.items()}


# ----------------------------------------------------------------------------------------------------- SVSG


class StochasticGatedSSM(AbstractDynamics):
    """SVSG: a fully stochastic Gaussian state; one gate per dimension shared by prior and posterior."""

    cell: GatedCell
    prior_hidden: NormedLinear
    prior_out: Linear
    post_hidden: NormedLinear
    post_out: Linear
    stoch: int = eqx.field(static=True)
    min_std: float = eqx.field(static=True)
    free_nats: float = eqx.field(static=True)
    gate_prior: float = eqx.field(static=True)
    gate_free: float = eqx.field(static=True)
    feature_size: int = eqx.field(static=True)

    def __init__(self, token_size: int, action_size: int, *, stoch: int, hidden: int, blocks: int = 1,
                 min_std: float = 0.1, free_nats: float = 1.0, gate_prior: float = 0.4, gate_free: float = 0.1,
                 act: str = "silu", key: PRNGKeyArray):  # fmt: skip
        if not 0.0 < gate_prior < 1.0:
            raise ValueError(f"StochasticGatedSSM: gate_prior must lie in (0, 1), got {gate_prior}")
        keys = jax.random.split(key, 5)
        self.cell = GatedCell(stoch, stoch + action_size, hidden, blocks, act, key=keys[0])
        self.prior_hidden = NormedLinear(stoch, hidden, act, key=keys[1])
        self.prior_out = Linear(hidden, 2 * stoch, key=keys[2])
        self.post_hidden = NormedLinear(stoch + token_size, hidden, act, key=keys[3])
        self.post_out = Linear(hidden, 2 * stoch, key=keys[4])
        self.stoch, self.min_std, self.free_nats = stoch, min_std, free_nats
        self.gate_prior, self.gate_free = gate_prior, gate_free
        self.feature_size = stoch

    # -------------------------------------------------------------------------------------- one example

    def _stats(self, raw: Float[Array, " 2S"]) -> tuple[Float[Array, " S"], Float[Array, " S"]]:
        mean, std = jnp.split(raw, 2)
        # the VSG code's "sigmoid2" std: 2 sigmoid(s / 2) + min_std, in [0.1, 2.1]
        return mean, 2.0 * jax.nn.sigmoid(std / 2.0) + self.min_std

    def _cell_one(self, stoch, action):
        """z_{t-1}, a_{t-1} -> (candidate, gate logits)."""
        return self.cell(stoch, jnp.concatenate([stoch, _scale_action(action)]))

    def _gated_cell(self, stoch, action, key):
        """A batch (B, S), (B, A) -> (candidate, gate, gate logits), each (B, S); one gate draw per batch."""
        candidate, gate_logits = jax.vmap(self._cell_one)(stoch, action)
        return candidate, gate_lib.sample_gate(gate_logits, key=key), gate_logits

    def _prior_one(self, candidate: Float[Array, " S"]):
        return self._stats(self.prior_out(self.prior_hidden(candidate)))

    def _post_one(self, candidate: Float[Array, " S"], token: Float[Array, " E"]):
        return self._stats(self.post_out(self.post_hidden(jnp.concatenate([candidate, token]))))

    # ------------------------------------------------------------------------------------------ contract

    def initial(self, batch_size: int) -> Latent:
        return {"stoch": jnp.zeros((batch_size, self.stoch), jnp.float32)}

    def observe(self, latent: Latent, tokens: Float[Array, "B T E"], prev_actions: Float[Array, "B T A"],
                is_first: Bool[Array, "B T"], *, key: PRNGKeyArray) -> tuple[Latent, Latent, Latent]:  # fmt: skip
        _, steps = _check_sequence("StochasticGatedSSM", tokens, prev_actions, is_first)

        def step(carry, inputs):
            token, action, first, step_key = inputs
            gate_key, noise_key = jax.random.split(step_key)
            carry, action = reset_at_first(carry, action, first)
            previous = carry["stoch"]
            candidate, gate, gate_logits = self._gated_cell(previous, action, gate_key)
            mean, std = jax.vmap(self._post_one)(candidate, token)
            stoch = gated_update(previous, dists.sample_normal(noise_key, mean, std), gate)
            return {"stoch": stoch}, (stoch, candidate, mean, std, gate, gate_logits)

        inputs = (_time_major(tokens), _time_major(prev_actions), _time_major(is_first), jax.random.split(key, steps))
        last, outputs = jax.lax.scan(step, latent, inputs)
        stochs, candidates, means, stds, gates, gate_logits = map(_time_major, outputs)
        # The prior does not feed the recurrence: one batched pass after the scan.
        prior_mean, prior_std = batched(self._prior_one, candidates)
        posteriors = {
            "stoch": stochs, "mean": means, "std": stds, "gate": gates, "gate_logits": gate_logits,
        }  # fmt: skip
        return last, posteriors, {"mean": prior_mean, "std": prior_std}

    def imagine_step(self, latent: Latent, action: Float[Array, "B A"], *, key: PRNGKeyArray) -> Latent:
        gate_key, noise_key = jax.random.split(key)
        previous = latent["stoch"]
        candidate, gate, _ = self._gated_cell(previous, action, gate_key)
        mean, std = jax.vmap(self._prior_one)(candidate)
        return {"stoch": gated_update(previous, dists.sample_normal(noise_key, mean, std), gate)}

    def features(self, latent: Latent) -> Float[Array, "... F"]:
        return latent["stoch"]

    def decoder_inputs(self, latent: Latent) -> tuple[Float[Array, "... W"], Float[Array, "... N"]]:
        stoch = latent["stoch"]
        return stoch, stoch[..., :0]

    def losses(self, posteriors: Latent, priors: Latent, data: WorldModelData, *,
               key: PRNGKeyArray) -> tuple[dict[str, Float[Array, "B T"]], dict[str, Array]]:  # fmt: skip
        del data, key
        post = (posteriors["mean"], posteriors["std"])
        prior = (priors["mean"], priors["std"])
        gate = posteriors["gate"]
        dyn = gate_lib.masked_kl(gate_lib.gaussian_kl(*map(sg, post), *prior), gate)
        rep = gate_lib.masked_kl(gate_lib.gaussian_kl(*post, *map(sg, prior)), gate)
        gate_loss, gate_kl = gate_lib.gate_kl(posteriors["gate_logits"], prior=self.gate_prior, free=self.gate_free)
        metrics = {
            "dyn_kl": dyn.mean(),
            "rep_kl": rep.mean(),
            "prior_std": priors["std"].mean(),
            "post_std": posteriors["std"].mean(),
            **_gate_metrics(gate, posteriors["gate_logits"], gate_kl),
        }
        losses = {
            "dyn": jnp.maximum(dyn, self.free_nats),
            "rep": jnp.maximum(rep, self.free_nats),
            "gate": jnp.broadcast_to(gate_loss, dyn.shape),
        }
        return losses, {f"dyn/{k}": v for k, v in metrics.items()}
