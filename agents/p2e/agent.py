"""Plan2Explore (Sekar et al., ICML 2020) on our DreamerV3: explore by the disagreement of an ensemble of
one-step models of the latent dynamics, and learn the task from the same world model.

The algorithm, top to bottom (`update`):

1. DreamerV3's update on the batch, unchanged (`DreamerV3.train_step`): world model, and the *task*
   actor-critic trained in imagination on the extrinsic reward head. It also gives the posterior latents
   s_t of the batch.
2. Ensemble (`disag` term): K heads f_k each regress the next latent target (the one-hot `stoch`, or the full
   features) from [features(s_t), a_t] on the replayed transitions (t -> t+1 inside an episode), inputs and
   targets stop-gradiented; loss = sum_k sum_dims (f_k - target)^2, as upstream's MSE heads.
3. Exploration actor-critic (`expl_policy`, `expl_value`): imagine `horizon` steps from every posterior
   state with the *exploration* actor; the reward for entering step i is
       r_i = intr_scale * D(s_{i-1}, a_{i-1}) + extr_scale * r_hat(s_i),
       D(s, a) = 1/D_out sum_d Var_k[f_k(s, a)_d]     (unbiased variance over the K members)
   then DreamerV3's imagination losses (REINFORCE with percentile return normalisation, twohot critic with
   its own slow copy and return normaliser). One LaProp + AGC step on the ensemble and the exploration
   actor-critic (the world model is not trained by them). With `expl.episodic: false` the exploration
   returns ignore predicted terminals (continue = the discount), RND's non-episodic intrinsic returns.

`expl.train_actor` picks the actor that collects training data (the exploration actor by default),
`expl.eval_actor` the one of evaluation episodes (the task actor).

Why not DreamerV3's behaviour extension (agents/dreamerv3/behaviour.py): that point changes the task critic's
targets inside one imagination; Plan2Explore needs a second imagination with its own actor, its own return
normaliser, the replayed transitions for the ensemble, and the choice of the acting actor. So Plan2Explore
composes the DreamerV3 agent (world model + task actor-critic) with exploration networks and state of its own.
Differences from upstream, on purpose: transitions into a new episode (is_first at t+1) are left out of the
ensemble's regression, and the disagreement is the variance (the paper's D), not DreamerV2's log of the std.

Batch shards (`run.batch_shards`): the exploration step's gradient, loss and metrics are the parts' means, as
DreamerV3's; its draws and return percentiles go through the same helpers (tests/test_batch_shards.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from agents.common import distributions as dists
from agents.common import shards
from agents.common.behaviour import Actor, imagination_loss, imagine, make_critic
from agents.common.nets import MLPHead, batched
from agents.common.optim import laprop_agc
from agents.common.returns import PercentileNormalizer, ema_update
from agents.dreamerv3 import DreamerV3, DreamerV3State, make_agent
from agents.dreamerv3.dynamics import Latent
from agents.p2e.config import P2EConfig, base_config, check_config
from bench.api import AbstractAgent, StreamSpec
from bench.spaces import Space

sg = jax.lax.stop_gradient
EXPLORATION_TERMS = ("disag", "expl_policy", "expl_value")


def disagreement(predictions: Float[Array, "K *b D"]) -> Float[Array, " *b"]:
    """Plan2Explore's intrinsic reward: the variance over the K ensemble members (unbiased, 1/(K-1)),
    averaged over the predicted dimensions. Zero exactly when all members agree: the variance is taken of
    the offsets from the first member (shift-invariant), which are exactly 0 then, while the mean of equal
    floats can round away from them."""
    offsets = predictions - predictions[:1]
    return jnp.var(offsets, axis=0, ddof=1).mean(-1)


class Ensemble(eqx.Module):
    """K MLP heads with stacked weights (a leading member axis); one example in, (K, D) predictions out."""

    heads: MLPHead

    def __init__(self, in_size: int, out_size: int, members: int, units: int, layers: int, *, act: str,
                 key: PRNGKeyArray):  # fmt: skip
        make = lambda k: MLPHead(in_size, out_size, units, layers, act=act, outscale=1.0, key=k)
        self.heads = eqx.filter_vmap(make)(jax.random.split(key, members))

    def __call__(self, x: Float[Array, " I"]) -> Float[Array, "K D"]:
        return eqx.filter_vmap(lambda head: head(x))(self.heads)


class ExplorationNets(eqx.Module):
    """What the exploration optimizer trains."""

    ensemble: Ensemble
    actor: Actor
    critic: MLPHead


class P2EState(eqx.Module):
    base: DreamerV3State  # world model, task actor-critic, their optimizer, slow critic and return normaliser
    expl: ExplorationNets
    expl_slow_critic: MLPHead  # EMA copy of the exploration critic; not optimised
    expl_opt_state: PyTree
    expl_retnorm: PercentileNormalizer
    expl_updates: Int[Array, ""]


class Plan2Explore(AbstractAgent):
    config: P2EConfig
    obs_space: Mapping[str, Space]
    act_space: Mapping[str, Space]
    base: DreamerV3

    def _optimizer(self) -> optax.GradientTransformation:
        o = self.config.optimizer
        return laprop_agc(o.lr, o.agc, o.pmin, o.beta1, o.beta2, o.eps, o.warmup)

    # ----------------------------------------------------------------------------------------- API

    def init(self, *, key: PRNGKeyArray) -> P2EState:
        base_key, ensemble_key, actor_key, critic_key = jax.random.split(key, 4)
        base_state = self.base.init(key=base_key)
        dynamics = base_state.nets.dynamics
        cfg, e, ac, cr = self.config, self.config.ensemble, self.config.actor, self.config.critic
        latent = jax.eval_shape(lambda: dynamics.initial(1))
        if e.target == "stoch" and "stoch" not in latent:
            raise ValueError(f"ensemble.target 'stoch' needs a latent with 'stoch' (has {sorted(latent)}); "
                             "use ensemble.target features")  # fmt: skip
        target_size = jax.eval_shape(lambda: self._target_of(dynamics, dynamics.initial(1))).shape[-1]
        features = dynamics.feature_size
        layout = self.base.layout
        expl = ExplorationNets(
            ensemble=Ensemble(features + layout.size, target_size, e.members, e.units, e.layers, act=e.act,
                              key=ensemble_key),
            actor=Actor(features, layout, ac.units, ac.layers, act=ac.act, outscale=ac.outscale,
                        unimix=ac.unimix, min_std=ac.min_std, max_std=ac.max_std, key=actor_key),
            critic=make_critic(features, cr.units, cr.layers, cr.bins, act=cr.act, outscale=cr.outscale,
                               key=critic_key),
        )  # fmt: skip
        r = cfg.retnorm
        return P2EState(
            base=base_state,
            expl=expl,
            expl_slow_critic=jax.tree.map(lambda x: jnp.array(x, copy=True) if eqx.is_array(x) else x, expl.critic),
            expl_opt_state=self._optimizer().init(eqx.filter(expl, eqx.is_inexact_array)),
            expl_retnorm=PercentileNormalizer(r.rate, r.limit, r.percentile_low, r.percentile_high),
            expl_updates=jnp.zeros((), jnp.int32),
        )

    def initial_carry(self, state: P2EState, batch_size: int) -> dict:
        return self.base.initial_carry(state.base, batch_size)

    def act(self, state: P2EState, carry: dict, obs: Mapping[str, Array], *, key: PRNGKeyArray,
            mode: str) -> tuple[dict, dict, dict]:  # fmt: skip
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        actor = self.config.expl.train_actor if mode == "train" else self.config.expl.eval_actor
        base_state = state.base
        if actor == "expl":  # DreamerV3's policy step with the exploration actor in the task actor's place
            base_state = eqx.tree_at(lambda s: s.nets.actor, base_state, state.expl.actor)
        return self.base.act(base_state, carry, obs, key=key, mode=mode)

    def update(self, state: P2EState, stream: str, batch: Mapping[str, Array], *, key: PRNGKeyArray):
        if stream not in self.streams():
            raise ValueError(f"unknown stream {stream!r}; this agent trains on {sorted(self.streams())}")
        base_key, expl_key = jax.random.split(key)
        # 1. DreamerV3: world model and task actor-critic; the posteriors come from the networks before it.
        base_state, metrics, latents = self.base.train_step(state.base, batch, key=base_key)
        nets = state.base.nets
        context = self.config.replay_context
        actions = self.base.layout.to_vector({p.key: batch[p.key] for p in self.base.layout.parts}, 2)[:, context:]
        is_first = jnp.asarray(batch["is_first"])[:, context:].astype(bool)

        # 2. + 3. Ensemble and exploration actor-critic: one optimizer step of their own.
        params, static = eqx.partition(state.expl, eqx.is_inexact_array)

        def loss_fn(params):
            expl = eqx.combine(params, static)
            losses, retnorm, expl_metrics = self._exploration_losses(
                expl, state, nets, sg_tree(latents), actions, is_first, key=expl_key
            )
            scales = dataclasses.asdict(self.config.loss_scales)
            means = {k: v.mean() for k, v in losses.items()}
            return sum(scales[k] * means[k] for k in EXPLORATION_TERMS), (retnorm, expl_metrics, means)

        (total, (retnorm, expl_metrics, means)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        # Under batch shards the whole batch's gradient, loss and metrics are the parts' means (as DreamerV3's).
        grads, total, expl_metrics, means = shards.mean((grads, total, expl_metrics, means))
        updates, opt_state = self._optimizer().update(grads, state.expl_opt_state, params)
        expl = eqx.combine(optax.apply_updates(params, updates), static)
        slow = ema_update(state.expl_slow_critic, expl.critic, self.config.critic.slow_rate)
        new_state = P2EState(base_state, expl, slow, opt_state, retnorm, state.expl_updates + 1)

        metrics = {**metrics, **expl_metrics, **{f"loss/{k}": v for k, v in means.items()}}
        metrics["expl/loss_total"] = total
        metrics["expl/grad_norm"] = optax.global_norm(grads)
        replay_updates = self.base.replay_updates(batch, latents)
        return new_state, metrics, replay_updates

    def report(self, state: P2EState, batch: Mapping[str, Array], *, key: PRNGKeyArray) -> dict:
        return self.base.report(state.base, batch, key=key)

    def streams(self) -> dict[str, StreamSpec]:
        return self.base.streams()

    # ---------------------------------------------------------------------------------------- losses

    def _target_of(self, dynamics, latent: Latent) -> Float[Array, "... D"]:
        if self.config.ensemble.target == "stoch":
            stoch = latent["stoch"]
            return stoch.reshape(*stoch.shape[:-2], -1)
        return dynamics.features(latent)

    def _exploration_losses(self, expl: ExplorationNets, state: P2EState, nets, latents: Latent,
                            actions: Float[Array, "B T A"], is_first: Array, *,
                            key: PRNGKeyArray) -> tuple[dict[str, Array], PercentileNormalizer, dict]:  # fmt: skip
        cfg = self.config
        dynamics = nets.dynamics
        batch_size, steps = is_first.shape

        disag = ensemble_loss(
            expl.ensemble, dynamics.features(latents), actions, self._target_of(dynamics, latents), is_first
        )

        # Exploration actor-critic in imagination from every posterior state.
        starts = jax.tree.map(lambda x: x.reshape(batch_size * steps, *x.shape[2:]), latents)
        trajectory, imagined_actions = imagine(dynamics, expl.actor, starts, cfg.imagination.horizon, key=key)
        imagined = dynamics.features(trajectory)  # (N, H+1, F)
        extrinsic = dists.twohot_mean(batched(nets.reward, imagined[:, 1:]), dists.symexp_bins(cfg.reward_head.bins))
        reward, intrinsic = exploration_reward(
            sg_tree(expl.ensemble), imagined, imagined_actions, extrinsic, cfg.expl.intr_scale, cfg.expl.extr_scale
        )
        reward = sg(reward)
        cont = exploration_continue(sg(jax.nn.sigmoid(batched(nets.cont, imagined)[..., 0])),
                                    cfg.imagination.discount, episodic=cfg.expl.episodic)  # fmt: skip
        ac_losses, _, retnorm, ac_metrics = imagination_loss(
            expl.actor, expl.critic, state.expl_slow_critic, state.expl_retnorm, imagined, imagined_actions,
            reward, cont, dists.symexp_bins(cfg.critic.bins), lam=cfg.imagination.lam,
            entropy_scale=cfg.actor.entropy, slow_reg=cfg.critic.slow_reg, slow_target=cfg.critic.slow_target,
        )  # fmt: skip
        losses = {
            "disag": disag,
            "expl_policy": ac_losses["policy"].mean(1).reshape(batch_size, steps),
            "expl_value": ac_losses["value"].mean(1).reshape(batch_size, steps),
        }
        metrics = {f"expl/{k}": v for k, v in ac_metrics.items()}
        metrics["expl/intr_reward"] = intrinsic.mean()
        metrics["expl/extr_reward"] = extrinsic.mean()
        return losses, retnorm, metrics


def ensemble_loss(ensemble: Ensemble, features: Float[Array, "B T F"], actions: Float[Array, "B T A"],
                  targets: Float[Array, "B T D"], is_first: Array) -> Float[Array, "B T"]:  # fmt: skip
    """sum_k sum_d (f_k([features_t, a_t])_d - targets_{t+1, d})^2 at step t, for transitions inside an
    episode (not into a step with is_first); the last step has no successor and gets 0. Inputs and targets
    are stop-gradiented: the ensemble does not shape the world model."""
    inputs = sg(jnp.concatenate([features[:, :-1], actions[:, :-1]], -1))
    predictions = batched(ensemble, inputs)  # (B, T-1, K, D)
    error = jnp.square(predictions - sg(targets[:, 1:, None])).sum((-2, -1))
    inside = 1.0 - jnp.asarray(is_first)[:, 1:].astype(jnp.float32)
    return jnp.concatenate([inside * error, jnp.zeros_like(error[:, :1])], 1)


def exploration_reward(ensemble: Ensemble, features: Float[Array, "N H+1 F"], actions: Float[Array, "N H A"],
                       extrinsic: Float[Array, "N H"], intr_scale: float,
                       extr_scale: float) -> tuple[Float[Array, "N H+1"], Float[Array, "N H"]]:  # fmt: skip
    """The exploration reward on entering imagined steps 1..H (step 0's entry is unused by the returns):
    r_i = intr_scale * D(s_{i-1}, a_{i-1}) + extr_scale * extrinsic_{i-1}, where `extrinsic` holds the reward
    head's predictions on entering steps 1..H. Also returns the disagreement D (N, H)."""
    transitions = jnp.concatenate([features[:, :-1], actions], -1)
    intrinsic = disagreement(jnp.moveaxis(batched(ensemble, transitions), -2, 0))
    reward = intr_scale * intrinsic + extr_scale * extrinsic
    return jnp.concatenate([jnp.zeros_like(reward[:, :1]), reward], 1), intrinsic


def exploration_continue(predicted: Float[Array, "N H+1"], discount: float, *, episodic: bool) -> Array:
    """The continue flags of the exploration returns: the world model's (terminals, discount folded in), or,
    non-episodic (`expl.episodic: false`), the discount alone: a predicted terminal does not end them."""
    return predicted if episodic else jnp.full_like(predicted, discount)


def sg_tree(tree: PyTree) -> PyTree:
    """Stop the gradient through every array of a pytree (modules included)."""
    arrays, static = eqx.partition(tree, eqx.is_array)
    return eqx.combine(jax.tree.map(sg, arrays), static)


def make_p2e(config: P2EConfig, obs_space: Mapping[str, Space], act_space: Mapping[str, Space]) -> Plan2Explore:
    """The AgentSpec `make`: DreamerV3 (RSSM) for the world model and task actor-critic, plus exploration."""
    check_config(config)
    base = make_agent(base_config(config), obs_space, act_space)
    return Plan2Explore(config, dict(obs_space), dict(act_space), base)
