"""THICK Dreamer (Gumbsch et al., ICLR 2024) on our DreamerV3: the C-RSSM, the high-level model, and
long-horizon values mixed into the critic targets.

THICK is the DreamerV3 agent (encoder, fine heads, actor, critic, optimizer, one jitted update) with two
pieces plugged in: `ThickWorldModel` as its latent dynamics and `ThickBehaviour` as its behaviour extension.
The algorithm, top to bottom:

1. Filtering (`ThickWorldModel.observe`): the C-RSSM (crssm.py) gives posteriors h, z, c, binary context
   gates, the fine prior and the coarse prior (no h) for every replayed step.
2. World-model terms (`ThickWorldModel.losses`), besides DreamerV3's rec/rew/con on the fine features [h, z, c]:
       dyn, rep                 KL(post, prior) as DreamerV3 (free nats)
       coarse_dyn, coarse_rep   KL(post, coarse prior)  (free nats)
       sparse                   THIX's hinge L0 loss on the binary gates, scaled by loss_scales.sparse
       coarse_rec/rew/con       coarse heads on [z, c]
       hl_*                     the high-level model on segment targets (highlevel.py, segments.py)
   and the context change rate `context/change_rate` (fraction of steps where any gate opened).
3. Behaviour (`ThickBehaviour.critic_targets`, THICK Dreamer): DreamerV3 imagines 15 steps with the actor.
   From every imagined state one high-level step: A ~ p(A | z, c), predict z_{tau-1}, a_{tau-1}, delta and the
   reward on the way, then one coarse C-RSSM step gives (z_tau, c_tau). The long-horizon return is
       G = r_way + gamma^delta (r_coarse(s) + cont_coarse(s) V_coarse_slow(s)),  s = (z_tau, c_tau)
   and the critic regresses  psi * lambda_return + (1 - psi) * G  (psi = 0.9). A coarse critic on [z, c]
   regresses the same mixed target; its slow EMA copy (the agent's slow copy of the extension) provides
   V_coarse_slow. The actor keeps the plain lambda return of the fine critic.

The discount inside a segment is the fixed gamma = 1 - 1/discount_horizon: segments end at terminals, so the
steps on the way cannot terminate (TF2 raised the predicted continue at tau to the power delta + 1, which
double-counts the last step under DreamerV3's return convention).

Batch shards (`run.batch_shards`, as DreamerV3's): the C-RSSM's gate noise is a `shards.draw` (the filtering's
over axis 1, time-major), the latents and high-level samples draw through `dists`, and the high-level metrics
average over the whole batch's segment targets (`shards.masked_means`); tests/test_batch_shards.py compares the
update with the one-device one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from agents.common import distributions as dists
from agents.common.actions import ActionLayout
from agents.common.behaviour import make_critic
from agents.common.nets import MLPHead, batched
from agents.common.observations import split_keys
from agents.dreamerv3 import DreamerV3, Networks, make_agent
from agents.dreamerv3.behaviour import AbstractBehaviourExtension
from agents.dreamerv3.dynamics import AbstractDynamics, Latent, WorldModelData
from agents.thick.config import ThickConfig, check_config
from agents.thick.crssm import CoarseHeads, ContextRSSM, kl_terms
from agents.thick.gatel0rd import context_changed, sparsity_loss
from agents.thick.highlevel import HighLevelModel, highlevel_losses, highlevel_modes, highlevel_step
from agents.thick.segments import segment_boundaries, segment_targets
from bench.spaces import Space

sg = jax.lax.stop_gradient


class ThickWorldModel(AbstractDynamics):
    """The dynamics THICK plugs into DreamerV3: C-RSSM, coarse heads and the high-level model."""

    crssm: ContextRSSM
    coarse: CoarseHeads
    highlevel: HighLevelModel
    layout: ActionLayout = eqx.field(static=True)
    free_nats: float = eqx.field(static=True)
    sparse_free: float = eqx.field(static=True)
    discount: float = eqx.field(static=True)
    reward_bins: int = eqx.field(static=True)
    hl_bins: int = eqx.field(static=True)
    kl_balance: float = eqx.field(static=True)
    feature_size: int = eqx.field(static=True)

    def __init__(self, config: ThickConfig, obs_space: Mapping[str, Space], layout: ActionLayout,
                 token_size: int, *, key: PRNGKeyArray):  # fmt: skip
        r, c, h = config.rssm, config.context, config.highlevel
        keys = jax.random.split(key, 3)
        self.crssm = ContextRSSM(
            token_size, layout.size, deter=r.deter, hidden=r.hidden, stoch=r.stoch, classes=r.classes,
            context=c.size, blocks=r.blocks, dyn_layers=r.dyn_layers, img_layers=r.img_layers,
            obs_layers=r.obs_layers, coarse_layers=c.coarse_layers, gate_noise=c.gate_noise, unimix=r.unimix,
            act=r.act, key=keys[0],
        )  # fmt: skip
        self.coarse = CoarseHeads(
            obs_space, self.crssm.coarse_size, decoder=dataclasses.asdict(config.decoder),
            units=config.reward_head.units, layers=config.reward_head.layers, bins=config.reward_head.bins,
            act=config.reward_head.act, key=keys[1],
        )  # fmt: skip
        self.highlevel = HighLevelModel(
            r.stoch, r.classes, c.size, layout, hl_actions=h.actions, units=h.units, layers=h.layers,
            bins=h.bins, unimix=r.unimix, act=r.act, key=keys[2],
        )  # fmt: skip
        self.layout = layout
        self.free_nats = r.free_nats
        self.sparse_free = c.sparse_free
        self.discount = config.imagination.discount
        self.reward_bins, self.hl_bins = config.reward_head.bins, h.bins
        self.kl_balance = h.kl_balance
        self.feature_size = self.crssm.feature_size

    # ----------------------------------------------------------------------------- latent dynamics

    def initial(self, batch_size: int) -> Latent:
        return self.crssm.initial(batch_size)

    def observe(self, latent: Latent, tokens: Float[Array, "B T E"], prev_actions: Float[Array, "B T A"],
                is_first: Bool[Array, "B T"], *, key: PRNGKeyArray) -> tuple[Latent, Latent, Latent]:  # fmt: skip
        return self.crssm.observe(latent, tokens, prev_actions, is_first, key=key)

    def imagine_step(self, latent: Latent, action: Float[Array, "B A"], *, key: PRNGKeyArray) -> Latent:
        return self.crssm.imagine_step(latent, action, key=key)

    def features(self, latent: Latent) -> Float[Array, "... F"]:
        return self.crssm.features(latent)

    def decoder_inputs(self, latent: Latent) -> tuple[Float[Array, "... W"], Float[Array, "... N"]]:
        # The fine decoder reads [h, z, c]: h through the block-linear path, [z, c] through the narrow one.
        narrow = jnp.concatenate([self.crssm.flat_stoch(latent["stoch"]), latent["context"]], -1)
        return latent["deter"], narrow

    def coarse_features(self, latent: Latent) -> Float[Array, "... G"]:
        return self.crssm.coarse_features(latent["stoch"], latent["context"])

    # ------------------------------------------------------------------------------ world-model terms

    def losses(self, posteriors: Latent, priors: Latent, data: WorldModelData, *,
               key: PRNGKeyArray) -> tuple[dict[str, Float[Array, "B T"]], dict[str, Array]]:  # fmt: skip
        batch, steps = data.reward.shape
        post, gates = posteriors["logits"], posteriors["gates"]
        dyn, rep = kl_terms(post, priors["logits"], self.free_nats)
        coarse_dyn, coarse_rep = kl_terms(post, posteriors["coarse_logits"], self.free_nats)
        sparse = jnp.broadcast_to(
            sparsity_loss(gates, free_changes=self.sparse_free)[:, None], (batch, steps)
        )

        coarse_features = self.coarse_features(posteriors)
        coarse_rec = self.coarse.reconstruction_loss(coarse_features, data.obs)
        reward_logits = batched(self.coarse.reward, coarse_features)
        reward_bins = dists.symexp_bins(self.reward_bins)
        coarse_rew = dists.twohot_loss(reward_logits, data.reward, reward_bins)
        cont_logit = batched(self.coarse.cont_logit, coarse_features)
        coarse_con = dists.bernoulli_loss(cont_logit, data.cont)

        # High-level model: segments end where the context changes or the episode terminates.
        changed = context_changed(gates)
        targets = segment_targets(
            states=post, actions=data.actions, contexts=posteriors["context"], rewards=data.reward,
            boundaries=segment_boundaries(changed, data.is_terminal), is_first=data.is_first,
            discount=self.discount,
        )  # fmt: skip
        hl_losses, hl_metrics = highlevel_losses(
            self.highlevel, coarse_features, targets, self.layout, dists.symexp_bins(self.hl_bins), key=key,
            kl_balance=self.kl_balance,
        )  # fmt: skip

        losses = {
            "dyn": dyn, "rep": rep, "coarse_dyn": coarse_dyn, "coarse_rep": coarse_rep, "sparse": sparse,
            "coarse_rec": coarse_rec, "coarse_rew": coarse_rew, "coarse_con": coarse_con, **hl_losses,
        }  # fmt: skip
        metrics = {
            "context/change_rate": changed.mean(),
            "context/gate_mean": sg(gates).mean(),
            "context/abs_mean": jnp.abs(posteriors["context"]).mean(),
            "dyn/dyn_kl": dists.categorical_kl(post, priors["logits"]).sum(-1).mean(),
            "dyn/coarse_kl": dists.categorical_kl(post, posteriors["coarse_logits"]).sum(-1).mean(),
            "dyn/prior_ent": dists.categorical_entropy(priors["logits"]).sum(-1).mean(),
            "dyn/post_ent": dists.categorical_entropy(post).sum(-1).mean(),
            "dyn/coarse_reward_pred": dists.twohot_mean(reward_logits, reward_bins).mean(),
            **{f"dyn/{k}": v for k, v in hl_metrics.items()},
        }
        return losses, metrics


class ThickBehaviour(AbstractBehaviourExtension):
    """THICK Dreamer's addition to behaviour learning: the coarse critic and the psi-mixed critic targets."""

    coarse_critic: MLPHead
    psi: float = eqx.field(static=True)
    thick_dreamer: bool = eqx.field(static=True)
    slow_reg: float = eqx.field(static=True)
    value_bins: int = eqx.field(static=True)

    def __init__(self, config: ThickConfig, coarse_size: int, *, key: PRNGKeyArray):
        cr = config.critic
        self.coarse_critic = make_critic(
            coarse_size, cr.units, cr.layers, cr.bins, act=cr.act, outscale=cr.outscale, key=key
        )
        self.psi = config.thick_dreamer.psi
        self.thick_dreamer = config.thick_dreamer.enabled
        self.slow_reg = cr.slow_reg
        self.value_bins = cr.bins

    def coarse_value(self, coarse_features: Float[Array, " G"]) -> Float[Array, ""]:
        """V_coarse(z, c) on one example: the coarse critic's twohot mean over symexp bins."""
        return dists.twohot_mean(self.coarse_critic(coarse_features), dists.symexp_bins(self.value_bins))

    def critic_targets(self, slow: ThickBehaviour, dynamics: ThickWorldModel, trajectory: Latent,
                       returns: Float[Array, "N H"], cont: Float[Array, "N H+1"], *, key: PRNGKeyArray):  # fmt: skip
        """Mix one high-level step's long-horizon return into the critic targets; train the coarse critic."""
        starts, horizon = returns.shape
        value_bins = dists.symexp_bins(self.value_bins)
        # Imagined states 0..H-1, flattened: the lambda returns exist for these.
        latents = jax.tree.map(
            lambda x: sg(x[:, :horizon]).reshape(starts * horizon, *x.shape[2:]), trajectory
        )
        coarse_features = dynamics.coarse_features(latents)
        slow_value = jax.vmap(slow.coarse_value)(coarse_features)

        if self.thick_dreamer:
            long_return = self.long_horizon_return(slow, dynamics, latents, key=key).reshape(starts, horizon)
            targets = self.psi * returns + (1.0 - self.psi) * long_return
        else:
            long_return, targets = returns, returns

        # Coarse critic: regresses the same targets, regularised towards its slow copy, weighted like the
        # fine critic by the probability that the imagined episode is still running.
        weight = sg(jnp.cumprod(cont, 1)[:, :-1])
        logits = jax.vmap(self.coarse_critic)(coarse_features).reshape(starts, horizon, -1)
        slow_value = sg(slow_value.reshape(starts, horizon))
        coarse_value = weight * (
            dists.twohot_loss(logits, sg(targets), value_bins)
            + self.slow_reg * dists.twohot_loss(logits, slow_value, value_bins)
        )
        metrics = {
            "thick/long_return": long_return.mean(),
            "thick/lambda_return": returns.mean(),
            "thick/critic_target": targets.mean(),
            "thick/coarse_value": dists.twohot_mean(logits, value_bins).mean(),
        }
        return sg(targets), {"coarse_value": coarse_value}, metrics

    def long_horizon_return(self, slow: ThickBehaviour, dynamics: ThickWorldModel, latents: Latent, *,
                            key: PRNGKeyArray) -> Float[Array, " N"]:  # fmt: skip
        """G = r_way + gamma^delta (r(z_tau, c_tau) + cont(z_tau, c_tau) V_slow(z_tau, c_tau)) from (z, c)."""
        step_key, coarse_key = jax.random.split(key)
        step = highlevel_step(
            dynamics.highlevel, dynamics.coarse_features(latents), dynamics.layout,
            dists.symexp_bins(dynamics.hl_bins), key=step_key,
        )  # fmt: skip
        # One coarse low-level step from the predicted pre-change state, with the action that causes the
        # change, in the context that held until then.
        stoch_after, context_after, _ = dynamics.crssm.coarse_step(
            step.state_before, latents["context"], step.action_before, key=coarse_key
        )
        after = dynamics.crssm.coarse_features(stoch_after, context_after)
        reward_after = dists.twohot_mean(
            jax.vmap(dynamics.coarse.reward)(after), dists.symexp_bins(dynamics.reward_bins)
        )
        cont_after = jax.nn.sigmoid(jax.vmap(dynamics.coarse.cont_logit)(after))
        value_after = jax.vmap(slow.coarse_value)(after)
        long_return = step.reward + dynamics.discount**step.time * (reward_after + cont_after * value_after)
        return sg(long_return)


