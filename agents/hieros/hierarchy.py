"""The pieces of one Hieros level: its networks, its spaces, the subgoal and novelty rewards, the goal
autoencoder, and the level's world-model and actor-critic losses. agent.py stacks the levels.

Facts: /work/shared/reference/hieros_s5.md ("Hierarchy", "S5WM"). Level i (0 = the one acting in the
environment) has its own S5 world model, heads, goal autoencoder, goal-conditioned actor and one critic per
reward type it receives:

    extrinsic  the level's reward: the env reward at level 0, the window average of it above
    subgoal    symlog(max(0, g . s / max(|g|, |s|)^2)), g = the goal autoencoder's decoding of the code the
               level above chose, s = the level's deterministic feature (every level but the top one)
    novelty    symlog(mean((AE(s) - s)^2)), the goal autoencoder's reconstruction error (levels above 0)

Each reward type has its own critic, slow critic and percentile return normaliser; the actor's advantage is
sum_k w_k (R_k - v_k) / max(1, S_k) with w = (1.0, 0.3, 0.1). A level above 0 acts with 8 one-hot
categoricals of 8 classes (the 64-d code); the actor and critics of every level read [features, extra, goal
code] (goal zeros at the top level), where `extra` is upstream's "additional inputs" (`policy_input`). The S5WM's deterministic feature is already symlog-squashed (s5wm.py), so the
autoencoder reconstructs it as is (the reference's "symlog(deter)").
"""

from __future__ import annotations

from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from agents.common import distributions as dists
from agents.common import shards
from agents.common.actions import ActionLayout
from agents.common.behaviour import Actor, make_critic, policy_entropy, policy_log_prob, policy_sample
from agents.common.latents import categorical_kl_terms
from agents.common.nets import MLPHead, batched
from agents.common.observations import ObservationDecoder, ObservationEncoder
from agents.common.returns import PercentileNormalizer, lambda_return
from agents.hieros.config import HierosConfig
from agents.hieros.s5wm import S5WorldModel
from bench.spaces import Space

sg = jax.lax.stop_gradient

REWARDS = ("extrinsic", "subgoal", "novelty")
LEVEL_OBS = "obs"  # the vector observation key of the levels above 0
COSINE_EPS = 1e-8


