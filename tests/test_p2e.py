"""Plan2Explore: the disagreement reward by hand (numpy), the ensemble's one-step regression targets and the
time alignment of the exploration reward, and which actor acts (exploration for training data, task at eval)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.p2e import SPEC, Ensemble, disagreement
from agents.p2e.agent import ensemble_loss, exploration_reward
from bench import config as config_lib
from bench import registry
from tasks import toy


def small_ensemble(in_size=5, out_size=3, members=4, seed=0) -> Ensemble:
    return Ensemble(in_size, out_size, members, 8, 1, act="silu", key=jax.random.key(seed))


def member_outputs(ensemble: Ensemble, x: np.ndarray) -> np.ndarray:
    """(K, D) predictions of one input, member by member (each head called on its own)."""
    members = jax.tree.leaves(eqx.filter(ensemble.heads, eqx.is_array))[0].shape[0]
    arrays, static = eqx.partition(ensemble.heads, eqx.is_array)
    heads = [eqx.combine(jax.tree.map(lambda a: a[k], arrays), static) for k in range(members)]
    return np.stack([np.asarray(head(jnp.asarray(x))) for head in heads])


def test_disagreement_is_zero_when_the_ensemble_agrees():
    rng = np.random.default_rng(0)
    one = rng.normal(size=(6, 7)).astype(np.float32)
    agreeing = np.broadcast_to(one, (5, 6, 7))
    np.testing.assert_array_equal(disagreement(jnp.asarray(agreeing)), np.zeros(6, np.float32))
    # and an ensemble whose members share their weights disagrees nowhere
    ensemble = small_ensemble()
    shared = eqx.tree_at(lambda e: e.heads, ensemble,
                         jax.tree.map(lambda a: jnp.broadcast_to(a[:1], a.shape) if eqx.is_array(a) else a,
                                      ensemble.heads))  # fmt: skip
    features = jnp.asarray(rng.normal(size=(3, 5, 4)), jnp.float32)
    actions = jnp.asarray(rng.normal(size=(3, 4, 1)), jnp.float32)
    _, intrinsic = exploration_reward(shared, features, actions, jnp.zeros((3, 4)), 1.0, 0.0)
    np.testing.assert_array_equal(intrinsic, 0.0)
    _, intrinsic = exploration_reward(ensemble, features, actions, jnp.zeros((3, 4)), 1.0, 0.0)
    assert float(intrinsic.min()) > 0.0


def test_disagreement_equals_the_ensemble_variance_by_hand():
    rng = np.random.default_rng(1)
    predictions = rng.normal(size=(5, 2, 3, 4))  # K=5 members, (2, 3) inputs, 4 dims
    expected = np.zeros((2, 3))
    for i in range(2):
        for j in range(3):
            total = 0.0
            for d in range(4):
                values = predictions[:, i, j, d]
                mean = sum(values) / 5
                total += sum((v - mean) ** 2 for v in values) / (5 - 1)  # the paper's 1/(K-1) variance
            expected[i, j] = total / 4
    np.testing.assert_allclose(disagreement(jnp.asarray(predictions, jnp.float32)), expected, rtol=1e-5)


def test_ensemble_regresses_the_next_target_and_skips_episode_starts():
    rng = np.random.default_rng(2)
    b, t, f, a, d = 2, 4, 3, 2, 3
    ensemble = small_ensemble(in_size=f + a, out_size=d)
    features = rng.normal(size=(b, t, f)).astype(np.float32)
    actions = rng.normal(size=(b, t, a)).astype(np.float32)
    targets = rng.normal(size=(b, t, d)).astype(np.float32)
    is_first = np.zeros((b, t), bool)
    is_first[0, 2] = True  # the transition 1 -> 2 of sequence 0 crosses into a new episode
    got = np.asarray(ensemble_loss(ensemble, jnp.asarray(features), jnp.asarray(actions), jnp.asarray(targets),
                                   jnp.asarray(is_first)))  # fmt: skip
    expected = np.zeros((b, t))
    for i in range(b):
        for s in range(t - 1):
            if is_first[i, s + 1]:
                continue
            pred = member_outputs(ensemble, np.concatenate([features[i, s], actions[i, s]]))
            expected[i, s] = ((pred - targets[i, s + 1][None]) ** 2).sum()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert expected[0, 1] == 0.0 and got[0, 1] == 0.0 and expected[1, 1] > 0


def test_exploration_reward_is_the_disagreement_of_the_transition_into_each_step():
    rng = np.random.default_rng(3)
    n, h, f, a = 2, 3, 3, 2
    ensemble = small_ensemble(in_size=f + a, out_size=4)
    features = rng.normal(size=(n, h + 1, f)).astype(np.float32)
    actions = rng.normal(size=(n, h, a)).astype(np.float32)
    extrinsic = rng.normal(size=(n, h)).astype(np.float32)
    reward, _ = exploration_reward(ensemble, jnp.asarray(features), jnp.asarray(actions), jnp.asarray(extrinsic),
                                   0.7, 0.2)  # fmt: skip
    for i in range(n):
        assert float(reward[i, 0]) == 0.0  # the entry of the start state is not a reward
        for s in range(1, h + 1):
            pred = member_outputs(ensemble, np.concatenate([features[i, s - 1], actions[i, s - 1]]))
            variance = ((pred - pred.mean(0)) ** 2).sum(0) / (len(pred) - 1)
            np.testing.assert_allclose(float(reward[i, s]), 0.7 * variance.mean() + 0.2 * extrinsic[i, s - 1],
                                       rtol=1e-5)  # fmt: skip


def build(task="reach", **overrides):
    config = registry.build_config(SPEC, toy.SUITE, ["debug"], {"batch_size": 2, "batch_length": 4,
                                                               "imagination.horizon": 3, **overrides}, task=task)  # fmt: skip
    env = toy.make_env(task, config.env)
    return SPEC.make(config.agent, env.obs_space, env.act_space), env


@pytest.mark.slow  # compiles four policy steps (~30-90 s on a shared CPU)
@pytest.mark.parametrize("train_actor", ["expl", "task"])
def test_the_configured_actor_acts(train_actor):
    agent, env = build(**{"expl.train_actor": train_actor})
    state = agent.init(key=jax.random.key(0))
    # Both actors start near uniform (output scale 0.01); sharpen the exploration actor so the two differ.
    state = eqx.tree_at(lambda s: s.expl.actor.heads, state,
                        jax.tree.map(lambda w: 300.0 * w, state.expl.actor.heads))  # fmt: skip
    obs = {k: np.stack([v, v]) for k, v in env.reset(seed=0).items()}
    carry = agent.initial_carry(state, 2)
    act = eqx.filter_jit(lambda agent, state, key, mode: agent.act(state, carry, obs, key=key, mode=mode)[1])
    with_expl = eqx.tree_at(lambda s: s.nets.actor, state.base, state.expl.actor)
    # The two actors disagree on this observation (so acting with the wrong one is caught): their actions
    # under the same key differ.
    keys = [jax.random.key(i) for i in range(6)]
    task_actions = [act(agent.base, state.base, k, "train")["action"] for k in keys]
    expl_actions = [act(agent.base, with_expl, k, "train")["action"] for k in keys]
    assert any(np.any(a != b) for a, b in zip(task_actions, expl_actions))
    expected = task_actions if train_actor == "task" else expl_actions
    for k, want in zip(keys, expected):
        np.testing.assert_array_equal(act(agent, state, k, "train")["action"], want)
    for k, want in zip(keys, task_actions):  # evaluation episodes: the task actor (expl.eval_actor default)
        np.testing.assert_array_equal(act(agent, state, k, "eval")["action"], want)


def test_bad_choices_are_rejected_with_the_field_name():
    with pytest.raises(ValueError, match="expl.train_actor"):
        build(**{"expl.train_actor": "random"})
    with pytest.raises(ValueError, match="ensemble.target"):
        build(**{"ensemble.target": "embed"})
    with pytest.raises(config_lib.ConfigError, match="ensemble.members"):
        build(**{"ensemble.members": 1})


@pytest.mark.parametrize("episodic", [True, False])
def test_non_episodic_exploration_returns_ignore_predicted_terminals(episodic):
    """`expl.episodic: false`: the exploration returns run on past a predicted terminal, discounted only.

    The continue head is set to predict a terminal everywhere (sigmoid(-30) ~ 0). The exploration
    actor-critic's step weights are cumprod(continue)[:-1] (DreamerV3's imagination weights): ~0 when episodic;
    non-episodic, gamma^(t+1) for t = 0..H-1 with gamma = 1 - 1 / discount_horizon, by hand."""
    horizon, discount_horizon = 3, 10
    agent, _ = build(**{"expl.episodic": episodic, "imagination.horizon": horizon,
                        "imagination.discount_horizon": discount_horizon})  # fmt: skip
    state = agent.init(key=jax.random.key(0))
    nets = state.base.nets
    terminal = eqx.tree_at(lambda c: (c.out.weight, c.out.bias), nets.cont,
                           (jnp.zeros_like(nets.cont.out.weight), jnp.full_like(nets.cont.out.bias, -30.0)))  # fmt: skip
    nets = eqx.tree_at(lambda n: n.cont, nets, terminal)
    batch, steps = 2, 4
    start = nets.dynamics.initial(batch)
    latents = jax.tree.map(lambda x: jnp.broadcast_to(x[:, None], (batch, steps, *x.shape[1:])), start)
    actions = jnp.zeros((batch, steps, agent.base.layout.size), jnp.float32)
    is_first = jnp.zeros((batch, steps), bool)
    _, _, metrics = agent._exploration_losses(state.expl, state, nets, latents, actions, is_first,
                                              key=jax.random.key(1))  # fmt: skip
    gamma = 1.0 - 1.0 / discount_horizon
    expected = 0.0 if episodic else np.mean([gamma ** (t + 1) for t in range(horizon)])
    np.testing.assert_allclose(float(metrics["expl/weight"]), expected, atol=1e-6)
