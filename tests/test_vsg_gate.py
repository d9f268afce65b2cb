"""The VSG gate and its KL terms against hand-computed values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.vsg import gate as gate_lib


def logit(p):
    return math.log(p / (1.0 - p))


def test_gate_forward_is_binary_and_gradient_reaches_probability():
    logits = jnp.linspace(-4.0, 4.0, 4096)
    values = gate_lib.sample_gate(logits, key=jax.random.key(0))
    assert set(np.unique(np.asarray(values)).tolist()) == {0.0, 1.0}
    # straight-through: d gate / d p = 1, so d gate / d logits = p (1 - p)
    grad = jax.grad(lambda x: gate_lib.sample_gate(x, key=jax.random.key(0)).sum())(logits)
    probs = jax.nn.sigmoid(logits)
    np.testing.assert_allclose(grad, probs * (1 - probs), rtol=1e-6)


def test_gate_samples_have_the_right_rate():
    logits = jnp.full((20000,), logit(0.3))
    values = gate_lib.sample_gate(logits, key=jax.random.key(1))
    assert abs(float(values.mean()) - 0.3) < 0.015


def test_bernoulli_kl_matches_hand_computation():
    # KL(Bern(0.5) || Bern(0.4)) = 0.5 ln(0.5/0.4) + 0.5 ln(0.5/0.6)
    expected_half = 0.5 * math.log(0.5 / 0.4) + 0.5 * math.log(0.5 / 0.6)
    # KL(Bern(0.8) || Bern(0.4)) = 0.8 ln 2 + 0.2 ln(1/3)
    expected_high = 0.8 * math.log(2.0) + 0.2 * math.log(1.0 / 3.0)
    kl = gate_lib.bernoulli_kl(jnp.array([logit(0.5), logit(0.8), logit(0.4)]), 0.4)
    np.testing.assert_allclose(kl, [expected_half, expected_high, 0.0], atol=1e-6)
    assert expected_half == pytest.approx(0.0204110, abs=1e-6)
    assert expected_high == pytest.approx(0.3347953, abs=1e-6)


def test_gate_kl_sums_dimensions_averages_steps_and_applies_free_bits():
    # B=1, T=2, D=2: step 0 has gates p=(0.5, 0.8); step 1 has p=(0.4, 0.4) (KL 0)
    logits = jnp.array([[[logit(0.5), logit(0.8)], [logit(0.4), logit(0.4)]]])
    loss, per_step = gate_lib.gate_kl(logits, prior=0.4, free=0.1)
    np.testing.assert_allclose(per_step, [[0.0204110 + 0.3347953, 0.0]], atol=1e-6)
    assert float(loss) == pytest.approx((0.0204110 + 0.3347953) / 2, abs=1e-6)
    # below the free bits the loss is constant and has no gradient
    loss, _ = gate_lib.gate_kl(logits, prior=0.4, free=1.0)
    assert float(loss) == 1.0
    grad = jax.grad(lambda x: gate_lib.gate_kl(x, prior=0.4, free=1.0)[0])(logits)
    assert float(jnp.abs(grad).max()) == 0.0
    # above it the gradient pulls p towards the prior: d KL / d logit = p(1-p) (logit(p) - logit(prior))
    grad = jax.grad(lambda x: gate_lib.gate_kl(x, prior=0.4, free=0.0)[0])(logits)
    expected = 0.8 * 0.2 * (logit(0.8) - logit(0.4)) / 2  # the mean over T=2 halves it
    assert float(grad[0, 0, 1]) == pytest.approx(expected, rel=1e-5)


def test_gate_prior_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="gate prior"):
        gate_lib.bernoulli_kl(jnp.zeros(3), 1.0)


def test_gaussian_kl_matches_hand_computation():
    # KL(N(0,1) || N(1,2)) = ln 2 + (1 + 1) / 8 - 1/2
    kl = gate_lib.gaussian_kl(jnp.array(0.0), jnp.array(1.0), jnp.array(1.0), jnp.array(2.0))
    assert float(kl) == pytest.approx(math.log(2.0) + 0.25 - 0.5, abs=1e-6)


def test_masked_kl_only_counts_open_gates():
    kl = jnp.array([[0.5, 2.0, 3.0], [1.0, 1.0, 1.0]])
    gates = jnp.array([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(gate_lib.masked_kl(kl, gates), [3.5, 0.0])
    with pytest.raises(ValueError, match="does not match"):
        gate_lib.masked_kl(kl, gates[:, :2])
