"""THICK PlaNet's planners on hand-made models: MinMaxStats, MCTS backups traced by hand, MCTS choosing the
best high-level action, CEM converging on a quadratic and on a categorical objective."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.common.actions import ActionLayout
from agents.thick.planning import CEMConfig, MCTSConfig, MinMaxStats, cem, mcts, root_visits
from bench import spaces


def test_minmax_stats_by_hand():
    stats = MinMaxStats.empty()
    # Nothing seen yet: values pass through unchanged.
    np.testing.assert_allclose(stats.normalize(jnp.float32(0.7)), 0.7)
    for value in (3.0, -1.0, 2.0):
        stats = stats.update(jnp.float32(value))
    assert float(stats.minimum) == -1.0 and float(stats.maximum) == 3.0
    # (v - min) / (max - min) = (1 - -1) / (3 - -1) = 0.5; (3 + 1) / 4 = 1; (-1 + 1) / 4 = 0
    np.testing.assert_allclose(stats.normalize(jnp.array([1.0, 3.0, -1.0])), [0.5, 1.0, 0.0])
    # A single value: max == min, no normalisation.
    single = MinMaxStats.empty().update(jnp.float32(2.0))
    np.testing.assert_allclose(single.normalize(jnp.float32(5.0)), 5.0)


# --------------------------------------------------------------------------------------------- MCTS


def chain_model(rewards, discount, value):
    """Rewards depend only on the action: r(s, a) = rewards[a]; every transition discounts by `discount`;
    every new node is worth `value`. The state counts the depth (the search must carry states along)."""
    rewards = jnp.asarray(rewards, jnp.float32)

    def step_fn(state, action, key):
        return {"depth": state["depth"] + 1.0}, jnp.dot(action, rewards), jnp.float32(discount)

    prior_fn = lambda state: jnp.zeros(len(rewards), jnp.float32)
    value_fn = lambda state: jnp.float32(value)
    return prior_fn, step_fn, value_fn


def test_mcts_backup_matches_a_hand_trace():
    # Two actions, r = [0, 1], discount 0.5, every leaf worth 2, uniform prior, no root noise, 4 simulations.
    # The root starts with N = 1, value 0 (THICK backs it up once). MinMaxStats holds the Q = r + d V of the
    # edges into the updated nodes (the root has none); with max == min, Q is used raw.
    # sim 1: scores (prior only) .5 sqrt(1)/1 for both -> a0 (first). node1 = (root, a0): r 0, d .5, v 2.
    #        backup: node1 sum 2 N 1, Q1 = 0 + .5*2 = 1 -> stats {1, 1}; g = 1; root sum 1 N 2.
    # sim 2: root a0: Q = 1 (raw) + .5 sqrt2/2 = 1.354;  a1: .5 sqrt2 = .707 -> a0.
    #        node1 has no children: both .5 -> a0. node2: r 0, d .5, v 2.
    #        backup: node2 sum 2, Q2 = 1; g = 1; node1 sum 3 N 2 (V 1.5), Q1 = .75 -> stats {.75, 1};
    #        g = .5; root sum 1.5 N 3.
    # sim 3: root a0: Q .75 -> 0, + .5 sqrt3/3 = .289;  a1: .5 sqrt3 = .866 -> a1.
    #        node3 = (root, a1): r 1, d .5, v 2. backup: node3 sum 2, Q3 = 1 + 1 = 2 -> stats {.75, 2};
    #        g = 2; root sum 3.5 N 4.
    # sim 4: root a0: 0 + .5*2/3 = .333;  a1: Q 2 -> 1, + .5*2/2 = 1.5 -> a1.
    #        node3 has no children -> a0. node4 = (node3, a0): r 0, d .5, v 2.
    #        backup: node4 sum 2, Q4 = 1; g = 1; node3 sum 3 N 2, Q3 = 1.75; g = 1.5; root sum 5 N 5.
    # (With the upstream minimum bug nothing is ever normalised, and sim 3 takes a0: .75 + .289 > .866.)
    prior_fn, step_fn, value_fn = chain_model([0.0, 1.0], 0.5, 2.0)
    config = MCTSConfig(simulations=4, exploration_fraction=0.0)
    result = mcts({"depth": jnp.float32(0.0)}, prior_fn=prior_fn, step_fn=step_fn, value_fn=value_fn,
                  num_actions=2, config=config, key=jax.random.key(0))  # fmt: skip
    tree = result.tree
    np.testing.assert_array_equal(tree.parent, [-1, 0, 1, 0, 3])
    np.testing.assert_array_equal(tree.children[0], [1, 3])
    np.testing.assert_allclose(tree.visits, [5, 2, 1, 2, 1])
    np.testing.assert_allclose(tree.value_sum, [5.0, 3.0, 2.0, 3.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(tree.reward, [0.0, 0.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(tree.states["depth"], [0, 1, 2, 1, 2])
    assert float(result.stats.minimum) == 0.75 and float(result.stats.maximum) == 2.0
    np.testing.assert_allclose(root_visits(tree), [2.0, 2.0])
    # Visit-count policy: softmax of [2, 2].
    np.testing.assert_allclose(result.policy, [0.5, 0.5], rtol=1e-6)


def trap_model():
    """Action 0 pays 0.3 now and nothing after; action 2 pays 0.2 and nothing after; action 1 pays nothing
    now and 1 at every later step. The value function knows the states' true values (a good state is worth
    1 / (1 - 0.9) = 10, a dead end 0). A greedy choice by the immediate reward takes action 0; the best is 1:
    Q = 0 + 0.9 * 10 = 9 against 0.3 and 0.2."""
    now = jnp.array([0.3, 0.0, 0.2])
    after = jnp.array([1.0, 2.0, 1.0])  # kind of state reached: 1 dead end, 2 good

    def step_fn(state, action, key):
        kind = state["kind"]
        reward = jnp.where(kind == 0, jnp.dot(action, now), jnp.where(kind == 2, 1.0, 0.0))
        new_kind = jnp.where(kind == 0, jnp.dot(action, after), kind)
        return {"kind": new_kind}, reward, jnp.float32(0.9)

    prior_fn = lambda state: jnp.zeros(3, jnp.float32)
    value_fn = lambda state: jnp.where(state["kind"] == 2, 10.0, 0.0).astype(jnp.float32)
    return prior_fn, step_fn, value_fn


@pytest.mark.parametrize("seed", range(4))
def test_mcts_picks_the_best_high_level_action(seed):
    prior_fn, step_fn, value_fn = trap_model()
    search = jax.jit(lambda key: mcts({"kind": jnp.float32(0.0)}, prior_fn=prior_fn, step_fn=step_fn,
                                      value_fn=value_fn, num_actions=3, key=key))  # fmt: skip
    result = search(jax.random.key(seed))
    visits = np.asarray(root_visits(result.tree))
    assert visits.sum() == 100
    assert visits.argmax() == 1, visits
    assert int(result.action) == 1
    assert float(result.child_state["kind"]) == 2.0  # the goal is the state the chosen action leads to


def test_mcts_vmaps_over_roots():
    prior_fn, step_fn, value_fn = trap_model()
    search = lambda root, key: mcts(root, prior_fn=prior_fn, step_fn=step_fn, value_fn=value_fn, num_actions=3,
                                    key=key)  # fmt: skip
    roots = {"kind": jnp.array([0.0, 0.0, 2.0], jnp.float32)}
    result = jax.jit(jax.vmap(search))(roots, jax.random.split(jax.random.key(0), 3))
    assert result.action.shape == (3,) and result.policy.shape == (3, 3)
    np.testing.assert_array_equal(result.action[:2], 1)
    np.testing.assert_array_equal(result.child_state["kind"], [2.0, 2.0, 2.0])


# ---------------------------------------------------------------------------------------------- CEM


def test_cem_converges_to_the_optimum_of_a_quadratic():
    layout = ActionLayout.from_spaces({"action": spaces.box((2,), -1.0, 1.0)})
    target = np.array([[0.3, -0.5], [-0.7, 0.1], [0.05, 0.6]], np.float32)  # (H, A), inside [-1, 1]
    objective = lambda actions, key: -jnp.sum(jnp.square(actions - target))
    result = jax.jit(lambda key: cem(objective, layout, CEMConfig(horizon=3), key=key))(jax.random.key(0))
    np.testing.assert_allclose(result.plan, target, atol=0.02)
    assert float(result.std.max()) < 0.05
    assert float(result.score) > -0.01


def test_cem_on_a_constrained_quadratic_lands_on_the_bound():
    # The optimum 1.5 lies outside [-1, 1]: the clipped samples pile up at the bound.
    layout = ActionLayout.from_spaces({"action": spaces.box((1,), -1.0, 1.0)})
    objective = lambda actions, key: -jnp.sum(jnp.square(actions - 1.5))
    result = cem(objective, layout, CEMConfig(horizon=2), key=jax.random.key(1))
    np.testing.assert_allclose(result.plan, 1.0, atol=0.02)


def test_cem_converges_on_categorical_actions():
    layout = ActionLayout.from_spaces({"action": spaces.discrete(5)})
    target = np.array([3, 0, 4, 1])
    objective = lambda actions, key: jnp.sum(actions * jax.nn.one_hot(target, 5))
    result = cem(objective, layout, CEMConfig(horizon=4), key=jax.random.key(2))
    np.testing.assert_array_equal(np.argmax(result.plan, -1), target)
    np.testing.assert_allclose(result.mean.sum(-1), 1.0, rtol=1e-5)  # class probabilities per step
    assert float(result.score) == 4.0
