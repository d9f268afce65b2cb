"""Imagination actor-critic of DreamerV3 (2024): actor and critic networks, imagined rollouts, and the losses.

* Rollouts start from every posterior state of the batch (N = B * T starts) and run `horizon` prior steps
  with actions sampled from the actor; the world model is not differentiated through them.
* Policy: REINFORCE for discrete and continuous actions, advantage (R - v) / max(1, S) where S is the EMA
  of the 5th-95th return percentile range, entropy bonus, each step weighted by the cumulative product of
  predicted continue flags (which carry the discount).
* Option `actor_grad="dynamics"` (DreamerV1's objective, continuous actions): the policy maximises the same
  normalised lambda return by differentiating it through the imagined trajectory (reparameterised action
  samples -> frozen dynamics -> frozen reward head and critic). The caller freezes the world model
  (`frozen`), so this gradient reaches the actor only.
* Critic: twohot cross-entropy towards the lambda returns plus a regulariser towards the slow critic's
  prediction; `repval` trains the critic on lambda returns of the replayed sequence bootstrapped from the
  imagination returns.

Networks take one example; the functions here work on (N, H, ...) batches.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from agents.common import distributions as dists
from agents.common.actions import ActionLayout
from agents.common.latents import Latent
from agents.common.nets import MLP, Linear, MLPHead, batched
from agents.common.returns import PercentileNormalizer, lambda_return

sg = jax.lax.stop_gradient


class NormalHead(eqx.Module):
    """Separate mean and std output layers of a continuous action key (upstream `bounded_normal` head): as
    two tensors, each gets its own per-tensor gradient clipping (AGC), exactly as upstream."""

    mean: Linear
    std: Linear

    def __init__(self, in_size: int, size: int, *, outscale: float, key: PRNGKeyArray):
        mean_key, std_key = jax.random.split(key)
        self.mean = Linear(in_size, size, outscale=outscale, key=mean_key)
        self.std = Linear(in_size, size, outscale=outscale, key=std_key)


class Actor(eqx.Module):
    """Features -> one distribution per action key (categorical with unimix, or bounded normal)."""

    mlp: MLP
    heads: tuple[Linear | NormalHead, ...]
    layout: ActionLayout = eqx.field(static=True)
    unimix: float = eqx.field(static=True)
    min_std: float = eqx.field(static=True)
    max_std: float = eqx.field(static=True)

    def __init__(self, feature_size: int, layout: ActionLayout, units: int, layers: int, *, act: str = "silu",
                 outscale: float = 0.01, unimix: float = 0.01, min_std: float = 0.1, max_std: float = 1.0,
                 key: PRNGKeyArray):  # fmt: skip
        keys = jax.random.split(key, 1 + len(layout.parts))
        self.mlp = MLP(feature_size, units, layers, act, key=keys[0])
        self.heads = tuple(
            Linear(self.mlp.out_size, part.size, outscale=outscale, key=k)
            if part.discrete
            else NormalHead(self.mlp.out_size, part.size, outscale=outscale, key=k)
            for part, k in zip(layout.parts, keys[1:])
        )
        self.layout = layout
        self.unimix = unimix
        self.min_std = min_std
        self.max_std = max_std

    def __call__(self, feature: Float[Array, " F"]) -> dict[str, dists.Categorical | dists.Normal]:
        x = self.mlp(feature)
        out = {}
        for part, head in zip(self.layout.parts, self.heads):
            if part.discrete:
                # Deliberate deviation: upstream configures policy unimix 0.01 but never applies it to
                # categorical actions; the paper describes the 1% mixture for the actor too, so we apply it.
                out[part.key] = dists.Categorical(dists.unimix_logits(head(x), self.unimix))
            else:
                mean, std = dists.bounded_normal(head.mean(x), head.std(x), self.min_std, self.max_std)
                out[part.key] = dists.Normal(mean, std)
        return out


def policy_sample(policy: dict, layout: ActionLayout, key: PRNGKeyArray) -> Float[Array, "*b A"]:
    keys = jax.random.split(key, len(layout.parts))
    return jnp.concatenate([policy[p.key].sample(k) for p, k in zip(layout.parts, keys)], -1)


def policy_mode(policy: dict, layout: ActionLayout) -> Float[Array, "*b A"]:
    return jnp.concatenate([policy[p.key].mode() for p in layout.parts], -1)


def policy_log_prob(policy: dict, layout: ActionLayout, action: Float[Array, "*b A"]) -> Float[Array, "*b"]:
    pieces = layout.split(action)
    return sum(policy[p.key].log_prob(pieces[p.key]) for p in layout.parts)


def policy_entropy(policy: dict, layout: ActionLayout) -> Float[Array, "*b"]:
    return sum(policy[p.key].entropy() for p in layout.parts)


def frozen(module):
    """`module` with every inexact array stop-gradiented: gradients flow through it, not into it."""
    return jax.tree.map(lambda x: sg(x) if eqx.is_inexact_array(x) else x, module)


def make_critic(feature_size: int, units: int, layers: int, bins: int, *, act: str = "silu",
                outscale: float = 0.0, key: PRNGKeyArray) -> MLPHead:
    """Features -> twohot logits over symexp bins; the output layer starts at zero (prediction exactly 0)."""
    return MLPHead(feature_size, bins, units, layers, act=act, outscale=outscale, key=key)


# --------------------------------------------------------------------------------------------- imagination


def imagine(
    dynamics: eqx.Module, actor: Actor, start: Latent, horizon: int, *, key: PRNGKeyArray,
    differentiable: bool = False,
) -> tuple[Latent, Float[Array, "N H A"]]:
    """Roll the prior forward `horizon` steps from `start` (N, ...) with actions sampled from the actor.

    `dynamics` has `features(latent)` and `imagine_step(latent, action, key=)` (e.g. an `AbstractDynamics`
    of agents/dreamerv3/dynamics.py).

    Returns the latents (N, H+1, ...) including the start and the actions (N, H, A) taken at steps 0..H-1.
    The start is always stop-gradiented; the trajectory and actions too unless `differentiable` (the
    dynamics-backprop actor gradient, with a `frozen` dynamics). The actor's inputs are always
    stop-gradiented, as in DreamerV1/V2.
    """

    # Keys the dynamics needs only to carry its state (TSSM's key/value window) stay out of the trajectory.
    carry_only = getattr(dynamics, "carry_only", ())
    kept = lambda latent: {k: v for k, v in latent.items() if k not in carry_only}  # noqa: E731

    def step(latent, step_key):
        policy_key, dynamics_key = jax.random.split(step_key)
        # The actor reads stop-gradiented features (DreamerV1 `_imagine_ahead`, DreamerV2 `imagine`): with
        # `differentiable`, the return's gradient reaches an action through the dynamics and the later
        # states, never back through the policy's own dependence on those states.
        policy = jax.vmap(actor)(sg(dynamics.features(latent)))
        action = policy_sample(policy, actor.layout, policy_key)
        following = dynamics.imagine_step(latent, action, key=dynamics_key)
        return following, (kept(following), action)

    start = sg(start)
    _, (latents, actions) = jax.lax.scan(step, start, jax.random.split(key, horizon))
    to_batch_major = lambda x: jnp.swapaxes(x, 0, 1)
    latents = jax.tree.map(lambda s, x: jnp.concatenate([s[:, None], to_batch_major(x)], 1), kept(start), latents)
    if differentiable:
        return latents, to_batch_major(actions)
    return sg(latents), sg(to_batch_major(actions))


CriticTargets = Callable[[Float[Array, "N H"]], tuple[Float[Array, "N H"], dict, dict]]


def imagination_loss(
    actor: Actor,
    critic: MLPHead,
    slow_critic: MLPHead,
    normalizer: PercentileNormalizer,
    features: Float[Array, "N H+1 F"],
    actions: Float[Array, "N H A"],
    reward: Float[Array, "N H+1"],
    cont: Float[Array, "N H+1"],
    bins: Float[Array, " K"],
    *,
    lam: float = 0.95,
    entropy_scale: float = 3e-4,
    slow_reg: float = 1.0,
    slow_target: bool = False,
    critic_targets: CriticTargets | None = None,
    actor_grad: str = "reinforce",
) -> tuple[dict[str, Float[Array, "N H"]], Float[Array, "N H"], PercentileNormalizer, dict[str, Array]]:
    """Policy and value losses (N, H) over an imagined trajectory (upstream `imag_loss`).

    `cont` are the predicted continue probabilities with the discount folded in. Returns (losses, lambda
    returns, updated normaliser, metrics). `critic_targets(returns)` may replace the critic's regression
    targets (THICK); its extra loss terms are returned alongside `policy` and `value`.

    `actor_grad="dynamics"`: `features` and `reward` carry gradients from the actions (through a frozen
    world model); the policy loss is -(R_lambda - v) / S - entropy with R_lambda differentiated through
    them and a frozen critic. Everything else (critic loss, normaliser, metrics) sees stop-gradiented values.
    """
    if actor_grad not in ("reinforce", "dynamics"):
        raise ValueError(f"actor_grad must be 'reinforce' or 'dynamics', got {actor_grad!r}")
    differentiable_features, differentiable_reward = features, reward
    features, reward = sg(features), sg(reward)
    critic_logits = batched(critic, features)
    value = dists.twohot_mean(critic_logits, bins)
    horizon = actions.shape[1]
    # The slow critic is needed on the last step only when it also provides the bootstrap values.
    slow_all = dists.twohot_mean(batched(slow_critic, features if slow_target else features[:, :-1]), bins)
    slow_value = slow_all[:, :horizon]
    bootstrap = sg(slow_all if slow_target else value)
    target_value = bootstrap[:, :-1]
    returns = lambda_return(reward, cont, bootstrap, lam)
    # Weight of step t: probability the imagined episode is still running (discount folded in).
    weight = sg(jnp.cumprod(cont, 1)[:, :-1])

    normalizer = normalizer.update(returns)
    _, scale = normalizer.stats()
    advantage = (returns - target_value) / scale

    policy = batched(actor, features[:, :-1])
    if actor_grad == "dynamics":
        entropy = policy_entropy(policy, actor.layout)
        # DreamerV1: maximise the lambda return itself, differentiated through the imagined trajectory. The
        # critic is frozen here (its own loss below trains it); the baseline and scale carry no gradient.
        differentiable_value = dists.twohot_mean(batched(frozen(critic), differentiable_features), bins)
        objective = lambda_return(differentiable_reward, cont, differentiable_value, lam)
        policy_loss = weight * -((objective - sg(target_value)) / scale + entropy_scale * entropy)
    else:
        log_prob = policy_log_prob(policy, actor.layout, sg(actions))
        entropy = policy_entropy(policy, actor.layout)
        policy_loss = weight * -(log_prob * sg(advantage) + entropy_scale * entropy)

    extra_losses, extra_metrics = {}, {}
    targets = returns
    if critic_targets is not None:
        targets, extra_losses, extra_metrics = critic_targets(returns)
    value_loss = weight * (
        dists.twohot_loss(critic_logits[:, :-1], sg(targets), bins)
        + slow_reg * dists.twohot_loss(critic_logits[:, :-1], sg(slow_value), bins)
    )
    metrics = {
        "ret": returns.mean(),
        "ret_rate": (jnp.abs(returns) >= 0.5).mean(),
        "adv": advantage.mean(),
        "adv_mag": jnp.abs(advantage).mean(),
        "value": value.mean(),
        "entropy": entropy.mean(),
        "retnorm_low": normalizer.low,
        "retnorm_high": normalizer.high,
        "retnorm_scale": scale,
        "weight": weight.mean(),
        **extra_metrics,
    }
    return {"policy": policy_loss, "value": value_loss, **extra_losses}, returns, normalizer, metrics


def replay_value_loss(
    critic: MLPHead,
    slow_critic: MLPHead,
    features: Float[Array, "B T F"],
    reward: Float[Array, "B T"],
    cont: Float[Array, "B T"],
    is_last: Float[Array, "B T"],
    bootstrap: Float[Array, "B T"],
    bins: Float[Array, " K"],
    *,
    lam: float = 0.95,
    slow_reg: float = 1.0,
) -> Float[Array, "B T"]:
    """The `repval` critic loss over the replayed sequence (upstream `repl_loss`), as (B, T).

    Lambda returns along the real sequence bootstrap from the imagination returns at each step (`bootstrap`)
    and restart at episode ends. Steps that end an episode get zero weight, and so does the last step, which
    has no return; the values are rescaled by T / (T - 1) so the mean over (B, T) equals upstream's mean
    over its (B, T - 1) terms. Gradients reach the world model through `features`.
    """
    steps = features.shape[1]
    returns = lambda_return(reward, cont, sg(bootstrap), lam, last=is_last)
    logits = batched(critic, features[:, :-1])
    slow_value = dists.twohot_mean(batched(slow_critic, sg(features[:, :-1])), bins)
    weight = 1.0 - is_last[:, :-1]
    loss = weight * (
        dists.twohot_loss(logits, sg(returns), bins) + slow_reg * dists.twohot_loss(logits, sg(slow_value), bins)
    )
    loss = jnp.concatenate([loss, jnp.zeros_like(loss[:, :1])], 1)
    return loss * (steps / (steps - 1))
