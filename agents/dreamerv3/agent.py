"""DreamerV3 (Hafner et al., 2024 version) in Equinox: world model, imagination actor-critic, one jitted update.

The algorithm, top to bottom (see `_losses`):

1. Encode the replayed observations; filter them with the latent dynamics from the stored latent of the
   context step (`replay_context`), which gives posteriors and priors for every step.
2. World-model terms: reconstruction (`rec`), reward (`rew`, twohot), continue (`con`, discount folded in),
   and the dynamics' own terms (RSSM: `dyn`, `rep` with free nats).
3. Imagine `horizon` steps from every posterior state with the actor; policy loss (REINFORCE with
   percentile-normalised advantages and an entropy bonus) and value loss (twohot towards lambda returns plus
   a slow-critic regulariser), each weighted by the cumulative continue probability.
4. `repval`: the critic also regresses lambda returns of the replayed sequence bootstrapped from the
   imagination returns.
5. Every term is a (B, T) array; the loss is sum_k scale_k * mean(term_k) with the scales of
   `config.loss_scales` (the key sets must match). One LaProp + AGC step on all networks; the slow copies
   (`DreamerV3State.slow`: the critic's and the behaviour extension's) follow by EMA.

The update can run as batch shards (`run.batch_shards`, agents/common/shards.py): equal parts of the batch
on several CPU devices, each part its rows of this same computation. Every random draw of the update goes
through `shards.draw`, the return percentiles through `shards.gather`, and the gradient and metrics are the
parts' means (`shards.mean` in `train_step`); with one part all three are the plain operations.

Two extension points let variants reuse this agent whole: the latent dynamics (`make_dynamics`, see
dynamics.py; THICK, VSG, SVSG) with their own loss terms and loss-scale fields, and the behaviour extension
(`make_behaviour`, see behaviour.py; THICK's coarse critic and long-horizon critic targets). `extra_report`
adds a variant's report images.

Deliberate deviations from upstream, each documented where it happens: 1% unimix on categorical actions
(upstream ignores its own setting), truncation is not termination (the continue target uses `is_terminal`
only; suites emit truncation as `is_last` without `is_terminal`), and float32 compute on every device
(upstream computes in bfloat16).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from agents.common import distributions as dists
from agents.common import optim, shards
from agents.common.actions import ActionLayout
from agents.common.behaviour import (
    Actor,
    frozen,
    imagination_loss,
    imagine,
    make_critic,
    policy_mode,
    policy_sample,
    replay_value_loss,
)
from agents.common.nets import MLPHead, batched, check_compute_dtype, compute_dtype
from agents.common.observations import ObservationDecoder, ObservationEncoder, split_keys
from agents.common.optim import laprop_agc
from agents.common.returns import PercentileNormalizer, ema_update
from agents.dreamerv3.behaviour import AbstractBehaviourExtension, make_no_extension
from agents.dreamerv3.config import DreamerV3Config
from agents.dreamerv3.dynamics import AbstractDynamics, Latent, MakeDynamics, WorldModelData
from agents.dreamerv3.rssm import make_rssm
from bench.api import AbstractAgent, StreamSpec
from bench.spaces import Space

sg = jax.lax.stop_gradient

LATENT_PREFIX = "latent/"  # replay keys of the stored latents (extras of `act`, replay updates of `update`)
LATENT_STORAGE_DTYPE = jnp.float16  # halves replay memory; upstream stores its bfloat16 carry
WORLD_MODEL_TERMS = ("rec", "rew", "con")
BEHAVIOUR_TERMS = ("policy", "value", "repval")
SLOW_NETWORKS = ("critic", "behaviour")  # the networks with a slow EMA copy in `DreamerV3State.slow`

MakeBehaviour = Callable[..., AbstractBehaviourExtension]  # (config, dynamics, *, key) -> extension
ExtraReport = Callable[..., dict]  # (agent, nets, data, *, key) -> report images and scalars


class Networks(eqx.Module):
    """Everything the optimizer trains (one optimizer over all modules, as upstream)."""

    encoder: ObservationEncoder
    dynamics: AbstractDynamics
    decoder: ObservationDecoder
    reward: MLPHead
    cont: MLPHead
    actor: Actor
    critic: MLPHead
    behaviour: AbstractBehaviourExtension


class DreamerV3State(eqx.Module):
    nets: Networks
    slow: dict[str, PyTree]  # EMA copies of the SLOW_NETWORKS by name; not optimised
    opt_state: PyTree
    retnorm: PercentileNormalizer
    updates: Int[Array, ""]


def observe_tokens(dynamics: AbstractDynamics, tokens: Array, reward: Array) -> Array:
    """The tokens `observe` reads: the encoder's, plus the raw reward as a last column for a dynamics that
    `observes_reward` (TSSM)."""
    if not dynamics.observes_reward:
        return tokens
    return jnp.concatenate([tokens, reward[..., None].astype(tokens.dtype)], -1)


def build_networks(config, obs_space: Mapping[str, Space], layout: ActionLayout, make_dynamics: MakeDynamics,
                   make_behaviour: MakeBehaviour, *, key: PRNGKeyArray) -> Networks:  # fmt: skip
    keys = jax.random.split(key, 8)
    enc, dec = config.encoder, config.decoder
    encoder = ObservationEncoder(
        obs_space, depth=enc.depth, mults=enc.mults, kernel=enc.kernel, minres=enc.minres, layers=enc.layers,
        units=enc.units, symlog_inputs=enc.symlog, act=enc.act, key=keys[0],
    )  # fmt: skip
    dynamics = make_dynamics(config, obs_space, layout, encoder.out_size, key=keys[1])
    if not isinstance(dynamics, AbstractDynamics):
        raise TypeError(f"make_dynamics returned {type(dynamics).__name__}, not an AbstractDynamics")
    feature_size = dynamics.feature_size
    wide, narrow = jax.eval_shape(dynamics.decoder_inputs, jax.eval_shape(lambda: dynamics.initial(1)))
    decoder = ObservationDecoder(
        obs_space, feature_size, wide.shape[-1], narrow.shape[-1], depth=dec.depth, mults=dec.mults,
        kernel=dec.kernel, minres=dec.minres, layers=dec.layers, units=dec.units, blocks=dec.blocks,
        outscale=dec.outscale, act=dec.act, key=keys[2],
    )  # fmt: skip
    rh, ch, ac, cr = config.reward_head, config.cont_head, config.actor, config.critic
    reward = MLPHead(feature_size, rh.bins, rh.units, rh.layers, act=rh.act, outscale=rh.outscale, key=keys[3])
    cont = MLPHead(feature_size, 1, ch.units, ch.layers, act=ch.act, outscale=ch.outscale, key=keys[4])
    actor = Actor(
        feature_size, layout, ac.units, ac.layers, act=ac.act, outscale=ac.outscale, unimix=ac.unimix,
        min_std=ac.min_std, max_std=ac.max_std, key=keys[5],
    )  # fmt: skip
    critic = make_critic(feature_size, cr.units, cr.layers, cr.bins, act=cr.act, outscale=cr.outscale, key=keys[6])
    behaviour = make_behaviour(config, dynamics, key=keys[7])
    if not isinstance(behaviour, AbstractBehaviourExtension):
        raise TypeError(f"make_behaviour returned {type(behaviour).__name__}, not an AbstractBehaviourExtension")
    return Networks(encoder, dynamics, decoder, reward, cont, actor, critic, behaviour)


class DreamerV3(AbstractAgent):
    config: DreamerV3Config
    obs_space: Mapping[str, Space]
    act_space: Mapping[str, Space]
    make_dynamics: MakeDynamics = eqx.field(static=True)
    make_behaviour: MakeBehaviour = eqx.field(static=True)
    extra_report: ExtraReport | None = eqx.field(static=True)

    # -------------------------------------------------------------------------------------- helpers

    @property
    def layout(self) -> ActionLayout:
        return ActionLayout.from_spaces(self.act_space)

    def _optimizer(self) -> optax.GradientTransformation:
        o = self.config.optimizer
        return laprop_agc(o.lr, o.agc, o.pmin, o.beta1, o.beta2, o.eps, o.warmup)

    def _bins(self, count: int) -> Float[Array, " K"]:
        return dists.symexp_bins(count)

    def _sensors(self, obs: Mapping[str, Array]) -> dict[str, Array]:
        images, vectors = split_keys(self.obs_space)
        missing = [k for k in images + vectors if k not in obs]
        if missing:
            raise ValueError(f"observation is missing the sensor keys {missing} (has {sorted(obs)})")
        return {k: obs[k] for k in images + vectors}

    # ----------------------------------------------------------------------------------------- API

    def init(self, *, key: PRNGKeyArray) -> DreamerV3State:
        nets = build_networks(
            self.config, self.obs_space, self.layout, self.make_dynamics, self.make_behaviour, key=key
        )
        params = eqx.filter(nets, eqx.is_inexact_array)
        r = self.config.retnorm
        # Upstream copies the critic into the slow critic at the first update. Real copies: shared buffers
        # cannot be donated twice to the jitted update.
        copy = lambda module: jax.tree.map(lambda x: jnp.array(x, copy=True) if eqx.is_array(x) else x, module)
        return DreamerV3State(
            nets=nets,
            slow={name: copy(getattr(nets, name)) for name in SLOW_NETWORKS},
            opt_state=self._optimizer().init(params),
            retnorm=PercentileNormalizer(r.rate, r.limit, r.percentile_low, r.percentile_high),
            updates=jnp.zeros((), jnp.int32),
        )

    def initial_carry(self, state: DreamerV3State, batch_size: int) -> dict:
        return {
            "latent": state.nets.dynamics.initial(batch_size),
            "action": jnp.zeros((batch_size, self.layout.size), jnp.float32),
        }

    def act(self, state: DreamerV3State, carry: dict, obs: Mapping[str, Array], *, key: PRNGKeyArray,
            mode: str) -> tuple[dict, dict, dict]:  # fmt: skip
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        nets = state.nets
        observe_key, action_key = jax.random.split(key)
        tokens = nets.encoder(self._sensors(obs))
        if nets.dynamics.observes_reward:
            tokens = observe_tokens(nets.dynamics, tokens, jnp.asarray(obs["reward"], jnp.float32))
        is_first = jnp.asarray(obs["is_first"], bool)
        latent, _, _ = nets.dynamics.observe(
            carry["latent"], tokens[:, None], carry["action"][:, None], is_first[:, None], key=observe_key
        )
        policy = jax.vmap(nets.actor)(nets.dynamics.features(latent))
        if mode == "eval" and self.config.actor.eval_greedy:
            action = policy_mode(policy, self.layout)
        else:
            action = policy_sample(policy, self.layout, action_key)
        stored = {k: v for k, v in latent.items() if k not in nets.dynamics.carry_only}
        extras = {LATENT_PREFIX + k: v.astype(LATENT_STORAGE_DTYPE) for k, v in stored.items()}
        return {"latent": latent, "action": action}, self.layout.to_env(action), extras

    def update(self, state: DreamerV3State, stream: str, batch: Mapping[str, Array], *, key: PRNGKeyArray):
        if stream not in self.streams():
            raise ValueError(f"unknown stream {stream!r}; this agent trains on {sorted(self.streams())}")
        new_state, metrics, latents = self.train_step(state, batch, key=key)
        return new_state, metrics, self.replay_updates(batch, latents)

    def train_step(self, state: DreamerV3State, batch: Mapping[str, Array], *,
                   key: PRNGKeyArray) -> tuple[DreamerV3State, dict[str, Array], Latent]:  # fmt: skip
        """One update; also returns the posterior latents (B, T) of the trained steps, computed with the
        networks before the update (Plan2Explore trains its ensemble on them)."""
        params, static = eqx.partition(state.nets, eqx.is_inexact_array)

        def loss_fn(params):
            nets = eqx.combine(params, static)
            with compute_dtype(self.config.compute_dtype):  # the products' dtype (float32: unchanged)
                losses, retnorm, metrics, latents = self._losses(nets, state, batch, key=key, train=True)
            total, weighted = self._total(losses)
            return total, (retnorm, metrics, latents, weighted)

        (total, (retnorm, metrics, latents, weighted)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        # Under batch shards (agents/common/shards.py) each part took the loss over its rows: the whole batch's
        # gradient, loss and metrics (all batch means) are the parts' means.
        grads, total, metrics, weighted = shards.mean((grads, total, metrics, weighted))
        updates, opt_state = self._optimizer().update(grads, state.opt_state, params)
        params = optax.apply_updates(params, updates)
        nets = eqx.combine(params, static)
        rate = self.config.critic.slow_rate
        slow = {name: ema_update(state.slow[name], getattr(nets, name), rate) for name in SLOW_NETWORKS}
        new_state = DreamerV3State(nets, slow, opt_state, retnorm, state.updates + 1)

        metrics = {**metrics, **weighted}
        metrics["loss/total"] = total
        flat_grads, flat_updates = ravel_pytree(grads)[0], ravel_pytree(updates)[0]
        metrics["opt/grad_norm"] = jnp.sqrt(jnp.sum(jnp.square(flat_grads)))
        metrics["opt/update_rms"] = jnp.sqrt(jnp.mean(jnp.square(flat_updates)))
        metrics["opt/updates"] = new_state.updates.astype(jnp.float32)
        return new_state, metrics, latents

    def report(self, state: DreamerV3State, batch: Mapping[str, Array], *, key: PRNGKeyArray) -> dict:
        """World-model loss terms on the batch and an open-loop video: `report_context` observed steps, then
        the prior imagines the rest under the replayed actions. Rows: up to 4 sequences; columns: truth,
        prediction, error."""
        nets = state.nets
        loss_key, observe_key, imagine_key, extra_key = jax.random.split(key, 4)
        losses, _, metrics, _ = self._losses(nets, state, batch, key=loss_key, train=False)
        out = {f"loss/{k}": v.mean() for k, v in losses.items()}
        out.update({k: v for k, v in metrics.items() if not k.startswith("ac/")})  # the world model's metrics
        data = self._split_batch(batch, nets.dynamics)
        if self.extra_report is not None:
            out.update(self.extra_report(self, nets, data, key=extra_key))
        images, _ = split_keys(self.obs_space)
        if not images:
            return out
        rows = min(4, data["is_first"].shape[0])
        context = min(self.config.report_context, data["is_first"].shape[1] - 1)
        take = lambda x: x[:rows]
        sensors = jax.tree.map(take, data["sensors"])
        tokens = observe_tokens(nets.dynamics, nets.encoder(sensors), take(data["reward"]))
        start = jax.tree.map(take, data["start"])
        prev_actions, is_first = take(data["prev_actions"]), take(data["is_first"])
        last, posts, _ = nets.dynamics.observe(
            start, tokens[:, :context], prev_actions[:, :context], is_first[:, :context], key=observe_key
        )

        def imagine_one(latent, inputs):
            action, step_key = inputs
            latent = nets.dynamics.imagine_step(latent, action, key=step_key)
            return latent, latent

        steps = tokens.shape[1] - context
        _, imagined = jax.lax.scan(
            imagine_one, last, (jnp.swapaxes(prev_actions[:, context:], 0, 1), jax.random.split(imagine_key, steps))
        )
        imagined = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), imagined)
        latents = jax.tree.map(lambda a, b: jnp.concatenate([a, b], 1), {k: posts[k] for k in last}, imagined)
        features = nets.dynamics.features(latents)
        wide, narrow = nets.dynamics.decoder_inputs(latents)
        prediction = nets.decoder(features, wide, narrow)[images[0]]
        truth = sensors[images[0]].astype(jnp.float32) / 255.0
        error = (prediction - truth + 1.0) / 2.0
        out["openloop_mse"] = jnp.square(prediction - truth)[:, context:].sum((2, 3, 4)).mean()
        video = jnp.concatenate([truth, prediction, error], 3)  # (rows, T, H, 3W, C)
        video = jnp.concatenate(list(video), 1)  # rows stacked vertically: (T, rows H, 3W, C)
        if video.shape[-1] == 1:
            video = jnp.repeat(video, 3, -1)
        out["openloop"] = jnp.clip(video[..., :3] * 255.0, 0, 255).astype(jnp.uint8)
        return out

    def streams(self) -> dict[str, StreamSpec]:
        c = self.config
        return {"train": StreamSpec(c.batch_size, c.batch_length, c.replay_context)}

    # -------------------------------------------------------------------------------------- batches

    def _split_batch(self, batch: Mapping[str, Array], dynamics: AbstractDynamics) -> dict:
        """Check the batch and split it into the context step and the trained steps.

        Returns sensors, rewards and flags of the trained steps, the actions taken at them, the actions that
        led to them (`prev_actions`, the context step's action first), and the start latent (stored latent
        of the context step, or the initial latent without replay context).
        """
        context = self.config.replay_context
        spec = self.streams()["train"]
        for name in ("is_first", "is_last", "is_terminal", "reward"):
            if name not in batch:
                raise ValueError(f"batch is missing {name!r} (has {sorted(batch)})")
        shape = batch["is_first"].shape
        if len(shape) != 2 or shape[1] <= context:
            raise ValueError(f"batch['is_first'] has shape {shape}; expected (B, T) with T > context {context}")
        if shape[1] != spec.total_length:
            # Other lengths work (report, tests); the stream spec is what the runner samples.
            pass
        layout = self.layout
        missing = [p.key for p in layout.parts if p.key not in batch]
        if missing:
            raise ValueError(f"batch is missing the action keys {missing}")
        actions = layout.to_vector({p.key: batch[p.key] for p in layout.parts}, 2)
        trained = lambda x: jnp.asarray(x)[:, context:]
        if context:
            keys = sorted(jax.eval_shape(lambda: dynamics.initial(1)))
            missing = [LATENT_PREFIX + k for k in keys if LATENT_PREFIX + k not in batch]
            if missing:
                raise ValueError(
                    f"replay_context needs the stored latents {missing} in the batch (returned by act as extras)"
                )
            start = {k: jnp.asarray(batch[LATENT_PREFIX + k][:, context - 1]).astype(jnp.float32) for k in keys}
            prev_actions = actions[:, context - 1 : -1]
        else:
            start = dynamics.initial(shape[0])
            prev_actions = jnp.concatenate([jnp.zeros_like(actions[:, :1]), actions[:, :-1]], 1)
        return {
            "sensors": {k: trained(v) for k, v in self._sensors(batch).items()},
            "reward": trained(batch["reward"]).astype(jnp.float32),
            "is_first": trained(batch["is_first"]).astype(bool),
            "is_last": trained(batch["is_last"]).astype(bool),
            "is_terminal": trained(batch["is_terminal"]).astype(bool),
            "actions": actions[:, context:],
            "prev_actions": prev_actions,
            "start": start,
        }

    def replay_updates(self, batch: Mapping[str, Array], latents: Latent) -> dict[str, Array]:
        """Refreshed posterior latents aligned with the batch's (B, T); the context step keeps its value."""
        context = self.config.replay_context
        if not context:
            return {}
        updates = {}
        for k, v in latents.items():
            stored = jnp.asarray(batch[LATENT_PREFIX + k][:, :context]).astype(LATENT_STORAGE_DTYPE)
            updates[LATENT_PREFIX + k] = jnp.concatenate([stored, sg(v).astype(LATENT_STORAGE_DTYPE)], 1)
        return updates

    # ---------------------------------------------------------------------------------------- losses

    def _losses(self, nets: Networks, state: DreamerV3State, batch: Mapping[str, Array], *, key: PRNGKeyArray,
                train: bool) -> tuple[dict[str, Array], PercentileNormalizer, dict[str, Array], Latent]:  # fmt: skip
        """All loss terms (B, T), the updated return normaliser, metrics, and the posterior latents."""
        cfg = self.config
        observe_key, dynamics_key, imagine_key, targets_key = jax.random.split(key, 4)
        dynamics = nets.dynamics
        data = self._split_batch(batch, dynamics)
        batch_size, steps = data["is_first"].shape
        discount = cfg.imagination.discount
        # Truncation is not termination: only is_terminal stops the continue flag (upstream Atari treats
        # time limits as terminal; we do not).
        cont_target = (1.0 - data["is_terminal"].astype(jnp.float32)) * discount

        # 1. Representation: encode and filter.
        tokens = nets.encoder(data["sensors"])
        _, posteriors, priors = dynamics.observe(
            data["start"], observe_tokens(dynamics, tokens, data["reward"]), data["prev_actions"], data["is_first"],
            key=observe_key,
        )
        latent_keys = tuple(data["start"])
        latents = {k: posteriors[k] for k in latent_keys}
        features = dynamics.features(latents)

        # 2. World-model terms.
        wide, narrow = dynamics.decoder_inputs(latents)
        reconstruction = nets.decoder.loss(features, wide, narrow, data["sensors"])
        losses = {"rec": sum(reconstruction.values())}
        head_input = features if cfg.reward_grad else sg(features)
        reward_bins = self._bins(cfg.reward_head.bins)
        reward_logits = batched(nets.reward, head_input)
        losses["rew"] = dists.twohot_loss(reward_logits, data["reward"], reward_bins)
        cont_logit = batched(nets.cont, features)[..., 0]
        losses["con"] = dists.bernoulli_loss(cont_logit, cont_target)
        wm_data = WorldModelData(
            tokens=tokens, obs=data["sensors"], reward=data["reward"], cont=cont_target,
            is_first=data["is_first"], is_terminal=data["is_terminal"], prev_actions=data["prev_actions"],
            actions=data["actions"],
        )  # fmt: skip
        dynamics_losses, dynamics_metrics = dynamics.losses(posteriors, priors, wm_data, key=dynamics_key)
        clash = set(dynamics_losses) & (set(WORLD_MODEL_TERMS) | set(BEHAVIOUR_TERMS))
        if clash:
            raise ValueError(f"the dynamics' loss terms {sorted(clash)} clash with the agent's own terms")
        losses.update(dynamics_losses)
        metrics = {f"wm/rec_{k}": v.mean() for k, v in reconstruction.items()}
        metrics.update(dynamics_metrics)
        metrics["wm/reward_pred"] = dists.twohot_mean(reward_logits, reward_bins).mean()
        metrics["wm/cont_pred"] = jax.nn.sigmoid(cont_logit).mean()

        # 3. Imagination from every posterior state.
        starts = jax.tree.map(lambda x: x.reshape(batch_size * steps, *x.shape[2:]), latents)
        horizon = cfg.imagination.horizon
        backprop = cfg.actor_grad == "dynamics"
        # Dynamics backprop: the actor's gradient flows through the world model, never into it.
        wm_dynamics, reward_head, cont_head = (
            (frozen(dynamics), frozen(nets.reward), frozen(nets.cont)) if backprop else (dynamics, nets.reward, nets.cont)
        )
        trajectory, imagined_actions = imagine(
            wm_dynamics, nets.actor, starts, horizon, key=imagine_key, differentiable=backprop
        )
        imagined_features = wm_dynamics.features(trajectory)
        # Rewards on entering steps 1..H (the entry at step 0 is unused by the returns).
        imagined_reward = dists.twohot_mean(batched(reward_head, imagined_features[:, 1:]), reward_bins)
        imagined_reward = jnp.concatenate([jnp.zeros_like(imagined_reward[:, :1]), imagined_reward], 1)
        imagined_cont = jax.nn.sigmoid(batched(cont_head, imagined_features)[..., 0])
        imagined_cont = sg(imagined_cont)
        if not backprop:
            imagined_reward = sg(imagined_reward)
        trajectory_sg = sg(trajectory)

        def critic_targets(returns):
            return nets.behaviour.critic_targets(
                state.slow["behaviour"], dynamics, trajectory_sg, returns, imagined_cont, key=targets_key
            )

        value_bins = self._bins(cfg.critic.bins)
        behaviour_losses, returns, retnorm, behaviour_metrics = imagination_loss(
            nets.actor, nets.critic, state.slow["critic"], state.retnorm, imagined_features, imagined_actions,
            imagined_reward, imagined_cont, value_bins, lam=cfg.imagination.lam,
            entropy_scale=cfg.actor.entropy, slow_reg=cfg.critic.slow_reg, slow_target=cfg.critic.slow_target,
            critic_targets=critic_targets, actor_grad=cfg.actor_grad,
        )  # fmt: skip
        if not train:
            retnorm = state.retnorm
        for name, term in behaviour_losses.items():
            if name in losses:
                raise ValueError(f"loss term {name!r} is produced twice (world model and behaviour)")
            losses[name] = term.mean(1).reshape(batch_size, steps)
        metrics.update({f"ac/{k}": v for k, v in behaviour_metrics.items()})

        # 4. Critic on the replayed sequence, bootstrapped from the imagination returns.
        if cfg.repval:
            losses["repval"] = replay_value_loss(
                nets.critic, state.slow["critic"], features if cfg.reward_grad else sg(features), data["reward"],
                cont_target, data["is_last"].astype(jnp.float32), returns[:, 0].reshape(batch_size, steps),
                value_bins, lam=cfg.imagination.lam, slow_reg=cfg.critic.slow_reg,
            )  # fmt: skip
        else:
            losses["repval"] = jnp.zeros((batch_size, steps), jnp.float32)
        for name, term in losses.items():
            if term.shape != (batch_size, steps):
                raise ValueError(f"loss term {name!r} has shape {term.shape}, expected (B, T) = {(batch_size, steps)}")
        return losses, retnorm, metrics, latents

    def _total(self, losses: dict[str, Array]) -> tuple[Array, dict[str, Array]]:
        return optim.weighted_total(losses, self.config.loss_scales)


