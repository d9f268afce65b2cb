"""Golden values and gradients for agents/common: each expected value is computed here in float64 numpy from
the formulas of /work/shared/reference/dreamerv3.md (tests/numpy_reference.py), never from our own output.

Each test is chosen to fail on a specific one-line bug (`scripts/mutation_check.py --agent dreamerv3` puts
them in): a swapped stop-gradient, a flipped sign, a wrong gate offset, lambda vs 1 - lambda, a non-cumulative
weight, a regulariser towards the wrong critic, the decoder's norm in the wrong place.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from agents.common.actions import ActionLayout
from agents.common.behaviour import Actor, imagination_loss, make_critic, policy_log_prob, replay_value_loss
from agents.common.conv import ConvDecoder
from agents.common.latents import categorical_kl_terms
from agents.common.nets import BlockGRU
from agents.common.returns import PercentileNormalizer
from bench import spaces
from tests import numpy_reference as ref

RTOL, ATOL = 2e-5, 2e-6  # float32 against float64
BINS = np.linspace(-2.0, 2.0, 9).astype(np.float32)  # small symmetric bins keep float32 sums exact enough
DISC = 1.0 - 1.0 / 333.0  # reference: continue target = (1 - terminal) * (1 - 1/333)


# -------------------------------------------------------------------------------------- block GRU, decoder


def test_block_gru_matches_the_reference_formula():
    rng = np.random.default_rng(0)
    gru = ref.randomise(BlockGRU(8, 6, 3, 4, 2, 1, "silu", key=jax.random.key(0)), rng)
    deter, stoch = rng.normal(size=(5, 8)), rng.normal(size=(5, 6))
    action = rng.normal(size=(5, 3)) * 2.0  # some entries above 1: the max(1, |a|) rescaling matters
    out = jax.vmap(gru)(jnp.asarray(deter, jnp.float32), jnp.asarray(stoch, jnp.float32), jnp.asarray(action, jnp.float32))
    expected = np.stack([ref.block_gru(gru, d, s, a) for d, s, a in zip(deter, stoch, action)])
    np.testing.assert_allclose(out, expected, rtol=RTOL, atol=ATOL)


def test_conv_decoder_normalises_the_sum_of_both_projections():
    rng = np.random.default_rng(1)
    dec = ConvDecoder(8, 6, (16, 16, 3), depth=2, mults=(1, 2), kernel=3, units=4, blocks=2, key=jax.random.key(1))
    dec = ref.randomise(dec, rng)
    wide, narrow = rng.normal(size=(2, 8)), rng.normal(size=(2, 6))
    out = dec(jnp.asarray(wide, jnp.float32), jnp.asarray(narrow, jnp.float32))
    expected = np.stack([ref.conv_decoder(dec, w, n) for w, n in zip(wide, narrow)])
    assert out.shape == (2, 16, 16, 3)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------- KL stop-gradients


def test_dyn_and_rep_losses_stop_the_right_gradients():
    """dyn = KL(sg(post) || prior) trains only the prior, rep = KL(post || sg(prior)) only the posterior."""
    rng = np.random.default_rng(2)
    post = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(2, 3, 4, 5)), jnp.float32))
    prior = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(2, 3, 4, 5)), jnp.float32))

    def term(name):
        return lambda p, q: categorical_kl_terms(p, q, free_nats=0.0)[0][name].sum()

    dyn_post, dyn_prior = jax.grad(term("dyn"), argnums=(0, 1))(post, prior)
    rep_post, rep_prior = jax.grad(term("rep"), argnums=(0, 1))(post, prior)
    assert np.all(np.asarray(dyn_post) == 0.0) and np.abs(dyn_prior).max() > 1e-3
    assert np.all(np.asarray(rep_prior) == 0.0) and np.abs(rep_post).max() > 1e-3
    # Forward values: both are the same KL summed over the latent variables, clipped below at the free nats.
    terms, _ = categorical_kl_terms(post, prior, free_nats=1.0)
    kl = ref.categorical_kl(ref.f64(post), ref.f64(prior)).sum(-1)
    for name in ("dyn", "rep"):
        np.testing.assert_allclose(terms[name], np.maximum(kl, 1.0), rtol=RTOL)


# ------------------------------------------------------------------------------------ imagination losses


def _discrete_heads(rng, feature_size=5, classes=3):
    """Actor and critics without hidden layers (one linear map each), filled with fixed random weights."""
    layout = ActionLayout.from_spaces({"action": spaces.discrete(classes)})
    actor = ref.randomise(Actor(feature_size, layout, 4, 0, unimix=0.01, key=jax.random.key(0)), rng)
    critic = ref.randomise(make_critic(feature_size, 4, 0, BINS.size, key=jax.random.key(1)), rng)
    slow = ref.randomise(make_critic(feature_size, 4, 0, BINS.size, key=jax.random.key(2)), rng)
    return layout, actor, critic, slow


def _reference_imagination(actor, critic, slow, feats, actions, reward, cont, low, high, *, lam, ent, reg, rate):
    """Upstream `imag_loss` in numpy: returns, normaliser, policy and value losses."""
    value = ref.softmax(ref.linear(feats, critic.out)) @ ref.f64(BINS)
    slow_value = ref.softmax(ref.linear(feats, slow.out)) @ ref.f64(BINS)
    horizon = actions.shape[1]
    # Imagination has no episode ends inside: cont already carries (1 - terminal) * disc.
    rets = ref.lambda_returns(reward, 1.0 - cont, np.zeros_like(cont), value, 1.0, lam)
    lo, hi = np.percentile(rets, [5.0, 95.0])
    new_low, new_high = (1 - rate) * low + rate * lo, (1 - rate) * high + rate * hi
    scale = max(1.0, new_high - new_low)
    adv = (rets - value[:, :horizon]) / scale
    weight = np.cumprod(cont, 1)[:, :horizon]
    log_probs = ref.unimix_log_probs(ref.linear(feats[:, :horizon], actor.heads[0]), 0.01)
    log_pi = np.sum(log_probs * actions, -1)
    entropy = -np.sum(np.exp(log_probs) * log_probs, -1)
    policy = weight * -(log_pi * adv + ent * entropy)
    logits = ref.linear(feats[:, :horizon], critic.out)
    value_loss = weight * (ref.twohot_ce(logits, rets, BINS) + reg * ref.twohot_ce(logits, slow_value[:, :horizon], BINS))
    return rets, (new_low, new_high), policy, value_loss


def _imagination_inputs(rng, n=6, horizon=4, feature_size=5, classes=3):
    feats = rng.normal(size=(n, horizon + 1, feature_size))
    actions = np.eye(classes)[rng.integers(0, classes, size=(n, horizon))]
    reward = rng.normal(size=(n, horizon + 1)) * 1.5
    cont = rng.uniform(0.3, 1.0, size=(n, horizon + 1)) * DISC  # well below 1: cumulative weights differ
    return feats, actions, reward, cont


def test_imagination_loss_matches_reference_values():
    rng = np.random.default_rng(3)
    layout, actor, critic, slow = _discrete_heads(rng)
    feats, actions, reward, cont = _imagination_inputs(rng)
    low, high, rate, lam, ent, reg = -1.0, 2.5, 0.5, 0.9, 0.05, 0.7
    normalizer = PercentileNormalizer(rate=rate, limit=1.0)
    normalizer = eqx.tree_at(lambda n: (n.low, n.high), normalizer, (jnp.float32(low), jnp.float32(high)))
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    losses, rets, new_norm, _ = imagination_loss(
        actor, critic, slow, normalizer, f32(feats), f32(actions), f32(reward), f32(cont), jnp.asarray(BINS),
        lam=lam, entropy_scale=ent, slow_reg=reg,
    )  # fmt: skip
    exp_rets, (exp_low, exp_high), exp_policy, exp_value = _reference_imagination(
        actor, critic, slow, feats, actions, reward, cont, low, high, lam=lam, ent=ent, reg=reg, rate=rate
    )
    np.testing.assert_allclose(rets, exp_rets, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose([new_norm.low, new_norm.high], [exp_low, exp_high], rtol=RTOL)
    np.testing.assert_allclose(losses["policy"], exp_policy, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(losses["value"], exp_value, rtol=1e-4, atol=1e-6)


def test_imagination_policy_and_value_losses_train_only_their_own_network():
    rng = np.random.default_rng(4)
    _, actor, critic, slow = _discrete_heads(rng)
    feats, actions, reward, cont = (jnp.asarray(x, jnp.float32) for x in _imagination_inputs(rng))

    def loss(actor, critic, name):
        losses, _, _, _ = imagination_loss(actor, critic, slow, PercentileNormalizer(), feats, actions, reward,
                                           cont, jnp.asarray(BINS))  # fmt: skip
        return losses[name].sum()

    norm = lambda tree: max(float(jnp.abs(x).max()) for x in jax.tree.leaves(eqx.filter(tree, eqx.is_array)))
    policy_actor, policy_critic = eqx.filter_grad(lambda m: loss(*m, "policy"))((actor, critic))
    value_actor, value_critic = eqx.filter_grad(lambda m: loss(*m, "value"))((actor, critic))
    assert norm(policy_critic) == 0.0 and norm(policy_actor) > 1e-4  # the advantage is a constant
    assert norm(value_actor) == 0.0 and norm(value_critic) > 1e-4


def test_replay_value_loss_matches_reference_values():
    rng = np.random.default_rng(5)
    _, _, critic, slow = _discrete_heads(rng)
    b, t = 2, 7
    feats = rng.normal(size=(b, t, 5))
    reward = rng.normal(size=(b, t)) * 1.5
    term = np.zeros((b, t))
    term[0, 3] = 1.0
    last = term.copy()
    last[1, 4] = 1.0  # a truncation: the episode ends without terminating
    boot = rng.normal(size=(b, t))
    lam, reg = 0.9, 0.7
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    loss = replay_value_loss(critic, slow, f32(feats), f32(reward), f32((1.0 - term) * DISC), f32(last), f32(boot),
                             jnp.asarray(BINS), lam=lam, slow_reg=reg)  # fmt: skip
    # Upstream `repl_loss`: lambda returns bootstrapped from the imagination returns, restarting at episode
    # ends; weight (1 - last); the last step has no return.
    rets = ref.lambda_returns(reward, term, last, boot, DISC, lam)
    logits = ref.linear(feats[:, :-1], critic.out)
    slow_value = ref.softmax(ref.linear(feats[:, :-1], slow.out)) @ ref.f64(BINS)
    per_step = (1.0 - last[:, :-1]) * (ref.twohot_ce(logits, rets, BINS) + reg * ref.twohot_ce(logits, slow_value, BINS))
    # Our (B, T) layout: a zero last column, scaled by T / (T - 1) so the (B, T) mean equals upstream's mean.
    expected = np.concatenate([per_step, np.zeros((b, 1))], 1) * t / (t - 1)
    np.testing.assert_allclose(loss, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(loss.mean()), per_step.mean(), rtol=1e-4)


# -------------------------------------------------------------------------------------- behaviour check


def test_policy_updates_raise_the_log_probability_of_the_rewarded_action():
    """A few gradient steps of the policy loss on fixed imagined data: action 1 earns +1, action 0 earns -1."""
    rng = np.random.default_rng(6)
    layout = ActionLayout.from_spaces({"action": spaces.discrete(2)})
    actor = Actor(4, layout, 8, 1, outscale=1.0, key=jax.random.key(0))
    critic = make_critic(4, 8, 1, BINS.size, key=jax.random.key(1))
    n, horizon = 64, 3
    feats = jnp.asarray(rng.normal(size=(n, horizon + 1, 4)), jnp.float32)
    index = rng.integers(0, 2, size=(n, horizon))
    actions = jnp.asarray(np.eye(2)[index], jnp.float32)
    reward = np.zeros((n, horizon + 1), np.float32)
    reward[:, 1:] = np.where(index == 1, 1.0, -1.0)  # reward on entering step t+1 follows the action at t
    reward, cont = jnp.asarray(reward), jnp.full((n, horizon + 1), DISC, jnp.float32)
    ones = jnp.asarray(np.eye(2)[np.ones((n, horizon), int)], jnp.float32)

    def mean_log_prob(actor):
        return policy_log_prob(jax.vmap(jax.vmap(actor))(feats[:, :-1]), layout, ones).mean()

    @eqx.filter_jit
    def step(actor):
        def loss(actor):
            losses, _, _, _ = imagination_loss(actor, critic, critic, PercentileNormalizer(), feats, actions, reward,
                                               cont, jnp.asarray(BINS))  # fmt: skip
            return losses["policy"].mean()

        grads = eqx.filter_grad(loss)(actor)
        return eqx.apply_updates(actor, jax.tree.map(lambda g: -0.1 * g, grads))

    before = float(mean_log_prob(actor))
    for _ in range(5):
        actor = step(actor)
    after = float(mean_log_prob(actor))
    assert after > before + 0.05, (before, after)


def test_continuous_actor_has_separate_mean_and_std_layers():
    """Upstream's bounded-normal head has a `mean` and a `stddev` layer: two tensors for per-tensor AGC."""
    layout = ActionLayout.from_spaces({"action": spaces.discrete(3), "move": spaces.box((2,), -1.0, 1.0)})
    actor = ref.randomise(Actor(5, layout, 4, 0, min_std=0.1, max_std=1.0, key=jax.random.key(0)), np.random.default_rng(7))
    head = actor.heads[1]
    assert head.mean.weight.shape == (5, 2) and head.std.weight.shape == (5, 2)
    x = np.random.default_rng(8).normal(size=5)
    policy = actor(jnp.asarray(x, jnp.float32))["move"]
    np.testing.assert_allclose(policy.mean, np.tanh(ref.linear(x, head.mean)), rtol=RTOL, atol=ATOL)
    std = 0.9 * ref.sigmoid(ref.linear(x, head.std) + 2.0) + 0.1  # (max - min) sigmoid(raw + 2) + min
    np.testing.assert_allclose(policy.std, std, rtol=RTOL, atol=ATOL)
