"""Hieros' hierarchy (agents/hieros/hierarchy.py, agent.py) against /work/shared/reference/hieros_s5.md
("Hierarchy"): the subgoal and novelty rewards by hand in numpy, which level gets which reward, the clocks
of the levels (level i acts every 4^i env steps), the replay rows of the higher levels, and the contract."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.hieros import hierarchy as hi
from bench import registry
from bench.contract import check_agent

SPEC = "agents.hieros:SPEC"


def _symlog(x):
    return np.sign(x) * np.log1p(np.abs(x))


# ------------------------------------------------------------------------------------------------ rewards


def _subgoal_numpy(g, s):
    """Reference: g . s / max(|g|, |s|)^2, clamped at 0, then symlog."""
    norm = max(np.linalg.norm(g), np.linalg.norm(s))
    return _symlog(max(float(np.dot(g, s)) / norm**2, 0.0))


def test_subgoal_reward_by_hand():
    rng = np.random.default_rng(0)
    g = rng.normal(size=6)
    cases = [
        (g, g, np.log(2.0)),  # reaching the goal: max-cosine 1
        (g, 2.0 * g, np.log(1.5)),  # twice as long: 2|g|^2 / (2|g|)^2 = 0.5
        (g, 0.5 * g, np.log(1.5)),  # half as long: symmetric
        (g, -g, 0.0),  # opposite: clamped at zero
    ]
    for goal, state, expected in cases:
        got = float(hi.subgoal_reward(jnp.asarray(goal, jnp.float32), jnp.asarray(state, jnp.float32)))
        assert got == pytest.approx(expected, abs=1e-6)
    goals, states = rng.normal(size=(20, 6)), rng.normal(size=(20, 6))
    got = np.asarray(hi.subgoal_reward(jnp.asarray(goals, jnp.float32), jnp.asarray(states, jnp.float32)))
    expected = np.array([_subgoal_numpy(a, b) for a, b in zip(goals, states)])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert (expected == 0).any() and (expected > 0).any()  # both branches of the clamp are exercised


class _Linear(eqx.Module):
    weight: jax.Array

    def __call__(self, x):
        return self.weight @ x


def test_novelty_is_the_symlog_reconstruction_error_of_the_code_mode():
    stoch, classes, size = 3, 4, 5
    rng = np.random.default_rng(1)
    enc_w = rng.normal(size=(stoch * classes, size))
    dec_w = rng.normal(size=(size, stoch * classes))
    ae = hi.GoalAutoencoder(size, stoch=stoch, classes=classes, units=8, layers=1, unimix=0.01, kl=0.5,
                            key=jax.random.PRNGKey(0))  # fmt: skip
    ae = eqx.tree_at(lambda m: (m.encoder, m.decoder), ae,
                     (_Linear(jnp.asarray(enc_w, jnp.float32)), _Linear(jnp.asarray(dec_w, jnp.float32))))  # fmt: skip
    for _ in range(5):
        state = rng.normal(size=size)
        logits = (enc_w @ state).reshape(stoch, classes)
        code = np.eye(classes)[logits.argmax(-1)].reshape(-1)  # the mode of each categorical
        expected = _symlog(np.mean((dec_w @ code - state) ** 2))
        got = float(ae.novelty(jnp.asarray(state, jnp.float32)))
        assert got == pytest.approx(expected, rel=1e-5)


def test_reward_types_per_level():
    assert hi.level_rewards(0, 1) == ("extrinsic",)  # the flat agent
    assert hi.level_rewards(0, 3) == ("extrinsic", "subgoal")  # no novelty at level 0
    assert hi.level_rewards(1, 3) == ("extrinsic", "subgoal", "novelty")
    assert hi.level_rewards(2, 3) == ("extrinsic", "novelty")  # the top level has no subgoal


# ------------------------------------------------------------------------------------------------- clocks


def _agent(overrides=None, task="reach"):
    spec, suite = registry.get_agent(SPEC), registry.get_suite("toy")
    config = registry.build_config(spec, suite, ["debug"], overrides or {}, task)
    env = suite.make_env(task, config.env, 0)
    return spec.make(config.agent, env.obs_space, env.act_space), env


def _blank_obs(agent, first: bool, reward: float = 0.0, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    obs = {k: space.sample(rng, (1,)) for k, space in agent.obs_space.items()}
    obs["is_first"][:] = first
    obs["is_last"][:] = False
    obs["is_terminal"][:] = False
    obs["reward"][:] = reward
    return obs


@pytest.fixture(scope="module")
def three_levels():
    """A debug Hieros with 3 levels, its state and its jitted act (shared: init and compile take a while)."""
    agent, _ = _agent()
    return agent, agent.init(key=jax.random.PRNGKey(0)), eqx.filter_jit(agent.act)


def test_level_i_acts_every_4_to_the_i_env_steps(three_levels):
    agent, state, act = three_levels
    carry = agent.initial_carry(state, 1)
    rows = []
    for t in range(40):
        # a new episode at t = 23, in the middle of level 2's window, restarts every clock
        obs = _blank_obs(agent, t in (0, 23), seed=t)
        carry, _, extras = act(state, carry, obs, key=jax.random.PRNGKey(t), mode="train")
        rows.append(jax.device_get(extras))
    counter = np.array([t if t < 23 else t - 23 for t in range(40)])
    for level in (1, 2):
        write = np.array([r[f"level{level}/write"][0] for r in rows])
        np.testing.assert_array_equal(write, counter % 4**level == 0, err_msg=f"level {level} clock")
        codes = np.array([r[f"level{level}/action"][0] for r in rows])
        changed = np.flatnonzero(np.any(codes[1:] != codes[:-1], -1)) + 1
        assert set(changed) <= set(np.flatnonzero(counter % 4**level == 0)), f"level {level} acted off its clock"
        assert len(changed) >= 2  # and it did act (fresh samples of an 8x8 code differ)
    # level 0's goal is level 1's latest code; level 1's goal is level 2's
    goal0 = np.array([r["goal"][0] for r in rows])
    np.testing.assert_array_equal(goal0, np.array([r["level1/action"][0] for r in rows]))
    goal1 = np.array([r["level1/goal"][0] for r in rows])
    np.testing.assert_array_equal(goal1, np.array([r["level2/action"][0] for r in rows]))
    np.testing.assert_array_equal(np.array([r["level2/goal"][0] for r in rows]), 0.0)  # the top has none
    # level 2's observation holds the last 4 level-1 features: it changes only when level 1 acts
    obs2 = np.array([r["level2/obs"][0] for r in rows])
    np.testing.assert_array_equal(np.any(obs2[1:] != obs2[:-1], -1), (counter % 4 == 0)[1:])
    # and level 1's is a sliding window of level-0 features: each step shifts it by one feature
    obs1 = np.array([r["level1/obs"][0] for r in rows]).reshape(40, 4, -1)
    np.testing.assert_array_equal(obs1[1:23, :-1], obs1[:22, 1:])


def test_higher_level_reward_is_the_window_average(three_levels):
    agent, state, act = three_levels
    carry = agent.initial_carry(state, 1)
    rewards = np.arange(1.0, 21.0)  # reward received with the observation at step t (0 at the first)
    rewards[0] = 0.0
    level1, level2 = [], []
    for t in range(20):
        obs = _blank_obs(agent, t == 0, rewards[t], seed=t)
        carry, _, extras = act(state, carry, obs, key=jax.random.PRNGKey(t), mode="train")
        extras = jax.device_get(extras)
        if extras["level1/write"][0]:
            level1.append(float(extras["level1/reward"][0]))
        if extras["level2/write"][0]:
            level2.append(float(extras["level2/reward"][0]))
    # level 1 writes at t = 0, 4, 8, ...: the average of the rewards since its previous row
    expected1 = [0.0] + [rewards[t - 3 : t + 1].mean() for t in (4, 8, 12, 16)]
    np.testing.assert_allclose(level1, expected1, rtol=1e-6)
    np.testing.assert_allclose(level2, [0.0, rewards[1:17].mean()], rtol=1e-6)


# ----------------------------------------------------------------------------------------------- contract


@pytest.mark.slow
@pytest.mark.parametrize("task", ["reach", "point"])
def test_contract(task):
    metrics = check_agent(SPEC, "toy", task, configs=["debug"])
    assert set(metrics) == {"level0", "level1", "level2"}
    assert "ac/novelty_return" in metrics["level1"] and "ac/subgoal_return" in metrics["level0"]
    assert "ac/novelty_return" not in metrics["level0"] and "ac/subgoal_return" not in metrics["level2"]


def test_flat_agent_has_one_level_and_its_stream():
    agent, _ = _agent({"agent.max_hierarchy": 1})
    streams = agent.streams()
    assert list(streams) == ["level0"] and streams["level0"].sampler == "etbs"
    three, _ = _agent()
    assert [s.ratio_scale for s in three.streams().values()] == [1.0, 0.25, 0.0625]
    assert [s.table for s in three.streams().values()] == ["main", "level1", "level2"]


@pytest.mark.slow
def test_report_has_every_level_and_the_subgoal_images():
    agent, env = _agent({"agent.batch_length": 32})
    state = agent.init(key=jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    shape = (agent.config.batch_size, agent.config.batch_length)
    batch = {k: space.sample(rng, shape) for k, space in {**env.obs_space, **env.act_space}.items()}
    batch["is_first"][:, 0] = True
    batch["goal"] = np.eye(8, dtype=np.float32)[rng.integers(0, 8, (*shape, 8))].reshape(*shape, 64)
    out = jax.device_get(eqx.filter_jit(agent.report)(state, batch, key=jax.random.PRNGKey(1)))
    size = env.obs_space["image"].shape[0]
    video = out["level0/openloop"]
    assert video.dtype == np.uint8 and video.shape == (32, 4 * size, 3 * size, 3)  # truth | prediction | error
    assert np.isfinite(out["level1/openloop_mse"]) and np.isfinite(out["level2/openloop_mse"])
    subgoals = out["level0/subgoals"]  # one row per sequence, one subgoal every 4 steps
    assert subgoals.dtype == np.uint8 and subgoals.shape == (4 * size, 8 * size, 3)


# ------------------------------------------------------------------------------------ additional inputs


def test_policy_input_is_features_symlog_reward_continue_entropy_and_goal():
    """Upstream's additional inputs: [features, symlog(reward mean, continue probability, entropy), goal]."""
    agent, _ = _agent()
    nets = agent.init(key=jax.random.PRNGKey(0)).levels[0].nets
    rng = np.random.default_rng(1)
    size, code = hi.feature_size(agent.config), agent._code_size()
    features = jnp.asarray(rng.normal(size=(3, size)), jnp.float32)
    entropy = jnp.asarray([0.5, 2.0, 7.0], jnp.float32)
    goal = jnp.asarray(rng.normal(size=(3, code)), jnp.float32)
    got = np.asarray(hi.policy_input(agent.config, nets, features, entropy, goal))
    assert got.shape == (3, size + hi.EXTRA_INPUTS + code)
    np.testing.assert_array_equal(got[:, :size], np.asarray(features))
    np.testing.assert_array_equal(got[:, -code:], np.asarray(goal))
    # the reward head's twohot mean over symexp bins, the continue head's sigmoid, the entropy, all symlog
    edges = np.linspace(-20.0, 20.0, agent.config.reward_head.bins)
    symexp_bins = np.sign(edges) * np.expm1(np.abs(edges))
    logits = np.asarray(jax.vmap(nets.reward)(features))
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    reward = probs @ symexp_bins
    cont = 1.0 / (1.0 + np.exp(-np.asarray(jax.vmap(nets.cont)(features))[:, 0]))
    expected = _symlog(np.stack([reward, cont, np.asarray(entropy)], -1))
    np.testing.assert_allclose(got[:, size:size + 3], expected, rtol=1e-5, atol=1e-6)
    off, _ = _agent({"agent.additional_inputs": False})
    assert hi.policy_input(off.config, nets, features, entropy, goal).shape == (3, size + code)