def level_rewards(level: int, levels: int) -> tuple[str, ...]:
    """The reward types of `level` in a hierarchy of `levels`: no subgoal at the top, no novelty at level 0."""
    return tuple(
        name for name in REWARDS
        if name == "extrinsic" or (name == "subgoal" and level < levels - 1) or (name == "novelty" and level > 0)
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------ rewards


def max_cosine(goal: Float[Array, "*b D"], state: Float[Array, "*b D"]) -> Float[Array, " *b"]:
    """g . s / max(|g|, |s|)^2: 1 only when s equals g; shorter or longer states score less than cosine."""
    norm = jnp.maximum(jnp.linalg.norm(goal, axis=-1), jnp.linalg.norm(state, axis=-1))
    return jnp.sum(goal * state, -1) / jnp.maximum(jnp.square(norm), COSINE_EPS)


def subgoal_reward(goal: Float[Array, "*b D"], state: Float[Array, "*b D"]) -> Float[Array, " *b"]:
    """The subgoal reward: max-cosine clamped at 0, then symlog (reference "Hierarchy")."""
    return dists.symlog(jnp.maximum(max_cosine(goal, state), 0.0))


class GoalAutoencoder(eqx.Module):
    """deter -> 8 x 8 categorical code -> deter; the code space is the action space of the level above."""

    encoder: MLPHead
    decoder: MLPHead
    stoch: int = eqx.field(static=True)
    classes: int = eqx.field(static=True)
    unimix: float = eqx.field(static=True)
    kl: float = eqx.field(static=True)

    def __init__(self, size: int, *, stoch: int, classes: int, units: int, layers: int, unimix: float,
                 kl: float, key: PRNGKeyArray):  # fmt: skip
        enc_key, dec_key = jax.random.split(key)
        self.encoder = MLPHead(size, stoch * classes, units, layers, key=enc_key)
        self.decoder = MLPHead(stoch * classes, size, units, layers, key=dec_key)
        self.stoch, self.classes, self.unimix, self.kl = stoch, classes, unimix, kl

    @property
    def code_size(self) -> int:
        return self.stoch * self.classes

    def encode(self, state: Float[Array, " D"]) -> Float[Array, "S K"]:
        logits = self.encoder(state).reshape(self.stoch, self.classes)
        return dists.unimix_logits(logits, self.unimix)

    def decode(self, code: Float[Array, " C"]) -> Float[Array, " D"]:
        return self.decoder(code)

    def reconstruct(self, state: Float[Array, " D"]) -> Float[Array, " D"]:
        """Decoding of the code's mode (no sampling: the novelty reward is deterministic)."""
        log_probs = self.encode(state)
        mode = jax.nn.one_hot(jnp.argmax(log_probs, -1), self.classes, dtype=jnp.float32)
        return self.decode(mode.reshape(-1))

    def novelty(self, state: Float[Array, " D"]) -> Float[Array, ""]:
        """symlog of the mean squared reconstruction error: states the autoencoder has rarely seen score high."""
        return dists.symlog(jnp.mean(jnp.square(self.reconstruct(state) - state)))

    def loss(self, state: Float[Array, " D"], key: PRNGKeyArray) -> Float[Array, ""]:
        """MSE of a straight-through sampled code's decoding + kl * KL(q(code | s) || uniform) (reference)."""
        log_probs = self.encode(state)
        code = dists.sample_onehot(key, log_probs)
        mse = jnp.mean(jnp.square(self.decode(code.reshape(-1)) - state))
        uniform = jnp.full_like(log_probs, -jnp.log(float(self.classes)))
        return mse + self.kl * jnp.sum(dists.categorical_kl(log_probs, uniform))


# ------------------------------------------------------------------------------------------------ spaces


def goal_layout(config: HierosConfig) -> ActionLayout:
    """The action layout of a level above 0: `goal.stoch` categoricals of `goal.classes` (the 64-d code)."""
    g = config.goal
    width = len(str(g.stoch - 1))
    return ActionLayout.from_spaces({f"goal{j:0{width}d}": Space("int32", (), 0, g.classes) for j in range(g.stoch)})


def feature_size(config: HierosConfig) -> int:
    s = config.s5wm
    return s.stoch * s.classes + s.deter


EXTRA_INPUTS = 3  # predicted reward, continue probability, latent entropy


def latent_entropy(log_probs: Float[Array, "*b S K"]) -> Float[Array, " *b"]:
    """Entropy of the S independent categoricals of a latent (their sum), from unimixed log-probabilities."""
    return dists.categorical_entropy(log_probs).sum(-1)


def head_predictions(config: HierosConfig, nets: LevelNets, features: Float[Array, "*b F"]
                     ) -> tuple[Float[Array, " *b"], Float[Array, " *b"]]:  # fmt: skip
    """(the reward head's twohot mean, the continue head's probability) on features of any leading shape."""
    dims = features.ndim - 1
    reward = dists.twohot_mean(batched(nets.reward, features, dims=dims), dists.symexp_bins(config.reward_head.bins))
    return reward, jax.nn.sigmoid(batched(nets.cont, features, dims=dims)[..., 0])


def policy_input(config: HierosConfig, nets: LevelNets, features: Float[Array, "*b F"],
                 entropy: Float[Array, " *b"], goal: Float[Array, "*b G"],
                 predicted: tuple[Array, Array] | None = None) -> Float[Array, "*b P"]:  # fmt: skip
    """What the actor and the critics read: [features, extra, goal].

    With `config.additional_inputs` (upstream's `additional_inputs`, on in the Atari100k sweep and upstream's
    defaults) `extra` = symlog([predicted reward, continue probability, entropy of the latent's distribution]):
    the reward head's twohot mean and the continue head's probability on these features, and the posterior's
    entropy for observed states, the prior's for imagined ones (reference "S5WM"). They are inputs only: no
    actor or critic gradient reaches the heads through them. `predicted`: `head_predictions` of these features
    when the caller has them already.
    """
    parts = [features]
    if config.additional_inputs:
        reward, cont = head_predictions(config, nets, features) if predicted is None else predicted
        parts.append(sg(dists.symlog(jnp.stack([reward, cont, entropy], -1))))
    return jnp.concatenate([*parts, goal], -1)


def level_spaces(config: HierosConfig, level: int, obs_space: Mapping[str, Space],
                 act_space: Mapping[str, Space]) -> tuple[dict[str, Space], ActionLayout]:  # fmt: skip
    """(observation space, action layout) of a level: the env's at level 0; above, the `period` last latents
    of the level below and the goal code."""
    if level == 0:
        return dict(obs_space), ActionLayout.from_spaces(act_space)
    return {LEVEL_OBS: Space("float32", (config.period * feature_size(config),))}, goal_layout(config)


# ----------------------------------------------------------------------------------------------- networks


class LevelNets(eqx.Module):
    """The networks of one level. The model group (encoder .. goal) and the behaviour group (actor,
    critics) have their own optimiser settings (`MODEL_GROUP`)."""

    encoder: ObservationEncoder
    world: S5WorldModel
    decoder: ObservationDecoder
    reward: MLPHead
    cont: MLPHead
    goal: GoalAutoencoder
    actor: Actor
    critics: dict[str, MLPHead]


MODEL_GROUP = ("encoder", "world", "decoder", "reward", "cont", "goal")


def build_level(config: HierosConfig, level: int, levels: int, obs_space: Mapping[str, Space],
                act_space: Mapping[str, Space], *, key: PRNGKeyArray) -> LevelNets:  # fmt: skip
    spaces, layout = level_spaces(config, level, obs_space, act_space)
    keys = jax.random.split(key, 8 + len(REWARDS))
    s, enc, dec, mlp = config.s5wm, config.encoder, config.decoder, config.level_mlp
    units, layers = (enc.units, enc.layers) if level == 0 else (mlp.units, mlp.layers)
    encoder = ObservationEncoder(
        spaces, depth=enc.depth, mults=enc.mults, kernel=enc.kernel, minres=enc.minres, layers=layers,
        units=units, symlog_inputs=enc.symlog, act=enc.act, key=keys[0],
    )  # fmt: skip
    world = S5WorldModel(
        encoder.out_size, layout.size, stoch=s.stoch, classes=s.classes, hidden=s.hidden, width=s.width,
        deter=s.deter, blocks=s.blocks, state_size=s.state_size, ssm_blocks=s.ssm_blocks, act=s.act,
        block_act=s.block_act, dropout=s.dropout, unimix=s.unimix, key=keys[1],
    )  # fmt: skip
    features = world.feature_size
    units, layers = (dec.units, dec.layers) if level == 0 else (mlp.units, mlp.layers)
    decoder = ObservationDecoder(
        spaces, features, s.deter, s.stoch * s.classes, depth=dec.depth, mults=dec.mults, kernel=dec.kernel,
        minres=dec.minres, layers=layers, units=units, blocks=dec.blocks, outscale=dec.outscale, act=dec.act,
        key=keys[2],
    )  # fmt: skip
    rh, ch, ac, cr, g = config.reward_head, config.cont_head, config.actor, config.critic, config.goal
    reward = MLPHead(features, rh.bins, rh.units, rh.layers, act=rh.act, outscale=rh.outscale, key=keys[3])
    cont = MLPHead(features, 1, ch.units, ch.layers, act=ch.act, outscale=ch.outscale, key=keys[4])
    goal = GoalAutoencoder(s.deter, stoch=g.stoch, classes=g.classes, units=g.units, layers=g.layers,
                           unimix=g.unimix, kl=g.kl, key=keys[5])  # fmt: skip
    policy_in = features + EXTRA_INPUTS * config.additional_inputs + goal.code_size
    actor = Actor(
        policy_in, layout, ac.units, ac.layers, act=ac.act, outscale=ac.outscale, unimix=ac.unimix,
        min_std=ac.min_std, max_std=ac.max_std, key=keys[6],
    )  # fmt: skip
    critics = {
        name: make_critic(policy_in, cr.units, cr.layers, cr.bins, act=cr.act, outscale=cr.outscale, key=k)
        for name, k in zip(level_rewards(level, levels), keys[8:])
    }
    return LevelNets(encoder, world, decoder, reward, cont, goal, actor, critics)


# -------------------------------------------------------------------------------------------------- acting


def observe_step(nets: LevelNets, carry: dict[str, Array], sensors: Mapping[str, Array],
                 prev_action: Float[Array, "B A"], is_first: Bool[Array, " B"], *,
                 key: PRNGKeyArray) -> tuple[dict[str, Array], Float[Array, "B F"], Float[Array, " B"]]:  # fmt: skip
    """One filtering step of a batch with the recurrent S5 form: (new world-model carry, features [z, deter],
    the posterior's entropy)."""
    world = nets.world
    token = nets.encoder(sensors)
    states, _, deter = jax.vmap(world.step)(carry["states"], carry["stoch"], prev_action, is_first)
    log_probs = jax.vmap(world.posterior_logits)(token)
    stoch = dists.sample_onehot(key, log_probs)
    return {"states": states, "stoch": stoch}, world.features(stoch, deter), latent_entropy(log_probs)


# -------------------------------------------------------------------------------------------------- losses


class LevelData(eqx.Module):
    """A level's replayed batch, aligned on (B, T): `prev_actions[:, t]` led to step t (zero at t = 0: every
    sequence starts from a zero state, reference "S5WM"), `actions[:, t]` was taken there, `goal[:, t]` is the
    code of the level above that was active (zeros at the top level)."""

    sensors: dict[str, Array]
    actions: Float[Array, "B T A"]
    prev_actions: Float[Array, "B T A"]
    goal: Float[Array, "B T G"]
    reward: Float[Array, "B T"]
    is_first: Bool[Array, "B T"]
    is_terminal: Bool[Array, "B T"]
    is_last: Bool[Array, "B T"]


def imagine(config: HierosConfig, nets: LevelNets, start: dict[str, Array], deter: Float[Array, "N D"],
            entropy: Float[Array, " N"], goal: Float[Array, "N G"], horizon: int, *, key: PRNGKeyArray):  # fmt: skip
    """Roll the S5WM's recurrent step `horizon` steps from every start with the goal-conditioned actor.
    `entropy` is the starts' posterior entropy. Returns stochs (N, H+1, S, K), deters (N, H+1, D), entropies
    (N, H+1) and actions (N, H, A), all stop-gradiented."""
    world, actor = nets.world, nets.actor

    def step(carry, step_key):
        wm, stoch, deter, entropy = carry
        policy_key, world_key = jax.random.split(step_key)
        policy = jax.vmap(actor)(policy_input(config, nets, world.features(stoch, deter), entropy, goal))
        action = policy_sample(policy, actor.layout, policy_key)
        keys = shards.split(world_key, action.shape[0])
        wm, out = jax.vmap(shards.per_row(lambda c, a, k: world.imagine_step(c, a, key=k)))(wm, action, keys)
        entropy = latent_entropy(out["logits"])
        return (wm, out["stoch"], out["deter"], entropy), (out["stoch"], out["deter"], entropy, action)

    start = sg(start)
    init = (start, start["stoch"], sg(deter), sg(entropy))
    _, (stochs, deters, entropies, actions) = jax.lax.scan(step, init, jax.random.split(key, horizon))
    batch_major = lambda first, xs: sg(jnp.concatenate([first[:, None], jnp.swapaxes(xs, 0, 1)], 1))
    return (batch_major(start["stoch"], stochs), batch_major(sg(deter), deters),
            batch_major(sg(entropy), entropies), sg(jnp.swapaxes(actions, 0, 1)))  # fmt: skip


def filter_sequences(nets: LevelNets, data: LevelData, *, key: PRNGKeyArray) -> tuple[dict, dict]:
    """Posteriors and priors of the replayed (B, T) sequences: encoded, then filtered by the S5WM's parallel
    scan, every sequence from a zero state."""
    world = nets.world
    tokens = nets.encoder(data.sensors)
    initial = world.initial()
    _, post, prior = jax.vmap(shards.per_row(lambda t, a, f, k: world.observe(initial, t, a, f, key=k)))(
        tokens, data.prev_actions, data.is_first, shards.split(key, data.is_first.shape[0])
    )
    return post, prior


def imagination_starts(post: dict, data: LevelData) -> tuple[dict, Array, Array, Array]:
    """Every posterior state as an imagination start (B * T of them): S5 states and stoch, deter, posterior
    entropy, and the replayed goal (held fixed while imagining)."""
    flat = lambda x: x.reshape(-1, *x.shape[2:])
    start = {"states": flat(post["states"]), "stoch": flat(post["stoch"])}
    entropy = flat(latent_entropy(post["logits"]))
    return start, flat(post["deter"]), entropy, flat(data.goal.astype(jnp.float32))


def level_losses(config: HierosConfig, level: int, levels: int, nets: LevelNets, slow: dict[str, MLPHead],
                 retnorms: dict[str, PercentileNormalizer], data: LevelData, *, key: PRNGKeyArray
                 ) -> tuple[dict[str, Array], dict[str, PercentileNormalizer], dict[str, Array], dict]:  # fmt: skip
    """All loss terms of one level (B, T), its updated return normalisers, metrics, and the posteriors."""
    observe_key, imagine_key, goal_key = jax.random.split(key, 3)
    world = nets.world
    batch, steps = data.is_first.shape
    bins = dists.symexp_bins(config.reward_head.bins)
    value_bins = dists.symexp_bins(config.critic.bins)
    cont_target = (1.0 - data.is_terminal.astype(jnp.float32)) * config.imagination.discount

    # 1. Representation: encode, then filter every sequence with the parallel scan from a zero state.
    post, prior = filter_sequences(nets, data, key=observe_key)
    features = world.features(post["stoch"], post["deter"])

    # 2. World-model terms (DreamerV3's): reconstruction, reward, continue, KL with free nats.
    narrow = post["stoch"].reshape(batch, steps, -1)
    reconstruction = nets.decoder.loss(features, post["deter"], narrow, data.sensors)
    losses = {"rec": sum(reconstruction.values())}
    reward_logits = batched(nets.reward, features)
    losses["rew"] = dists.twohot_loss(reward_logits, data.reward.astype(jnp.float32), bins)
    cont_logit = batched(nets.cont, features)[..., 0]
    losses["con"] = dists.bernoulli_loss(cont_logit, cont_target)
    kl_terms, kl_metrics = categorical_kl_terms(post["logits"], prior["logits"], config.s5wm.free_nats)
    losses.update(kl_terms)
    metrics = {f"wm/{k}": v for k, v in kl_metrics.items()}
    metrics.update({f"wm/rec_{k}": v.mean() for k, v in reconstruction.items()})
    metrics["wm/reward_pred"] = dists.twohot_mean(reward_logits, bins).mean()

    # 3. Imagination with the recurrent step from every posterior state, the goal held fixed.
    start, deter, entropy, goal = imagination_starts(post, data)
    stochs, deters, entropies, actions = imagine(
        config, nets, start, deter, entropy, goal, config.imagination.horizon, key=imagine_key
    )
    imagined = world.features(stochs, deters)
    goals = jnp.broadcast_to(goal[:, None], (*imagined.shape[:2], goal.shape[-1]))
    predicted_reward, predicted_cont = head_predictions(config, nets, imagined)  # (N, H+1) each
    policy_in = policy_input(config, nets, imagined, entropies, goals, (predicted_reward, predicted_cont))

    # 4. The level's rewards on entering steps 1..H (entry 0 unused by the returns), continue flags.
    pad = lambda r: sg(jnp.concatenate([jnp.zeros_like(r[:, :1]), r], 1))
    rewards = {"extrinsic": pad(predicted_reward[:, 1:])}
    names = level_rewards(level, levels)
    if "subgoal" in names:
        target = jax.vmap(nets.goal.decode)(goal)
        rewards["subgoal"] = pad(subgoal_reward(target[:, None], deters[:, 1:]))
    if "novelty" in names:
        rewards["novelty"] = pad(batched(nets.goal.novelty, deters[:, 1:]))
    cont = sg(predicted_cont)
    weight = sg(jnp.cumprod(cont, 1)[:, :-1])

    # 5. One critic and return normaliser per reward type; advantages combined with the paper's weights.
    advantage, value_loss, new_norms = 0.0, 0.0, {}
    for name in names:
        logits = batched(nets.critics[name], policy_in)
        value = dists.twohot_mean(logits, value_bins)
        slow_value = dists.twohot_mean(batched(slow[name], policy_in[:, :-1]), value_bins)
        returns = lambda_return(rewards[name], cont, sg(value), config.imagination.lam)
        new_norms[name] = retnorms[name].update(returns)
        _, scale = new_norms[name].stats()
        advantage = advantage + getattr(config.rewards, name) * (returns - value[:, :-1]) / scale
        value_loss = value_loss + weight * (
            dists.twohot_loss(logits[:, :-1], sg(returns), value_bins)
            + config.slow_reg * dists.twohot_loss(logits[:, :-1], sg(slow_value), value_bins)
        )
        metrics[f"ac/{name}_reward"] = rewards[name][:, 1:].mean()
        metrics[f"ac/{name}_return"] = returns.mean()
        metrics[f"ac/{name}_scale"] = scale
    policy = batched(nets.actor, policy_in[:, :-1])
    log_prob = policy_log_prob(policy, nets.actor.layout, actions)
    entropy = policy_entropy(policy, nets.actor.layout)
    policy_loss = weight * -(log_prob * sg(advantage) + config.actor.entropy * entropy)
    per_start = lambda x: x.mean(1).reshape(batch, steps)
    losses["policy"] = per_start(policy_loss)
    losses["value"] = per_start(value_loss)
    metrics["ac/entropy"] = entropy.mean()
    metrics["ac/advantage"] = advantage.mean()

    # 6. The goal autoencoder learns the imagined states (only where a level uses it).
    if len(names) > 1:
        keys = shards.split(goal_key, deters.shape[:2])
        goal_loss = jax.vmap(jax.vmap(shards.per_row(nets.goal.loss)))(deters, keys)
        losses["goal"] = per_start(goal_loss)
    else:
        losses["goal"] = jnp.zeros((batch, steps), jnp.float32)
    return losses, new_norms, metrics, post
