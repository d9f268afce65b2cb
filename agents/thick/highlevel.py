"""THICK's high-level world model: from a state (z, c), predict what happens when the context next changes.

Inputs are the coarse features x = sg([z, c]); a categorical high-level action A (an abstract "which
sub-goal") selects among possible next segments:

    prior      p(A | x)                                    MLP -> A logits
    posterior  q(A | x, c_tau, p(z_{tau-1}))               MLP -> A logits (knows where the segment ended)
    body       MLP([x, A])  ->  heads:
        state   logits of z_{tau-1} (the state before the change)     loss KL(target || prediction)
        action  a_{tau-1} (the action that caused the change)          loss -log p (categorical / normal)
        time    delta = tau - 1 - t' (twohot over symexp bins)        loss twohot cross-entropy
        reward  discounted reward on the way (twohot)                 loss twohot cross-entropy

Training samples A from the posterior (straight-through one-hot) and pays the balanced KL(q || p)
(0.8 towards the prior, 0.2 towards the posterior, as the TF2 code); imagination samples A from the prior.
Targets come from `segments.segment_targets`; every loss term is masked where no boundary follows.

Deliberate choices: the posterior reads the target state as probabilities (TF2: a sample); time and reward use
twohot heads (THIX: symexp twohot for the reward; TF2: a clamped normal for the time and MSE for the reward).
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from agents.common import distributions as dists
from agents.common import shards
from agents.common.actions import ActionLayout
from agents.common.behaviour import Actor, policy_log_prob, policy_mode, policy_sample
from agents.common.nets import MLP, Linear, MLPHead, batched
from agents.thick.segments import SegmentTargets

sg = jax.lax.stop_gradient


class HighLevelPrediction(NamedTuple):
    state_logits: Float[Array, "S K"]  # log-probabilities (unimixed) of z_{tau-1}
    action: dict  # distributions of a_{tau-1} per action key (agents.common.behaviour.Actor output)
    time_logits: Float[Array, " K"]
    reward_logits: Float[Array, " K"]


class HighLevelModel(eqx.Module):
    """The high-level network on one example (batch outside)."""

    prior: MLPHead
    posterior: MLPHead
    body: MLP
    state_out: Linear
    action_head: Actor
    time_out: Linear
    reward_out: Linear
    stoch: int = eqx.field(static=True)
    classes: int = eqx.field(static=True)
    hl_actions: int = eqx.field(static=True)
    unimix: float = eqx.field(static=True)

    def __init__(self, stoch: int, classes: int, context: int, layout: ActionLayout, *, hl_actions: int,
                 units: int, layers: int, bins: int, unimix: float = 0.01, act: str = "silu",
                 key: PRNGKeyArray):  # fmt: skip
        if hl_actions < 1:
            raise ValueError(f"the high-level model needs at least one high-level action, got {hl_actions}")
        keys = jax.random.split(key, 7)
        coarse = stoch * classes + context
        self.prior = MLPHead(coarse, hl_actions, units, layers, act=act, key=keys[0])
        self.posterior = MLPHead(
            coarse + context + stoch * classes, hl_actions, units, layers, act=act, key=keys[1]
        )
        self.body = MLP(coarse + hl_actions, units, layers, act, key=keys[2])
        self.state_out = Linear(self.body.out_size, stoch * classes, key=keys[3])
        self.action_head = Actor(
            self.body.out_size, layout, units, 1, act=act, outscale=1.0, unimix=unimix, key=keys[4]
        )
        self.time_out = Linear(self.body.out_size, bins, outscale=0.0, key=keys[5])
        self.reward_out = Linear(self.body.out_size, bins, outscale=0.0, key=keys[6])
        self.stoch, self.classes, self.hl_actions, self.unimix = stoch, classes, hl_actions, unimix

    def prior_logits(self, x: Float[Array, " G"]) -> Float[Array, " A"]:
        return dists.unimix_logits(self.prior(x), self.unimix)

    def posterior_logits(self, x: Float[Array, " G"], context_after: Float[Array, " C"],
                         state_before: Float[Array, "S K"]) -> Float[Array, " A"]:  # fmt: skip
        inputs = jnp.concatenate([x, context_after, jnp.exp(state_before).reshape(-1)])
        return dists.unimix_logits(self.posterior(inputs), self.unimix)

    def predict(self, x: Float[Array, " G"], hl_action: Float[Array, " A"]) -> HighLevelPrediction:
        hidden = self.body(jnp.concatenate([x, hl_action]))
        state = self.state_out(hidden).reshape(self.stoch, self.classes)
        return HighLevelPrediction(
            state_logits=dists.unimix_logits(state, self.unimix),
            action=self.action_head(hidden),
            time_logits=self.time_out(hidden),
            reward_logits=self.reward_out(hidden),
        )


def highlevel_losses(
    model: HighLevelModel,
    inputs: Float[Array, "B T G"],
    targets: SegmentTargets,
    layout: ActionLayout,
    bins: Float[Array, " K"],
    *,
    key: PRNGKeyArray,
    kl_balance: float = 0.8,
) -> tuple[dict[str, Float[Array, "B T"]], dict[str, Array]]:
    """Masked high-level loss terms (B, T): hl_state, hl_action, hl_time, hl_reward, hl_kl; and metrics.

    Inputs and targets are stop-gradiented: the high-level model learns from the C-RSSM, never into it.
    """
    inputs = sg(inputs)
    targets = jax.tree.map(sg, targets)
    mask = targets.mask
    post = batched(model.posterior_logits, inputs, targets.context, targets.state)
    prior = batched(model.prior_logits, inputs)
    hl_action = dists.sample_onehot(key, post)
    prediction = batched(model.predict, inputs, hl_action)
    state = dists.categorical_kl(targets.state, prediction.state_logits).sum(-1)
    action = -policy_log_prob(prediction.action, layout, targets.action)
    time = dists.twohot_loss(prediction.time_logits, targets.time, bins)
    reward = dists.twohot_loss(prediction.reward_logits, targets.reward, bins)
    kl_to_prior = dists.categorical_kl(sg(post), prior)
    kl_to_post = dists.categorical_kl(post, sg(prior))
    kl = kl_balance * kl_to_prior + (1.0 - kl_balance) * kl_to_post
    losses = {"hl_state": state, "hl_action": action, "hl_time": time, "hl_reward": reward, "hl_kl": kl}
    losses = {k: v * mask for k, v in losses.items()}
    # Means over the batch's segment targets, however many each part of a batch-shards update has.
    over_targets = {
        "hl/target_time": targets.time,
        "hl/pred_time": dists.twohot_mean(prediction.time_logits, bins),
        "hl/state_kl": state,
        "hl/action_kl": dists.categorical_kl(post, prior),
    }
    metrics = {
        "hl/target_fraction": mask.mean(),
        **shards.masked_means(over_targets, mask),
        "hl/prior_ent": dists.categorical_entropy(prior).mean(),
    }
    return losses, metrics


class HighLevelStep(NamedTuple):
    """One imagined high-level step from (z, c): where the segment ends and what it earns on the way."""

    state_before: Float[Array, "N S K"]  # sampled z_{tau-1}
    action_before: Float[Array, "N A"]  # sampled a_{tau-1} (policy space)
    time: Float[Array, " N"]  # predicted delta >= 0
    reward: Float[Array, " N"]  # predicted discounted reward until the change


def highlevel_step(
    model: HighLevelModel,
    inputs: Float[Array, "N G"],
    layout: ActionLayout,
    bins: Float[Array, " K"],
    *,
    key: PRNGKeyArray,
) -> HighLevelStep:
    """Sample A from the prior, then z_{tau-1}, a_{tau-1}; time and reward are the twohot means.

    The time is the mean, not a sample (TF2 samples its time head): THICK Dreamer discounts by gamma^E[delta],
    a deliberate lower-variance choice (see ThickDreamerConfig).
    """
    action_key, state_key, low_key = jax.random.split(key, 3)
    prior = jax.vmap(model.prior_logits)(inputs)
    hl_action = dists.Categorical(prior).sample(action_key)
    prediction = jax.vmap(model.predict)(inputs, hl_action)
    return HighLevelStep(
        state_before=dists.Categorical(prediction.state_logits).sample(state_key),
        action_before=policy_sample(prediction.action, layout, low_key),
        time=jnp.maximum(dists.twohot_mean(prediction.time_logits, bins), 0.0),
        reward=dists.twohot_mean(prediction.reward_logits, bins),
    )


def highlevel_modes(model: HighLevelModel, inputs: Float[Array, "N G"], layout: ActionLayout):
    """For every high-level action i: the most likely z_{tau-1} (N, A_hl, S, K one-hot) and a_{tau-1}."""
    eye = jnp.eye(model.hl_actions, dtype=jnp.float32)

    def per_action(hl_action):
        prediction = jax.vmap(model.predict, in_axes=(0, None))(inputs, hl_action)
        state = dists.Categorical(prediction.state_logits).mode()
        return state, policy_mode(prediction.action, layout)

    states, actions = jax.vmap(per_action)(eye)
    return jnp.swapaxes(states, 0, 1), jnp.swapaxes(actions, 0, 1)