def test_latent_entropy_is_the_sum_over_the_categoricals():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(5, 4, 6))
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -(np.exp(log_p) * log_p).sum((-2, -1))
    np.testing.assert_allclose(np.asarray(hi.latent_entropy(jnp.asarray(log_p, jnp.float32))), expected, rtol=1e-5)


def test_actor_and_critic_losses_do_not_train_the_heads_through_the_additional_inputs():
    """The extra inputs read the reward and continue heads; only the world-model losses may train them."""
    agent, _ = _agent()
    nets = agent.init(key=jax.random.PRNGKey(0)).levels[0].nets
    rng = np.random.default_rng(3)
    size, code = hi.feature_size(agent.config), agent._code_size()
    features = jnp.asarray(rng.normal(size=(2, size)), jnp.float32)
    goal = jnp.zeros((2, code), jnp.float32)

    def loss(nets):
        return jnp.sum(hi.policy_input(agent.config, nets, features, jnp.ones(2), goal) ** 2)

    grads = eqx.filter_grad(loss)(nets)
    for head in (grads.reward, grads.cont):
        assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(head))


# ------------------------------------------------------------------------------------------- optimiser


def _first_step_updates(overrides):
    """The model group's first AdamW update for gradients of ones (no warm-up: lr at full rate)."""
    agent, _ = _agent({"agent.optimizer.warmup": 0, "agent.optimizer.weight_decay": 0.5, **overrides})
    state = agent.init(key=jax.random.PRNGKey(0))
    model_opt, _ = agent._optimizers()
    model, _ = agent._groups(state.levels[0].nets)
    grads = jax.tree.map(jnp.ones_like, model)
    with jax.numpy_dtype_promotion("standard"):  # optax's schedules mix floats with int32 step counts
        updates, _ = model_opt.update(grads, model_opt.init(model), model)
    return agent, model, updates


