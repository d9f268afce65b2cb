"""THICK PlaNet and flat CEM as agents: loading a THICK run folder, the replanning rule, the goal similarity,
the high-level edge (reward and discount), and the planners' settings."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.common import distributions as dists
from agents.common.behaviour import policy_sample
from agents.thick.planet import (
    CEM_PLANET_SPEC,
    THICK_PLANET_SPEC,
    group_cosine,
    highlevel_transition,
    planning_reward,
)
from agents.thick.planning import CEMConfig, MCTSConfig
from bench import config as config_lib
from bench import registry
from bench.checkpoint import Checkpointer
from tasks import toy

PLANET_DEFAULTS = CEM_PLANET_SPEC.config_cls()
TINY_CEM = CEMConfig(candidates=8, horizon=2, top=2, iterations=1)


def make(spec, **changes):
    config = registry.build_config(spec, toy.SUITE, ["debug"], task="keydoor")
    agent_config = dataclasses.replace(config.agent, cem=TINY_CEM, **changes)
    env = toy.make_env("keydoor", config.env)
    return spec.make(agent_config, env.obs_space, env.act_space), env


def test_defaults_are_thicks_settings():
    # reference: thick.md, "THICK PlaNet"
    config = THICK_PLANET_SPEC.config_cls()
    assert (config.cem.candidates, config.cem.horizon, config.cem.top, config.cem.iterations) == (1000, 12, 100, 10)
    assert config.mcts == MCTSConfig(100, 0.25, 0.25, 1.0, 1.0)
    assert config.goal_bonus == 0.025 and config.replan_after == 3
    assert not hasattr(CEM_PLANET_SPEC.config_cls(), "goal_bonus")


def test_group_cosine_by_hand():
    p = jnp.array([[1.0, 0.0], [0.5, 0.5]])
    q = jnp.array([[0.6, 0.8], [0.5, 0.5]])
    # group 0: 0.6 / (1 * 1) = 0.6; group 1: identical -> 1; mean 0.8
    np.testing.assert_allclose(group_cosine(p, q), 0.8, rtol=1e-6)


def test_planning_reward_counts_rewards_only_while_the_episode_runs():
    rewards = jnp.array([1.0, 2.0, 3.0, 4.0])
    continues = jnp.array([0.5, 0.0, 1.0, 1.0])
    # THICK's plain mean: (1 + 2 + 3 + 4) / 4
    np.testing.assert_allclose(planning_reward(rewards, continues, False), 2.5, rtol=1e-6)
    # r_t counts c_1 ... c_{t-1}: weights 1, 0.5, 0, 0 -> (1 + 1) / 4; the terminal step's own reward counts
    np.testing.assert_allclose(planning_reward(rewards, continues, True), 0.5, rtol=1e-6)
    assert PLANET_DEFAULTS.continue_weight  # on by default (ours; docs/thick_planet.md)


@pytest.mark.parametrize("continue_weight, best_first_action", [(True, 1), (False, 0)])
def test_cem_objective_uses_the_continue_weighting(monkeypatch, continue_weight, best_first_action):
    """A fake imagination: first action 0 ends the episode at once and then imagines reward 5 a step (after the
    terminal); first action 1 earns 1 and continues. Weighted: 1/3 beats 0; plain mean: 10/3 beats 1/3."""
    import agents.thick.planet as planet

    def fake_imagine(nets, latent, actions, goal_probs, reward_bins, *, key):
        first = jnp.argmax(actions[0])
        after_terminal, earned = jnp.array([0.0, 5.0, 5.0]), jnp.array([1.0, 0.0, 0.0])
        rewards = jnp.where(first == 0, after_terminal, jnp.where(first == 1, earned, 0.0))
        continues = jnp.where(first == 0, jnp.array([0.0, 1.0, 1.0]), jnp.ones(3))
        return rewards, continues, jnp.zeros(3)

    monkeypatch.setattr(planet, "imagine_sequence", fake_imagine)
    cem = CEMConfig(candidates=64, horizon=3, top=8, iterations=3)
    agent, _ = make(CEM_PLANET_SPEC)
    config = dataclasses.replace(agent.config, cem=cem, continue_weight=continue_weight)
    agent = dataclasses.replace(agent, config=config)
    state = agent.init(key=jax.random.key(0))
    latent = jax.tree.map(lambda x: x[0], state.nets.dynamics.initial(1))
    goal = jnp.zeros((state.nets.dynamics.crssm.stoch, state.nets.dynamics.crssm.classes))
    plan = agent._plan(state.nets, latent, goal, 0.0, jax.random.key(1))
    assert int(jnp.argmax(plan[0])) == best_first_action


def test_critic_leaf_is_the_coarse_critics_value():
    agent, _ = make(THICK_PLANET_SPEC, leaf_value="critic")
    state = agent.init(key=jax.random.key(0))
    nets = state.nets
    bins = agent.thick.config.critic.bins
    offset = 8  # logits peaked on the bin `offset` above the middle one: symexp(40 * offset / (bins - 1))
    out = nets.behaviour.coarse_critic.out
    peaked = jnp.zeros((bins,)).at[(bins - 1) // 2 + offset].set(60.0)
    nets = eqx.tree_at(lambda n: (n.behaviour.coarse_critic.out.weight, n.behaviour.coarse_critic.out.bias), nets,
                       (jnp.zeros_like(out.weight), peaked))  # fmt: skip
    dynamics = nets.dynamics
    stoch = dists.sample_onehot(jax.random.key(1), jnp.zeros((dynamics.crssm.stoch, dynamics.crssm.classes)))
    node = {"stoch": stoch, "context": jnp.zeros((dynamics.crssm.context,)), "reward": jnp.array(0.5)}
    expected = np.expm1(40.0 * offset / (bins - 1))  # symexp bins span [-20, 20]
    np.testing.assert_allclose(agent._leaf_value(nets)(node), expected, rtol=1e-4)
    assert float(dataclasses.replace(agent, config=dataclasses.replace(agent.config, leaf_value="reward"))
                 ._leaf_value(nets)(node)) == 0.5  # fmt: skip


def test_highlevel_edge_is_thick_dreamers_long_horizon_return():
    agent, _ = make(THICK_PLANET_SPEC)
    state = agent.init(key=jax.random.key(0))
    dynamics = state.nets.dynamics
    stoch = dists.sample_onehot(jax.random.key(1), jnp.zeros((dynamics.crssm.stoch, dynamics.crssm.classes)))
    context = jnp.linspace(-0.5, 0.5, dynamics.crssm.context)
    hl_action = jax.nn.one_hot(1, dynamics.highlevel.hl_actions)
    node, reward, discount = highlevel_transition(dynamics, stoch, context, hl_action, key=jax.random.key(2))
    # Recompute the pieces from the heads: r = r_way + gamma^delta r(s_tau), d = gamma^delta cont(s_tau).
    prediction = dynamics.highlevel.predict(dynamics.crssm.coarse_features(stoch, context), hl_action)
    hl_bins = np.asarray(dists.symexp_bins(dynamics.hl_bins))
    softmax = lambda x: np.exp(x - x.max()) / np.exp(x - x.max()).sum()
    time = max(float(softmax(np.asarray(prediction.time_logits)) @ hl_bins), 0.0)
    way = float(softmax(np.asarray(prediction.reward_logits)) @ hl_bins)
    after = dynamics.crssm.coarse_features(node["stoch"], node["context"])
    reward_bins = np.asarray(dists.symexp_bins(dynamics.reward_bins))
    r_after = float(softmax(np.asarray(dynamics.coarse.reward(after))) @ reward_bins)
    cont = 1.0 / (1.0 + np.exp(-float(dynamics.coarse.cont_logit(after))))
    gamma = 1.0 - 1.0 / agent.thick.config.imagination.discount_horizon
    np.testing.assert_allclose(reward, way + gamma**time * r_after, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(discount, gamma**time * cont, rtol=1e-4)
    np.testing.assert_allclose(node["goal"], prediction.state_logits, rtol=1e-6)


def test_post_change_goal_is_the_coarse_priors_state_after_the_change():
    # TF2 hl_plan_pre_ll_goal False: the goal is z_tau from one coarse step out of the sampled z_{tau-1} with
    # the predicted a_{tau-1}, not the predicted z_{tau-1}. Same key: the same samples as the default edge.
    agent, _ = make(THICK_PLANET_SPEC, goal="post_change")
    dynamics = agent.init(key=jax.random.key(0)).nets.dynamics
    stoch = dists.sample_onehot(jax.random.key(1), jnp.zeros((dynamics.crssm.stoch, dynamics.crssm.classes)))
    context = jnp.linspace(-0.5, 0.5, dynamics.crssm.context)
    hl_action = jax.nn.one_hot(2, dynamics.highlevel.hl_actions)
    key = jax.random.key(3)
    before, _, _ = highlevel_transition(dynamics, stoch, context, hl_action, key=key)
    after, _, _ = highlevel_transition(dynamics, stoch, context, hl_action, key=key, post_change_goal=True)
    state_key, action_key, coarse_key = jax.random.split(key, 3)
    features = dynamics.crssm.coarse_features(stoch, context)[None]
    prediction = jax.vmap(dynamics.highlevel.predict)(features, hl_action[None])
    z_before = dists.Categorical(prediction.state_logits).sample(state_key)
    a_before = policy_sample(prediction.action, dynamics.layout, action_key)
    _, _, logits = dynamics.crssm.coarse_step(z_before, context[None], a_before, key=coarse_key)
    np.testing.assert_allclose(after["goal"], logits[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(before["goal"], prediction.state_logits[0], rtol=1e-6)
    assert np.abs(np.asarray(after["goal"]) - np.asarray(before["goal"])).max() > 1e-3
    np.testing.assert_allclose(after["stoch"], before["stoch"])  # the search itself is the same
    with pytest.raises(ValueError, match="goal must be one of"):
        make(THICK_PLANET_SPEC, goal="post")


@pytest.mark.parametrize("goal, post_change", [("pre_change", False), ("post_change", True)])
def test_the_search_takes_the_configured_goal(monkeypatch, goal, post_change):
    import agents.thick.planet as planet

    seen = []

    def recording(*args, post_change_goal=False, **kwargs):
        seen.append(post_change_goal)
        return highlevel_transition(*args, post_change_goal=post_change_goal, **kwargs)

    monkeypatch.setattr(planet, "highlevel_transition", recording)
    agent, _ = make(THICK_PLANET_SPEC, goal=goal, mcts=MCTSConfig(simulations=2))
    state = agent.init(key=jax.random.key(0))
    latent = jax.tree.map(lambda x: x[0], state.nets.dynamics.initial(1))
    agent._search(state.nets, latent["stoch"], latent["context"], jax.random.key(1))
    assert seen and set(seen) == {post_change}


def run_steps(agent, state, env, steps, *, gate_bias):
    """Act for `steps` steps from a reset with every context gate forced open (+) or shut (-)."""
    state = eqx.tree_at(lambda s: s.nets.dynamics.crssm.cell.gate.bias, state,
                        jnp.full_like(state.nets.dynamics.crssm.cell.gate.bias, gate_bias))  # fmt: skip
    traces = []

    def act(*args, **kwargs):
        traces.append(1)  # runs only while tracing
        return agent.act(*args, **kwargs)

    act = eqx.filter_jit(act)
    carry = agent.initial_carry(state, 1)
    obs = env.reset(seed=0)
    since = []
    for step in range(steps):
        batch = {k: np.asarray(v)[None] for k, v in obs.items()}
        carry, action, _ = act(state, carry, batch, key=jax.random.key(step), mode="eval")
        since.append(int(carry["since_plan"][0]))
        obs = env.step({k: np.asarray(v)[0] for k, v in action.items()})
    assert len(traces) == 1, "act traced more than once"
    return since


def test_replans_on_an_open_gate_only_after_the_inhibition():
    agent, env = make(THICK_PLANET_SPEC)
    state = agent.init(key=jax.random.key(0))
    # since_plan after each step: 1 right after planning. Open gates: plan at step 0, then whenever more than
    # 3 steps passed (TF2 len(inter_goals) > 3), i.e. every 3rd step.
    assert run_steps(agent, state, env, 8, gate_bias=100.0) == [1, 2, 3, 1, 2, 3, 1, 2]
    # Shut gates: only the first step plans.
    assert run_steps(agent, state, env, 5, gate_bias=-100.0) == [1, 2, 3, 4, 5]


def test_loads_the_model_of_a_thick_run_folder(tmp_path):
    thick_spec = registry.get_agent("agents.thick:SPEC")
    config = registry.build_config(thick_spec, toy.SUITE, ["debug"], task="keydoor")
    config = config_lib.apply(config, {"run.envs": 2})
    env = toy.make_env("keydoor", config.env)
    thick = thick_spec.make(config.agent, env.obs_space, env.act_space)
    state = thick.init(key=jax.random.key(7))
    (tmp_path / "config.yaml").write_text(config_lib.dump_yaml(config))
    Checkpointer(tmp_path / "ckpt").save(step=5, header={}, agent_tree=(state, thick.initial_carry(state, 2)),
                                         replay=None)  # fmt: skip

    agent, _ = make(CEM_PLANET_SPEC, model=str(tmp_path))
    assert agent.model_envs == 2
    loaded = agent.init(key=jax.random.key(0))  # another key: the weights must come from the file
    same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)),
                        eqx.filter(loaded.nets, eqx.is_array), eqx.filter(state.nets, eqx.is_array))  # fmt: skip
    assert all(jax.tree.leaves(same))


def test_bad_model_folders_fail_with_one_clear_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.yaml"):
        make(CEM_PLANET_SPEC, model=str(tmp_path))
    (tmp_path / "config.yaml").write_text("agent: {not_a_thick_key: 1}\n")
    with pytest.raises(ValueError, match="is not a THICK run"):
        make(CEM_PLANET_SPEC, model=str(tmp_path))
    agent, _ = make(CEM_PLANET_SPEC, model="")
    with pytest.raises(ValueError, match="needs a THICK model"):
        agent.init(key=jax.random.key(0))