def make_agent(
    config: DreamerV3Config,
    obs_space: Mapping[str, Space],
    act_space: Mapping[str, Space],
    *,
    make_dynamics: MakeDynamics = make_rssm,
    make_behaviour: MakeBehaviour = make_no_extension,
    extra_report: ExtraReport | None = None,
) -> DreamerV3:
    """The AgentSpec `make`: DreamerV3 with the given latent dynamics (default: the RSSM), behaviour extension
    (default: none) and extra report (`extra_report(agent, nets, data, key=...)` with `data` the checked
    batch of `_split_batch`)."""
    agent = DreamerV3(config, dict(obs_space), dict(act_space), make_dynamics, make_behaviour, extra_report)
    split_keys(agent.obs_space)  # fail early on observation spaces without sensors
    check_compute_dtype(config.compute_dtype)
    layout = ActionLayout.from_spaces(agent.act_space)
    if config.actor_grad not in ("reinforce", "dynamics"):
        raise ValueError(f"actor_grad must be 'reinforce' or 'dynamics', got {config.actor_grad!r}")
    discrete = [p.key for p in layout.parts if p.discrete]
    if config.actor_grad == "dynamics" and discrete:
        raise ValueError(f"actor_grad 'dynamics' needs continuous actions; the action keys {discrete} are discrete")
    return agent