def test_ssm_parameters_get_their_own_rate_and_no_weight_decay():
    """Adam's first step on a gradient of ones is -lr * (1 + wd * p) (bias-corrected m / sqrt(v) = 1)."""
    lr, ssm_lr, wd = 1e-4, 3e-3, 0.5
    for ssm_rate in (0.0, ssm_lr):
        agent, model, updates = _first_step_updates({"agent.optimizer.ssm_lr": ssm_rate,
                                                      "agent.optimizer.model_lr": lr})
        # the global norm of the ones, sqrt(parameter count), stays below the clip, which would rescale them
        assert np.sqrt(sum(x.size for x in jax.tree.leaves(model))) < agent.config.optimizer.model_clip
        ssm = model["world"].halves[0].ssm
        upd = updates["world"].halves[0].ssm
        for name in ("lambda_re", "lambda_im", "b", "log_step"):
            p, u = np.asarray(getattr(ssm, name)), np.asarray(getattr(upd, name))
            expected = -ssm_lr * np.ones_like(p) if ssm_rate else -lr * (1.0 + wd * p)
            np.testing.assert_allclose(u, expected, rtol=1e-4, atol=1e-9, err_msg=name)
        # everything else (here the S5 layer's C and the reward head) keeps the model group's settings
        for p, u in ((ssm.c, upd.c), (model["reward"], updates["reward"])):
            for pl, ul in zip(jax.tree.leaves(p), jax.tree.leaves(u)):
                np.testing.assert_allclose(np.asarray(ul), -lr * (1.0 + wd * np.asarray(pl)), rtol=1e-4, atol=1e-9)