# ------------------------------------------------------------------------------------------ plugging in


def make_world_model(
    config: ThickConfig,
    obs_space: Mapping[str, Space],
    layout: ActionLayout,
    token_size: int,
    *,
    key: PRNGKeyArray,
) -> ThickWorldModel:
    """`make_dynamics` of THICK."""
    return ThickWorldModel(check_config(config), obs_space, layout, token_size, key=key)


def make_behaviour(config: ThickConfig, dynamics: ThickWorldModel, *, key: PRNGKeyArray) -> ThickBehaviour:
    """`make_behaviour` of THICK: the coarse critic reads the coarse features [z, c] of the C-RSSM."""
    return ThickBehaviour(config, dynamics.crssm.coarse_size, key=key)


def thick_report(agent: DreamerV3, nets: Networks, data: dict, *, key: PRNGKeyArray, rows: int = 4) -> dict:
    """uint8 images of up to `rows` replayed sequences (DreamerV3's `extra_report`):

    * `thick/context_changes` (rows H, T W, 3): the observed frames side by side, a red border where the
      context changed at that step.
    * `thick/highlevel` (rows (1 + A) H, T W, 3): per sequence the frames, then for each high-level action
      A_i the coarse decoding of the predicted pre-change state z_{tau-1} (with the context of that step).
    """
    images, _ = split_keys(agent.obs_space)
    if not images:
        return {}
    dynamics: ThickWorldModel = nets.dynamics
    take = lambda x: x[:rows]
    sensors = jax.tree.map(take, data["sensors"])
    tokens = nets.encoder(sensors)
    start = jax.tree.map(take, data["start"])
    _, posteriors, _ = dynamics.observe(
        start, tokens, take(data["prev_actions"]), take(data["is_first"]), key=key
    )
    changed = context_changed(posteriors["gates"])  # (R, T)
    frames = sensors[images[0]].astype(jnp.float32) / 255.0  # (R, T, H, W, C)
    if frames.shape[-1] == 1:
        frames = jnp.repeat(frames, 3, -1)
    frames = frames[..., :3]
    marked = _mark(frames, changed)

    count, steps = changed.shape
    latents = {
        k: posteriors[k].reshape(count * steps, *posteriors[k].shape[2:]) for k in ("stoch", "context")
    }
    states, _ = highlevel_modes(dynamics.highlevel, dynamics.coarse_features(latents), dynamics.layout)
    hl_actions = states.shape[1]
    contexts = jnp.repeat(latents["context"][:, None], hl_actions, 1)
    features = dynamics.crssm.coarse_features(states, contexts)  # (R T, A, G)
    predicted = dynamics.coarse.decode(features)[images[0]]  # (R T, A, H, W, C)
    predicted = predicted.reshape(count, steps, hl_actions, *predicted.shape[2:])
    if predicted.shape[-1] == 1:
        predicted = jnp.repeat(predicted, 3, -1)
    predicted = jnp.moveaxis(predicted[..., :3], 2, 1)  # (R, A, T, H, W, 3)
    grid = jnp.concatenate([marked[:, None], predicted], 1)  # (R, 1 + A, T, H, W, 3)
    return {
        "thick/context_changes": _to_uint8(_tile(marked[:, None])),
        "thick/highlevel": _to_uint8(_tile(grid)),
        "thick/report_change_rate": changed.mean(),
    }


