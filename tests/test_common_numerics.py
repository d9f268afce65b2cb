"""Numerics of agents/common against hand-computed values and plain reference implementations."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agents.common import distributions as dists
from agents.common.nets import MLPHead, batched
from agents.common.optim import clip_by_agc, laprop_agc
from agents.common.returns import PercentileNormalizer, ema_update, lambda_return


# ------------------------------------------------------------------------------------- symlog / symexp


def test_symlog_symexp_hand_values():
    e = math.e
    x = jnp.array([0.0, e - 1.0, -(e**2 - 1.0), 1e6])
    np.testing.assert_allclose(dists.symlog(x), [0.0, 1.0, -2.0, math.log1p(1e6)], rtol=1e-6)
    np.testing.assert_allclose(dists.symexp(jnp.array([0.0, 1.0, -2.0])), [0.0, e - 1.0, -(e**2 - 1.0)], rtol=1e-6)


def test_symexp_inverts_symlog():
    x = jnp.array([-1e5, -3.5, -1e-3, 0.0, 2e-4, 7.0, 4e4])
    np.testing.assert_allclose(dists.symexp(dists.symlog(x)), x, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ twohot


def test_symexp_bins_are_exactly_symmetric():
    bins = np.asarray(dists.symexp_bins(255))
    assert bins.shape == (255,)
    assert bins[127] == 0.0
    np.testing.assert_array_equal(bins, -bins[::-1])
    np.testing.assert_allclose(bins[-1], math.expm1(20.0), rtol=1e-6)
    assert np.all(np.diff(bins) > 0)


def test_twohot_encode_hand_values():
    bins = jnp.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    enc = dists.twohot_encode(jnp.array([0.25, -1.0, 5.0, -7.0, 1.5]), bins)
    expected = np.array(
        [
            [0, 0, 0.75, 0.25, 0],  # between 0 and 1: weights linear in distance
            [0, 1, 0, 0, 0],  # exactly on a bin
            [0, 0, 0, 0, 1],  # above the last bin: clipped
            [1, 0, 0, 0, 0],  # below the first bin: clipped
            [0, 0, 0, 0.5, 0.5],
        ]
    )
    np.testing.assert_allclose(enc, expected, atol=1e-7)


def test_twohot_round_trip_over_symexp_bins():
    bins = dists.symexp_bins(255)
    x = jnp.array([0.0, 1.5, -3.7, 1000.0, -2e5, 12345.678])
    enc = dists.twohot_encode(x, bins)
    np.testing.assert_allclose(enc.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose((enc * bins).sum(-1), x, rtol=1e-5, atol=1e-6)
    # Decoding the encoding as a distribution (log of the weights as logits) gives x back.
    np.testing.assert_allclose(dists.twohot_mean(jnp.log(enc), bins), x, rtol=1e-4, atol=1e-5)


def test_twohot_loss_is_cross_entropy():
    bins = dists.symexp_bins(5)
    logits = jnp.zeros(5)
    # Uniform prediction: the cross-entropy is log(5) for any target inside the bins.
    np.testing.assert_allclose(dists.twohot_loss(logits, jnp.array(3.0), bins), math.log(5.0), rtol=1e-6)
    logits = jnp.array([0.0, 1.0, 2.0, 3.0, 4.0])
    target = 0.3 * bins[2] + 0.7 * bins[3]
    log_p = jax.nn.log_softmax(logits)
    expected = -(0.3 * log_p[2] + 0.7 * log_p[3])
    np.testing.assert_allclose(dists.twohot_loss(logits, target, bins), expected, rtol=1e-5)


@pytest.mark.parametrize("num_bins", [255, 31, 32])
def test_twohot_prediction_is_exactly_zero_at_init(num_bins):
    bins = dists.symexp_bins(num_bins)
    head = MLPHead(12, num_bins, 16, 1, outscale=0.0, key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (4, 9, 12))
    prediction = jax.jit(lambda h, x: dists.twohot_mean(batched(h, x), bins))(head, x)
    assert np.all(np.asarray(prediction) == 0.0)


# ------------------------------------------------------------------------------------ categorical, KL


def test_unimix_mixes_one_percent_uniform():
    logits = jnp.array([100.0, -100.0, -100.0, -100.0])
    probs = jnp.exp(dists.unimix_logits(logits, 0.01))
    np.testing.assert_allclose(probs, [0.99 + 0.0025, 0.0025, 0.0025, 0.0025], rtol=1e-5)
    np.testing.assert_allclose(jnp.exp(dists.unimix_logits(logits, 0.0)), [1, 0, 0, 0], atol=1e-30)


def test_categorical_kl_hand_value():
    log_p = jnp.log(jnp.array([0.5, 0.5]))
    log_q = jnp.log(jnp.array([0.9, 0.1]))
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    np.testing.assert_allclose(dists.categorical_kl(log_p, log_q), expected, rtol=1e-6)


def test_straight_through_sample_is_onehot_with_probability_gradient():
    log_probs = jnp.log(jnp.array([0.2, 0.3, 0.5]))
    sample = dists.sample_onehot(jax.random.key(0), log_probs)
    assert sorted(np.asarray(sample).tolist()) == [0.0, 0.0, 1.0]
    weights = jnp.array([1.0, 2.0, 3.0])
    grad = jax.grad(lambda lp: jnp.sum(dists.sample_onehot(jax.random.key(0), lp) * weights))(log_probs)
    # d/d log p of sum_k w_k p_k = w_k p_k (the straight-through path through the probabilities).
    np.testing.assert_allclose(grad, weights * jnp.exp(log_probs), rtol=1e-6)


def test_bernoulli_loss_soft_target():
    logit = jnp.array(0.7)
    p = 1.0 / (1.0 + math.exp(-0.7))
    expected = -(0.997 * math.log(p) + 0.003 * math.log(1 - p))
    np.testing.assert_allclose(dists.bernoulli_loss(logit, jnp.array(0.997)), expected, rtol=1e-6)


def test_bounded_normal_range_and_log_prob():
    mean, std = dists.bounded_normal(jnp.array([0.0, 100.0]), jnp.array([-100.0, 100.0]), 0.1, 1.0)
    np.testing.assert_allclose(mean, [0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(std, [0.1, 1.0], atol=1e-6)
    normal = dists.Normal(jnp.array([0.0, 1.0]), jnp.array([1.0, 2.0]))
    x = jnp.array([0.5, 0.0])
    expected = sum(-0.5 * ((xi - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)
                   for xi, m, s in [(0.5, 0.0, 1.0), (0.0, 1.0, 2.0)])  # fmt: skip
    np.testing.assert_allclose(normal.log_prob(x), expected, rtol=1e-6)
    np.testing.assert_allclose(normal.entropy(), sum(0.5 + 0.5 * math.log(2 * math.pi) + math.log(s) for s in (1, 2)))


# ------------------------------------------------------------------------------------------ returns


def test_lambda_return_hand_example():
    # R_2 = b_2 = 20; R_1 = r_2 + c_2 ((1 - l) b_2 + l R_2) = 2 + 0.5 (10 + 10) = 12;
    # R_0 = r_1 + c_1 ((1 - l) b_1 + l R_1) = 1 + 0.5 (5 + 6) = 6.5.
    reward = jnp.array([[99.0, 1.0, 2.0]])
    cont = jnp.array([[99.0, 0.5, 0.5]])
    boot = jnp.array([[99.0, 10.0, 20.0]])
    np.testing.assert_allclose(lambda_return(reward, cont, boot, 0.5), [[6.5, 12.0]], rtol=1e-6)


def _lambda_return_loop(reward, cont, boot, lam, last):
    n, steps = reward.shape
    out = np.zeros((n, steps - 1))
    for i in range(n):
        following = boot[i, -1]
        for t in reversed(range(steps - 1)):
            mix = lam * (1.0 - last[i, t + 1])
            following = reward[i, t + 1] + cont[i, t + 1] * ((1 - mix) * boot[i, t + 1] + mix * following)
            out[i, t] = following
    return out


def test_lambda_return_matches_python_loop():
    rng = np.random.default_rng(0)
    shape = (5, 16)
    reward, boot = rng.normal(size=shape), rng.normal(size=shape) * 3
    cont = rng.uniform(0.0, 1.0, shape)
    last = (rng.uniform(size=shape) < 0.2).astype(np.float64)
    got = lambda_return(*(jnp.asarray(a, jnp.float32) for a in (reward, cont, boot)), 0.95,
                        last=jnp.asarray(last, jnp.float32))  # fmt: skip
    np.testing.assert_allclose(got, _lambda_return_loop(reward, cont, boot, 0.95, last), rtol=1e-5, atol=1e-5)


def test_percentile_normalizer_matches_numpy():
    rng = np.random.default_rng(1)
    norm = PercentileNormalizer(rate=0.01, limit=1.0)
    low = high = 0.0
    for _ in range(3):
        values = rng.normal(size=(64, 15)) * 50.0
        norm = norm.update(jnp.asarray(values, jnp.float32))
        low = 0.99 * low + 0.01 * np.percentile(values, 5)
        high = 0.99 * high + 0.01 * np.percentile(values, 95)
    np.testing.assert_allclose([norm.low, norm.high], [low, high], rtol=1e-5)
    offset, scale = norm.stats()
    np.testing.assert_allclose(offset, low, rtol=1e-5)
    np.testing.assert_allclose(scale, max(1.0, high - low), rtol=1e-5)
    # A small spread is not scaled up: the scale stays at the limit.
    assert float(PercentileNormalizer().update(jnp.array([0.0, 0.1])).stats()[1]) == 1.0


def test_ema_update():
    slow = {"w": jnp.array([0.0, 10.0])}
    online = {"w": jnp.array([1.0, 0.0])}
    np.testing.assert_allclose(ema_update(slow, online, 0.02)["w"], [0.02, 9.8], rtol=1e-6)


# ---------------------------------------------------------------------------------------- optimizer


def test_agc_clips_per_tensor():
    params = {"a": jnp.array([3.0, 4.0]), "b": jnp.zeros(2)}
    grads = {"a": jnp.array([30.0, 40.0]), "b": jnp.array([1.0, 0.0])}
    clipped, _ = clip_by_agc(0.3, 1e-3).update(grads, optax.EmptyState(), params)
    # |g_a| = 50 > 0.3 * |w_a| = 1.5: scaled to norm 1.5. |w_b| = 0 -> floor 1e-3: norm 3e-4.
    np.testing.assert_allclose(clipped["a"], [0.9, 1.2], rtol=1e-6)
    np.testing.assert_allclose(clipped["b"], [3e-4, 0.0], rtol=1e-6)
    small = {"a": jnp.array([0.3, 0.4]), "b": jnp.zeros(2)}
    unchanged, _ = clip_by_agc(0.3, 1e-3).update(small, optax.EmptyState(), params)
    np.testing.assert_allclose(unchanged["a"], [0.3, 0.4])


def test_laprop_first_steps_by_hand():
    opt = laprop_agc(lr=0.1, agc=0.3, beta1=0.9, beta2=0.999, eps=1e-20, warmup=2)
    params = jnp.array([3.0, 4.0])
    state = opt.init(params)
    # Step 0: learning rate 0 (warmup starts at 0): no change. nu_hat = g^2, u = sign(g), mu_hat = u.
    updates, state = opt.update(jnp.array([0.3, 0.4]), state, params)
    np.testing.assert_allclose(updates, [0.0, 0.0], atol=1e-12)
    # Step 1: lr 0.05. nu_hat = g^2 again (same magnitudes), u = [1, -1];
    # mu = 0.9 * [0.1, 0.1] + 0.1 * [1, -1] = [0.19, -0.01]; mu_hat = mu / 0.19.
    updates, state = opt.update(jnp.array([0.3, -0.4]), state, params)
    # (float32 cancellation in 0.09 - 0.1 limits the agreement to ~1e-7 absolute)
    np.testing.assert_allclose(updates, [-0.05, 0.05 * 0.01 / 0.19], rtol=1e-5, atol=1e-6)
    # Step 2: full lr 0.1; gradient twice as large has the same normalised direction.
    updates, state = opt.update(jnp.array([0.6, 0.8]), state, params)
    g1, g2, g3 = np.array([0.3, 0.4]), np.array([0.3, -0.4]), np.array([0.6, 0.8])
    nu = 0.001 * (0.999**2 * g1**2 + 0.999 * g2**2 + g3**2) / (1 - 0.999**3)
    us = [g / np.sqrt(0.001 * sum(0.999 ** (k - j) * gg**2 for j, gg in enumerate([g1, g2, g3][: k + 1])) / (1 - 0.999 ** (k + 1)))
          for k, g in enumerate([g1, g2, g3])]  # fmt: skip
    np.testing.assert_allclose(us[2], g3 / np.sqrt(nu), rtol=1e-6)
    mu = 0.1 * (0.81 * us[0] + 0.9 * us[1] + us[2])
    np.testing.assert_allclose(updates, -0.1 * mu / (1 - 0.9**3), rtol=1e-5)
