"""Hieros against the reference formulas (/work/shared/reference/hieros_s5.md), one test per fact that a
one-line bug could break while the other Hieros tests stay green. Each test is chosen to fail on a specific
bug that scripts/mutations/hieros.py puts in (`scripts/mutation_check.py --agent hieros`):

* (s5-dt-max) the S5WM's S5 layers start with ZOH steps dt log-uniform in [0.001, 0.1] ("S5WM": dt range);
* (s5wm-deter-abs) deter_t = symlog(Linear(Re(all layers' states at t))) ("S5WM": deterministic feature);
* (prev-action) a replayed step t pairs z_{t-1} with the action taken after o_{t-1}, row t - 1's action
  ("S5WM": DreamerV3's convention, not upstream's off-by-one);
* (subgoal-time) the imagined subgoal reward of step t = 1..H is the max-cosine reward of the entered state
  s_t against the decoded goal ("Hierarchy");
* (advantage-sg) REINFORCE: the policy loss treats the combined advantage as a constant, so it sends no
  gradient to the critics.

Golden values are computed here in float64 numpy from the reference's formulas; network pieces whose output a
formula reads are replaced by linear probes with known weights where needed.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.common.returns import PercentileNormalizer
from agents.hieros import hierarchy as hi
from agents.hieros.s5wm import S5WorldModel
from bench import registry
from tests.numpy_reference import symlog

SPEC = "agents.hieros:SPEC"
DT_MIN, DT_MAX = 0.001, 0.1  # reference "S5WM": ZOH, dt in [0.001, 0.1]
LEVEL, LEVELS = 1, 3  # level 1 of 3 receives all three reward types and reads vector observations
BATCH, LENGTH, HORIZON = 2, 4, 3


def _max_cosine_reward(goal: np.ndarray, state: np.ndarray) -> np.ndarray:
    """Reference "Hierarchy": symlog(max(0, g . s / max(|g|, |s|)^2)) over the last axis, float64."""
    norm = np.maximum(np.linalg.norm(goal, axis=-1), np.linalg.norm(state, axis=-1))
    return symlog(np.maximum((goal * state).sum(-1) / norm**2, 0.0))


class _Linear(eqx.Module):
    """A linear probe x -> W x with known weights (replaces an MLP whose output a formula reads)."""

    weight: jax.Array

    def __call__(self, x):
        return self.weight @ x


def _agent(overrides=None):
    spec, suite = registry.get_agent(SPEC), registry.get_suite("toy")
    config = registry.build_config(spec, suite, ["debug"], overrides or {}, "reach")
    env = suite.make_env("reach", config.env, 0)
    return spec.make(config.agent, env.obs_space, env.act_space)


def _codes(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random subgoal codes: 8 one-hot categoricals of 8 classes, flattened to 64."""
    return np.eye(8, dtype=np.float32)[rng.integers(0, 8, (*shape, 8))].reshape(*shape, 64)


# ------------------------------------------------------------------------------------------------ S5WM


def test_world_model_s5_layers_start_with_zoh_steps_log_uniform_in_0001_to_01():
    """The S5WM builds its layers with the reference's step range (not the S5 layer's arguments alone)."""
    model = S5WorldModel(6, 3, stoch=4, classes=4, hidden=8, width=8, deter=8, blocks=2, state_size=64,
                         ssm_blocks=4, key=jax.random.key(0))  # fmt: skip
    steps = np.concatenate([np.exp(np.asarray(half.ssm.log_step, np.float64)) for half in model.halves])
    assert all(half.ssm.discretization == "zoh" for half in model.halves)
    assert steps.size == 4 * 32
    assert steps.min() >= DT_MIN * (1 - 1e-5) and steps.max() <= DT_MAX * (1 + 1e-5)
    # log-uniform over the whole range: 128 draws reach both ends and split evenly around the log midpoint
    assert steps.min() < 1.5 * DT_MIN and steps.max() > 0.7 * DT_MAX
    assert 0.35 < np.mean(steps < math.sqrt(DT_MIN * DT_MAX)) < 0.65