def test_imagined_extrinsic_reward_is_the_reward_head_on_entering_steps_1_to_h(monkeypatch):
    """The extrinsic reward of imagined step t (t = 1..H) is the reward head's prediction at imagined state t,
    not at the state before it (an off-by-one in time here trains the critic on shifted rewards)."""
    agent, env = _agent({"agent.batch_length": 8})
    level = agent.init(key=jax.random.PRNGKey(0)).levels[0]
    noise = lambda x: x + 0.3 * jax.random.normal(jax.random.PRNGKey(2), x.shape)  # noqa: E731
    nets = eqx.tree_at(lambda n: n.reward, level.nets, jax.tree.map(noise, level.nets.reward))  # non-constant head
    rng = np.random.default_rng(0)
    shape = (agent.config.batch_size, agent.config.batch_length)
    batch = {k: space.sample(rng, shape) for k, space in {**env.obs_space, **env.act_space}.items()}
    batch["is_first"][:, 0] = True
    batch["goal"] = np.eye(8, dtype=np.float32)[rng.integers(0, 8, (*shape, 8))].reshape(*shape, 64)
    seen = {}

    def recording(*args, **kwargs):
        seen["imagined"] = hi_imagine(*args, **kwargs)
        return seen["imagined"]

    hi_imagine = hi.imagine
    monkeypatch.setattr(hi, "imagine", recording)
    _, _, metrics, _ = hi.level_losses(agent.config, 0, agent.levels, nets, level.slow, level.retnorms,
                                       agent._level_data(0, batch), key=jax.random.PRNGKey(1))  # fmt: skip
    stochs, deters, _, _ = seen["imagined"]
    reward, _ = hi.head_predictions(agent.config, nets, nets.world.features(stochs, deters))
    assert float(metrics["ac/extrinsic_reward"]) == pytest.approx(float(reward[:, 1:].mean()), rel=1e-5)
    assert float(reward[:, 1:].mean()) != pytest.approx(float(reward[:, :-1].mean()), rel=1e-3)


