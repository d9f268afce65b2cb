"""DreamerV3 options of issue 17: Gaussian RSSM latents (DreamerV1/2) and the dynamics-backprop actor gradient.

Goldens come from the formulas (numpy here): the diagonal-normal KL
KL(p || q) = sum_i log(s_q / s_p) + (s_p^2 + (m_p - m_q)^2) / (2 s_q^2) - 1/2, clipped below at the free nats,
and std = softplus(raw) + min_std (DreamerV1/2; see agents/dreamerv3/rssm.py)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.common.latents import gaussian_kl_terms, gaussian_stats
from agents.dreamerv3.rssm import RSSM
from bench import config as config_lib
from bench import registry, spaces
from agents.dreamerv3.config import DreamerV3Config

SMALL = {"batch_size": 2, "batch_length": 4, "imagination.horizon": 3}  # as tests/test_agent_contract.py


def make_obs(agent, rng: np.random.Generator, first) -> dict:
    n = len(first)
    obs = {k: agent.obs_space[k].sample(rng, (n,)) for k in spaces.sensor_keys(agent.obs_space)}
    obs.update(reward=np.zeros(n, np.float32), is_first=np.asarray(first, bool), is_last=np.zeros(n, bool),
               is_terminal=np.zeros(n, bool))  # fmt: skip
    return obs


def make_batch(agent, extras: dict, rng: np.random.Generator) -> dict:
    """Random (B, T) sequences shaped like the agent's training stream, with `act`'s extras."""
    stream = agent.streams()["train"]
    b, t = stream.batch, stream.total_length
    batch = {k: np.stack([agent.obs_space[k].sample(rng, (t,)) for _ in range(b)])
             for k in spaces.sensor_keys(agent.obs_space)}  # fmt: skip
    batch["reward"] = rng.normal(size=(b, t)).astype(np.float32)
    batch["is_first"] = rng.uniform(size=(b, t)) < 0.2
    batch["is_last"] = np.roll(batch["is_first"], -1, axis=1)
    batch["is_terminal"] = batch["is_last"] & (rng.uniform(size=(b, t)) < 0.5)
    for key, space in agent.act_space.items():
        batch[key] = space.sample(rng, (b, t))
    for key, value in extras.items():
        batch[key] = rng.uniform(size=(b, t, *value.shape[1:])).astype(value.dtype)
    return batch


def test_gaussian_kl_with_free_nats_by_hand():
    rng = np.random.default_rng(0)
    shape = (2, 3, 4)  # B, T, S
    m_p, m_q = rng.normal(size=shape), rng.normal(size=shape)
    s_p, s_q = rng.uniform(0.2, 2.0, size=shape), rng.uniform(0.2, 2.0, size=shape)
    kl = (np.log(s_q / s_p) + (s_p**2 + (m_p - m_q) ** 2) / (2 * s_q**2) - 0.5).sum(-1)
    free = float(np.median(kl))  # half the entries are clipped
    post = jnp.asarray(np.stack([m_p, s_p], -1), jnp.float32)
    prior = jnp.asarray(np.stack([m_q, s_q], -1), jnp.float32)
    losses, metrics = gaussian_kl_terms(post, prior, free)
    np.testing.assert_allclose(np.asarray(losses["dyn"]), np.maximum(kl, free), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(losses["rep"]), np.maximum(kl, free), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["dyn_kl"]), kl.mean(), rtol=1e-5)
    # Below the free nats the term is constant: no gradient; above it, dyn trains only the prior.
    grad_post, grad_prior = jax.grad(lambda a, b: gaussian_kl_terms(a, b, free)[0]["dyn"].sum(), (0, 1))(post, prior)
    clipped = kl <= free
    assert np.all(np.asarray(grad_prior)[clipped] == 0) and np.any(np.asarray(grad_prior)[~clipped] != 0)
    assert np.all(np.asarray(grad_post) == 0)


def test_gaussian_std_is_softplus_plus_min_std():
    raw = jnp.asarray([[0.3, -4.0], [-1.0, 2.0]], jnp.float32)
    stats = np.asarray(gaussian_stats(raw, 0.1))
    np.testing.assert_allclose(stats[:, 0], [0.3, -1.0])
    np.testing.assert_allclose(stats[:, 1], np.log1p(np.exp([-4.0, 2.0])) + 0.1, rtol=1e-6)


def test_gaussian_rssm_filters_and_imagines():
    rssm = RSSM(5, 2, deter=8, hidden=8, stoch=3, classes=4, blocks=2, latent="gaussian", min_std=0.1,
                key=jax.random.key(0))  # fmt: skip
    assert rssm.feature_size == 8 + 3
    tokens = jax.random.normal(jax.random.key(1), (2, 4, 5))
    actions = jax.random.normal(jax.random.key(2), (2, 4, 2))
    first = jnp.zeros((2, 4), bool).at[:, 0].set(True)
    observe = eqx.filter_jit(lambda m, *a, key: m.observe(*a, key=key))
    last, posts, priors = observe(rssm, rssm.initial(2), tokens, actions, first, key=jax.random.key(3))
    assert posts["stoch"].shape == (2, 4, 3) and posts["logits"].shape == (2, 4, 3, 2)
    assert np.all(np.asarray(posts["logits"][..., 1]) > 0.1) and np.all(np.asarray(priors["logits"][..., 1]) > 0.1)
    following = rssm.imagine_step(last, actions[:, 0], key=jax.random.key(4))
    assert rssm.features(following).shape == (2, 11)
    with pytest.raises(ValueError, match="rssm.latent"):
        RSSM(5, 2, deter=8, hidden=8, stoch=3, classes=4, blocks=2, latent="beta", key=jax.random.key(0))


# -------------------------------------------------------------------------------- dynamics-backprop actor


VECTOR_OBS = {"vector": spaces.box((3,), -10.0, 10.0), **spaces.step_spaces()}  # no CNN: compiles faster
CONTINUOUS_ACT = {"move": spaces.box((2,), -1.0, 1.0)}


def build_agent(act_space=CONTINUOUS_ACT, **overrides):
    """DreamerV3's `debug` preset, shrunk, on a vector observation."""
    spec = registry.get_agent("dreamerv3")
    config = config_lib.Config(
        run=config_lib.RunConfig(), replay=config_lib.ReplayConfig(), logger=config_lib.LoggerConfig(),
        env=config_lib.RunConfig(), agent=DreamerV3Config(),
    )  # fmt: skip
    preset = registry.agent_presets(spec)["debug"]
    config = config_lib.apply(config, {k: v for k, v in preset.items() if k not in ("run", "replay")})
    config = config_lib.apply(config, {**SMALL, **overrides})
    return spec.make(config.agent, VECTOR_OBS, act_space)