def test_deterministic_feature_is_symlog_of_a_linear_map_of_the_real_parts_of_all_states():
    rng = np.random.default_rng(0)
    model = S5WorldModel(6, 3, stoch=4, classes=4, hidden=8, width=8, deter=5, blocks=1, state_size=8,
                         ssm_blocks=2, key=jax.random.key(1))  # fmt: skip
    weight = rng.normal(size=model.state_out.weight.shape)  # (L * P, D)
    bias = rng.normal(size=model.state_out.bias.shape)
    model = eqx.tree_at(lambda m: (m.state_out.weight, m.state_out.bias), model,
                        (jnp.asarray(weight, jnp.float32), jnp.asarray(bias, jnp.float32)))  # fmt: skip
    tokens = jnp.asarray(rng.normal(size=(7, 6)), jnp.float32)
    actions = jnp.asarray(np.eye(3)[rng.integers(0, 3, 7)], jnp.float32)
    is_first = jnp.zeros(7, bool).at[0].set(True)
    observe = eqx.filter_jit(lambda m, *a: m.observe(m.initial(), *a, key=jax.random.key(2)))
    _, post, prior = observe(model, tokens, actions, is_first)
    states = np.asarray(post["states"], np.complex128)  # (T, L, P)
    assert np.abs(states.imag).mean() > 0.1 * np.abs(states.real).mean()  # Re, |.| and Im differ here
    expected = symlog(states.real.reshape(7, -1) @ weight + bias)
    np.testing.assert_allclose(np.asarray(post["deter"]), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(prior["deter"]), expected, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------ a level's update


@pytest.fixture(scope="module")
def level_one():
    """A debug Hieros, the nets of level 1 of 3 (goal decoder replaced by a linear probe) and a replayed batch
    of its table: observations, subgoal codes as actions and goals, episode start at step 0 only."""
    agent = _agent({"agent.batch_size": BATCH, "agent.batch_length": LENGTH,
                    "agent.imagination.horizon": HORIZON})  # fmt: skip
    spaces, _ = hi.level_spaces(agent.config, LEVEL, agent.obs_space, agent.act_space)
    config = agent.config
    nets = hi.build_level(config, LEVEL, LEVELS, agent.obs_space, agent.act_space, key=jax.random.key(0))
    rng = np.random.default_rng(0)
    decoder = rng.normal(size=(config.s5wm.deter, 64)) / 160.0  # decoded goals as long as the deters
    nets = eqx.tree_at(lambda n: n.goal.decoder, nets, _Linear(jnp.asarray(decoder, jnp.float32)))
    obs_size = spaces[hi.LEVEL_OBS].shape[0]
    batch = {
        "obs": rng.normal(size=(BATCH, LENGTH, obs_size)).astype(np.float32),
        "action": _codes(rng, (BATCH, LENGTH)),
        "goal": _codes(rng, (BATCH, LENGTH)),
        "reward": rng.normal(size=(BATCH, LENGTH)).astype(np.float32),
        "is_first": np.arange(LENGTH)[None].repeat(BATCH, 0) == 0,
        "is_last": np.zeros((BATCH, LENGTH), bool),
        "is_terminal": np.zeros((BATCH, LENGTH), bool),
    }
    return agent, nets, decoder, batch


@pytest.fixture(scope="module")
def level_one_losses(level_one):
    """One `level_losses` of level 1, traced once: metrics, the imagined rollout it used, and the Jacobian of
    [sum of the policy loss, sum of the value loss] with respect to the critics' parameters."""
    agent, nets, _, batch = level_one
    config = agent.config
    slow = dict(nets.critics)
    retnorms = {name: PercentileNormalizer() for name in nets.critics}
    data = agent._level_data(LEVEL, {k: jnp.asarray(v) for k, v in batch.items()})
    original_imagine = hi.imagine

    def run(nets):
        seen = {}

        def recording(*args, **kwargs):
            seen["imagined"] = original_imagine(*args, **kwargs)
            return seen["imagined"]

        params, static = eqx.partition(nets.critics, eqx.is_inexact_array)

        def losses_of(critic_params):
            critics = eqx.combine(critic_params, static)
            losses, _, metrics, _ = hi.level_losses(
                config, LEVEL, LEVELS, eqx.tree_at(lambda n: n.critics, nets, critics), slow, retnorms, data,
                key=jax.random.key(1),
            )  # fmt: skip
            return jnp.stack([losses["policy"].sum(), losses["value"].sum()]), (metrics, seen["imagined"])

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(hi, "imagine", recording)
            return jax.jacrev(losses_of, has_aux=True)(params)

    jacobian, (metrics, imagined) = eqx.filter_jit(run)(nets)
    return jax.device_get(jacobian), jax.device_get(metrics), jax.device_get(imagined)


def test_replayed_step_pairs_z_before_with_the_action_taken_after_the_previous_observation(level_one):
    """Row t of a table holds o_t and the action chosen at o_t, so step t's prior must read row t - 1's
    action (zero at a sequence start) and never its own row's."""
    agent, nets, _, batch = level_one
    data = agent._level_data(LEVEL, {k: jnp.asarray(v) for k, v in batch.items()})
    expected = np.concatenate([np.zeros_like(batch["action"][:, :1]), batch["action"][:, :-1]], 1)
    np.testing.assert_array_equal(np.asarray(data.prev_actions), expected)

    # The same pairing end to end: d prior_t / d action_s is non-zero exactly for s < t.
    def prior_logits(actions):
        replayed = {**{k: jnp.asarray(v) for k, v in batch.items()}, "action": actions}
        _, prior = hi.filter_sequences(nets, agent._level_data(LEVEL, replayed), key=jax.random.key(3))
        return prior["logits"][0].sum((1, 2))  # (T,) of the first sequence

    jacobian = eqx.filter_jit(jax.jacrev(prior_logits))(jnp.asarray(batch["action"]))  # (T, B, T, A)
    depends = np.abs(np.asarray(jacobian)[:, 0]).sum(-1) > 1e-7  # (T_out, T_in)
    t_out, t_in = np.meshgrid(np.arange(LENGTH), np.arange(LENGTH), indexing="ij")
    np.testing.assert_array_equal(depends, t_in < t_out)


def test_imagined_subgoal_reward_is_the_max_cosine_of_the_entered_state(level_one, level_one_losses):
    """r_t (t = 1..H) = symlog(max(0, g . s_t / max(|g|, |s_t|)^2)), g = the decoded replayed goal, s_t the
    imagined deter after the t-th action; the metric is its mean over starts and steps 1..H."""
    _, _, decoder, batch = level_one
    _, metrics, (_, deters, _, _) = level_one_losses
    goal = np.asarray(batch["goal"], np.float64).reshape(-1, 64) @ decoder.T  # (B * T, D), one per start
    deters = np.asarray(deters, np.float64)  # (B * T, H + 1, D)
    assert deters.shape == (BATCH * LENGTH, HORIZON + 1, goal.shape[-1])
    rewards = _max_cosine_reward(goal[:, None], deters)  # (B * T, H + 1)
    assert (rewards[:, 1:] == 0).any() and (rewards[:, 1:] > 0).any()  # both sides of the clamp
    assert float(metrics["ac/subgoal_reward"]) == pytest.approx(rewards[:, 1:].mean(), rel=1e-4, abs=1e-6)
    # the start state's reward (one step early) gives a clearly different mean
    assert abs(rewards[:, :-1].mean() - rewards[:, 1:].mean()) > 1e-2 * rewards[:, 1:].mean()


def test_policy_loss_sends_no_gradient_to_the_critics(level_one_losses):
    """REINFORCE: loss = -(log pi(a) sg(A) + eta H), A = sum_k w_k (R_k - v_k) / S_k: the critics only learn
    from their own value loss."""
    jacobian, _, _ = level_one_losses
    for name in ("extrinsic", "subgoal", "novelty"):
        policy = [np.abs(leaf[0]).max() for leaf in jax.tree.leaves(jacobian[name])]
        value = [np.abs(leaf[1]).max() for leaf in jax.tree.leaves(jacobian[name])]
        assert max(policy) == 0.0, f"the policy loss trains the {name} critic"
        assert max(value) > 0.0, f"the value loss does not train the {name} critic"