# ------------------------------------------------------------------------------------------- filtering


def test_filtering_restarts_from_a_zero_state_at_episode_starts():
    """Training filters replayed sequences that cross episode boundaries: at a step marked `is_first` the S5WM
    must start again from its zero state, so the posterior there is the same as filtering the new episode on
    its own (reference "S5WM": resets in the parallel scan)."""
    agent, _ = _agent({"agent.max_hierarchy": 1})
    nets = agent.init(key=jax.random.PRNGKey(0)).levels[0].nets
    rng = np.random.default_rng(4)
    steps, boundary = 8, 4
    batch = {k: space.sample(rng, (1, steps)) for k, space in agent.obs_space.items()}
    batch.update({k: space.sample(rng, (1, steps)) for k, space in agent.act_space.items()})
    batch["reward"] = rng.normal(size=(1, steps)).astype(np.float32)
    batch["is_first"] = np.zeros((1, steps), bool)
    batch["is_first"][0, [0, boundary]] = True
    batch["is_last"] = np.zeros((1, steps), bool)
    batch["is_terminal"] = np.zeros((1, steps), bool)
    data = agent._level_data(0, {k: jnp.asarray(v) for k, v in batch.items()})
    suffix = jax.tree.map(lambda x: x[:, boundary:], data)
    key = jax.random.PRNGKey(1)
    whole, _ = hi.filter_sequences(nets, data, key=key)
    alone, _ = hi.filter_sequences(nets, suffix, key=key)
    # Later steps depend on sampled latents (other keys per position), the boundary step only on the reset.
    for name in ("deter", "logits"):
        np.testing.assert_allclose(np.asarray(whole[name][:, boundary]), np.asarray(alone[name][:, 0]),
                                   rtol=1e-5, atol=1e-5, err_msg=name)  # fmt: skip
    # ... and the history before the boundary does reach the step when it is not an episode start.
    data_no_reset = eqx.tree_at(lambda d: d.is_first, data, data.is_first.at[0, boundary].set(False))
    joined, _ = hi.filter_sequences(nets, data_no_reset, key=key)
    carried, restarted = np.asarray(joined["deter"][:, boundary]), np.asarray(alone["deter"][:, 0])
    assert not np.allclose(carried, restarted, atol=1e-5)