@eqx.filter_jit
def policy_gradient(agent, state, batch):
    params, static = eqx.partition(state.nets, eqx.is_inexact_array)

    def loss(params):
        losses, *_ = agent._losses(eqx.combine(params, static), state, batch, key=jax.random.key(7), train=True)
        return losses["policy"].mean()

    return jax.grad(loss)(params)


def norm(tree) -> float:
    return float(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def test_dynamics_backprop_reaches_the_actor_through_the_world_model_only():
    agent = build_agent(actor_grad="dynamics", **{"actor.entropy": 0.0})
    state = agent.init(key=jax.random.key(0))
    # The reward and critic output layers start at zero (predictions exactly 0, DreamerV3's init), which
    # would make the return independent of the trajectory: give them weights as after some training.
    randomise = lambda w: 0.3 * jax.random.normal(jax.random.key(8), w.shape)  # noqa: E731
    nets = eqx.tree_at(lambda n: (n.reward.out.weight, n.critic.out.weight), state.nets, replace_fn=randomise)
    state = eqx.tree_at(lambda s: s.nets, state, nets)
    rng = np.random.default_rng(0)
    _, _, extras = agent.act(state, agent.initial_carry(state, 2), make_obs(agent, rng, [True, True]),
                             key=jax.random.key(1), mode="train")  # fmt: skip
    batch = make_batch(agent, extras, rng)
    grads = policy_gradient(agent, state, batch)
    for name in ("encoder", "dynamics", "decoder", "reward", "cont", "critic"):
        assert norm(getattr(grads, name)) == 0.0, f"the actor's loss trains {name}"
    assert norm(grads.actor) > 0.0
    # Cut the actions out of the dynamics: with no entropy bonus, the gradient only ever came through it.
    cut = eqx.tree_at(lambda n: n.dynamics.core.action_in.linear.weight, state.nets,
                      replace_fn=jnp.zeros_like)  # fmt: skip
    cut_state = eqx.tree_at(lambda s: s.nets, state, cut)
    assert norm(policy_gradient(agent, cut_state, batch).actor) == 0.0


def test_dynamics_backprop_needs_continuous_actions():
    with pytest.raises(ValueError, match="continuous actions"):
        build_agent({"action": spaces.discrete(3)}, actor_grad="dynamics")


class LinearDynamics(eqx.Module):
    """x_{t+1} = x_t + a_t M: a dynamics whose return gradient is known in closed form."""

    mix: jax.Array  # M, (A, F)

    def features(self, latent):
        return latent["x"]

    def imagine_step(self, latent, action, *, key):
        del key
        return {"x": latent["x"] + action @ self.mix}


def test_dynamics_backprop_gradient_is_dreamerv1s_with_the_actors_inputs_stopped():
    # DreamerV1 (`_imagine_ahead`) and DreamerV2 (`imagine`) feed the actor sg(features): for J = sum_t w.x_t
    # over t = 1..H, dJ/da_t = (H - t) M w (every later state moves by a_t M), and the actor's gradient is
    # sum_t (dJ/da_t) . da_t/dtheta at the visited states held fixed, with no path back through x_t(theta).
    from agents.common.actions import ActionLayout
    from agents.common.behaviour import Actor, imagine

    rng = np.random.default_rng(0)
    features, horizon, starts = 3, 4, 5
    layout = ActionLayout.from_spaces(CONTINUOUS_ACT)
    # Equal min and max std: the sample is the tanh mean (up to 1e-6), so the golden needs no noise.
    actor = Actor(features, layout, 16, 1, outscale=1.0, min_std=1e-6, max_std=1e-6, key=jax.random.key(0))
    mix = rng.normal(size=(layout.size, features))
    w = rng.normal(size=features)
    dynamics = LinearDynamics(jnp.asarray(mix, jnp.float32))
    start = {"x": jnp.asarray(rng.normal(size=(starts, features)), jnp.float32)}

    def objective(actor):
        latents, _ = imagine(dynamics, actor, start, horizon, key=jax.random.key(1), differentiable=True)
        return jnp.sum(latents["x"][:, 1:] @ jnp.asarray(w, jnp.float32))

    grads = eqx.filter_grad(objective)(actor)
    latents, _ = imagine(dynamics, actor, start, horizon, key=jax.random.key(1))
    visited = np.asarray(latents["x"][:, :horizon])  # x_0 .. x_{H-1}, where the actions are taken
    per_action = np.stack([(horizon - t) * (mix @ w) for t in range(horizon)])  # dJ/da_t, (H, A)

    def surrogate(actor):  # sum_t (dJ/da_t) . mean(theta, x_t) with x_t constants
        means = jax.vmap(jax.vmap(lambda x: actor(x)["move"].mean))(jnp.asarray(visited, jnp.float32))
        return jnp.sum(means * jnp.asarray(per_action, jnp.float32)[None])

    expected = eqx.filter_grad(surrogate)(actor)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5)
    assert norm(expected) > 0.0
