"""THICK numerics against hand-computed values: the GateL0RD gate, the sparsity loss, the segment targets."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.thick.gatel0rd import (
    GateL0RDCell,
    context_changed,
    heaviside_straight_through,
    retanh,
    sparsity_loss,
)
from agents.thick.segments import segment_boundaries, segment_targets


def test_straight_through_gate_is_binary_forward_identity_backward():
    x = jnp.array([-2.0, -0.1, 0.0, 0.3, 5.0])
    np.testing.assert_array_equal(heaviside_straight_through(x), [0.0, 0.0, 0.0, 1.0, 1.0])
    gradient = jax.grad(lambda v: (heaviside_straight_through(v) * jnp.arange(1.0, 6.0)).sum())(x)
    np.testing.assert_allclose(gradient, [1.0, 2.0, 3.0, 4.0, 5.0])


def test_retanh_is_zero_for_closed_gates():
    np.testing.assert_allclose(retanh(jnp.array([-3.0, 0.0, 0.5])), [0.0, 0.0, np.tanh(0.5)], rtol=1e-6)


def test_closed_gate_keeps_context_exactly():
    cell = GateL0RDCell(3, 4, noise=0.0, key=jax.random.key(0))
    # force every gate shut with a large negative bias, then open with a large positive one
    cell = eqx.tree_at(lambda c: c.gate.bias, cell, jnp.full((4,), -100.0))
    context = jnp.array([0.1, -0.2, 0.3, 0.0])
    noise = jax.random.normal(jax.random.key(1), (4,))
    new_context, gates = cell(jnp.ones(3), context, noise)
    np.testing.assert_array_equal(new_context, context)
    np.testing.assert_array_equal(gates, 0.0)
    cell = eqx.tree_at(lambda c: c.gate.bias, cell, jnp.full((4,), 100.0))
    new_context, gates = cell(jnp.ones(3), context, noise)
    np.testing.assert_array_equal(gates, 1.0)
    assert not np.allclose(new_context, context)


def test_gate_noise_shifts_the_gate_pre_activation():
    cell = GateL0RDCell(3, 4, noise=0.5, key=jax.random.key(0))
    cell = eqx.tree_at(
        lambda c: (c.gate.weight, c.gate.bias),
        cell,
        (jnp.zeros_like(cell.gate.weight), jnp.full((4,), -0.25)),
    )
    noise = jnp.array(
        [-1.0, 0.4, 0.6, 2.0]
    )  # pre-activation -0.25 + 0.5 * noise = [-0.75, -0.05, 0.05, 0.75]
    new_context, gates = cell(jnp.ones(3), jnp.zeros(4), noise)
    np.testing.assert_array_equal(gates, [0.0, 0.0, 1.0, 1.0])
    candidate = jnp.tanh(cell.candidate(jnp.concatenate([jnp.ones(3), jnp.zeros(4)])))
    np.testing.assert_allclose(
        new_context, retanh(jnp.array([-0.75, -0.05, 0.05, 0.75])) * candidate, rtol=1e-6
    )


def test_sparsity_loss_hand_computed():
    # B=2, T=4, C=2. Row 0: gate means per step [0.5, 0, 1, 0.5] -> sum 2 -> max(2, 1)=2 -> /4 = 0.5.
    # Row 1: per step [0, 0.5, 0, 0] -> sum 0.5 -> hinge max(0.5, 1) = 1 -> /4 = 0.25.
    gates = jnp.array(
        [
            [[1, 0], [0, 0], [1, 1], [0, 1]],
            [[0, 0], [0, 1], [0, 0], [0, 0]],
        ],
        jnp.float32,
    )
    np.testing.assert_allclose(sparsity_loss(gates, free_changes=1.0), [0.5, 0.25])
    np.testing.assert_allclose(sparsity_loss(gates, free_changes=0.0), [0.5, 0.125])
    # below the hinge the loss gives no gradient; above it, d/dg = 1 / (C T)
    grad = jax.grad(lambda g: sparsity_loss(g, free_changes=1.0).sum())(gates)
    np.testing.assert_allclose(grad[0], np.full((4, 2), 1 / 8))
    np.testing.assert_allclose(grad[1], 0.0)
    np.testing.assert_array_equal(context_changed(gates), [[1, 0, 1, 1], [0, 1, 0, 0]])


def test_segment_targets_two_changes_and_masked_tail():
    gamma = 0.5
    T = 8
    t = np.arange(T, dtype=np.float32)
    states = jnp.asarray(t)[None, :, None]  # z_t = t
    actions = jnp.asarray(10 + t)[None]  # a_t = 10 + t
    contexts = jnp.asarray(100 + t)[None, :, None]  # c_t = 100 + t
    rewards = jnp.asarray(t)[None]  # r_t = t
    changed = jnp.zeros((1, T)).at[0, 3].set(1).at[0, 6].set(1)
    is_first = jnp.zeros((1, T), bool).at[0, 0].set(True)
    boundaries = segment_boundaries(changed, jnp.zeros((1, T), bool))
    out = segment_targets(
        states=states, actions=actions, contexts=contexts, rewards=rewards,
        boundaries=boundaries, is_first=is_first, discount=gamma,
    )  # fmt: skip
    # tau = 3 for t' in {0, 1, 2}; tau = 6 for t' in {3, 4, 5}; t' in {6, 7} have no later boundary.
    np.testing.assert_array_equal(out.mask[0], [1, 1, 1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(out.state[0, :6, 0], [2, 2, 2, 5, 5, 5])
    np.testing.assert_array_equal(out.action[0, :6], [12, 12, 12, 15, 15, 15])
    np.testing.assert_array_equal(out.context[0, :6, 0], [103, 103, 103, 106, 106, 106])
    np.testing.assert_array_equal(out.time[0], [2, 1, 0, 2, 1, 0, 0, 0])
    # t'=0: r1 + g r2 = 1 + 1 = 2; t'=1: r2 = 2; t'=3: r4 + g r5 = 4 + 2.5; t'=4: r5 = 5
    np.testing.assert_allclose(out.reward[0], [2.0, 2.0, 0.0, 6.5, 5.0, 0.0, 0.0, 0.0])


def test_segment_targets_respect_episode_starts_and_terminals():
    T = 8
    t = np.arange(T, dtype=np.float32)
    changed = jnp.zeros((1, T)).at[0, 2].set(1)
    terminal = jnp.zeros((1, T), bool).at[0, 7].set(True)  # the episode after the reset ends in a terminal
    is_first = jnp.zeros((1, T), bool).at[0, 0].set(True).at[0, 5].set(True)
    out = segment_targets(
        states=jnp.asarray(t)[None, :, None], actions=jnp.asarray(10 + t)[None],
        contexts=jnp.zeros((1, T, 1)), rewards=jnp.ones((1, T)),
        boundaries=segment_boundaries(changed, terminal), is_first=is_first, discount=1.0,
    )  # fmt: skip
    # t'=0,1 -> tau=2. t'=2,3,4: the episode ends (step 5 is first) before any boundary. t'=5,6 -> tau=7.
    np.testing.assert_array_equal(out.mask[0], [1, 1, 0, 0, 0, 1, 1, 0])
    np.testing.assert_array_equal(out.time[0], [1, 0, 0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(out.action[0, [0, 1, 5, 6]], [11, 11, 16, 16])
    np.testing.assert_array_equal(out.reward[0], [1, 0, 0, 0, 0, 1, 0, 0])


def test_segment_targets_shape_errors_name_the_input():
    with pytest.raises(ValueError, match="actions"):
        segment_targets(
            states=jnp.zeros((2, 5, 3)), actions=jnp.zeros((2, 4)), contexts=jnp.zeros((2, 5, 1)),
            rewards=jnp.zeros((2, 5)), boundaries=jnp.zeros((2, 5)), is_first=jnp.zeros((2, 5), bool),
            discount=0.9,
        )  # fmt: skip