def _mark(frames: Float[Array, "R T H W 3"], changed: Float[Array, "R T"]) -> Float[Array, "R T H W 3"]:
    """Paint a 1-pixel red border on the frames of steps where the context changed."""
    height, width = frames.shape[2:4]
    rows = jnp.arange(height)[:, None]
    cols = jnp.arange(width)[None, :]
    border = (rows == 0) | (rows == height - 1) | (cols == 0) | (cols == width - 1)
    red = jnp.array([1.0, 0.0, 0.0])
    paint = border[None, None, :, :, None] & (changed[:, :, None, None, None] > 0)
    return jnp.where(paint, red, frames)


def _tile(grid: Float[Array, "R P T H W 3"]) -> Float[Array, "RPH TW 3"]:
    """Rows of panels -> one image: time runs left to right, panels and sequences top to bottom."""
    r, p, t, h, w, c = grid.shape
    return grid.transpose(0, 1, 3, 2, 4, 5).reshape(r * p * h, t * w, c)


def _to_uint8(image: Float[Array, "..."]) -> Array:
    return jnp.clip(image * 255.0, 0, 255).astype(jnp.uint8)


def make_thick(
    config: ThickConfig, obs_space: Mapping[str, Space], act_space: Mapping[str, Space]
) -> DreamerV3:
    """The AgentSpec `make`: DreamerV3 with THICK's world model, behaviour extension and report."""
    check_config(config)
    return make_agent(
        config,
        obs_space,
        act_space,
        make_dynamics=make_world_model,
        make_behaviour=make_behaviour,
        extra_report=thick_report,
    )
