"""TSSM (agents/tssm): attention mask, relative position logits, and KV-window imagination against the full
causal pass. Goldens are computed here with numpy from the formulas of
/work/shared/reference/transformer_wm.md (TSSM section): logits q.k / sqrt(d) + q.E_r[i - j], pre-LN blocks,
GELU MLP 4x, causal attention within a window and within an episode."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.common import distributions as dists
from agents.tssm.dynamics import CACHE_KEYS, TSSM
from agents.tssm.transformer import Block, visibility

ERF = np.vectorize(math.erf)


def test_visibility_by_hand():
    # Cache of 2 slots (the first empty), 3 new tokens; the third starts a new episode segment.
    # Keys: [slot0, slot1, q0, q1, q2]; each token sees itself and at most 2 tokens before it.
    visible = visibility(jnp.array([False, True]), jnp.array([0, 0]), jnp.array([0, 0, 1]))
    expected = np.array(
        [
            [0, 1, 1, 0, 0],  # q0: slot0 empty, slot1, itself
            [0, 1, 1, 1, 0],  # q1: slot1, q0, itself (slot0 is out of the window anyway)
            [0, 0, 0, 0, 1],  # q2: new segment, only itself
        ],
        bool,
    )
    np.testing.assert_array_equal(np.asarray(visible), expected)


def numpy_block(block: Block, x, cache_k, cache_v, visible):
    """The pre-LN block with relative logits, written out with loops over heads, queries and keys."""
    p = jax.tree.map(np.asarray, block)
    n, embed = x.shape
    heads = block.heads
    d = embed // heads
    slots = cache_k.shape[0]

    def layer_norm(z, norm):
        mean = z.mean(-1, keepdims=True)
        var = ((z - mean) ** 2).mean(-1, keepdims=True)
        return (z - mean) / np.sqrt(var + 1e-5) * np.asarray(norm.scale) + np.asarray(norm.shift)

    qkv = layer_norm(x, p.norm1) @ p.qkv.weight + p.qkv.bias
    q, k, v = qkv[:, :embed], qkv[:, embed : 2 * embed], qkv[:, 2 * embed :]
    q, k, v = (t.reshape(n, heads, d) for t in (q, k, v))
    keys = np.concatenate([cache_k, k])
    values = np.concatenate([cache_v, v])
    attended = np.zeros((n, heads, d))
    for h in range(heads):
        for i in range(n):
            logits = np.full(slots + n, -np.inf)
            for j in range(slots + n):
                if visible[i, j]:
                    distance = slots + i - j
                    logits[j] = q[i, h] @ keys[j, h] / math.sqrt(d) + q[i, h] @ p.rel[h, distance]
            w = np.exp(logits - logits.max())
            w /= w.sum()
            attended[i, h] = w @ values[:, h]
    x = x + attended.reshape(n, embed) @ p.proj.weight + p.proj.bias
    hidden = layer_norm(x, p.norm2) @ p.fc1.weight + p.fc1.bias
    hidden = 0.5 * hidden * (1.0 + ERF(hidden / math.sqrt(2.0)))
    return x + hidden @ p.fc2.weight + p.fc2.bias


def test_block_relative_position_logits_by_hand():
    embed, heads, window = 8, 2, 4
    rng = np.random.default_rng(0)
    block = Block(embed, heads, window, key=jax.random.key(0))
    # A large relative table, so a wrong distance index changes the output clearly.
    block = eqx.tree_at(lambda b: b.rel, block, jnp.asarray(rng.normal(size=block.rel.shape), jnp.float32))
    slots, n = window - 1, 3
    x = rng.normal(size=(n, embed)).astype(np.float32)
    cache_k = rng.normal(size=(slots, heads, embed // heads)).astype(np.float32)
    cache_v = rng.normal(size=(slots, heads, embed // heads)).astype(np.float32)
    valid = np.array([False, True, True])
    visible = np.asarray(visibility(jnp.asarray(valid), jnp.zeros(slots, jnp.int32), jnp.zeros(n, jnp.int32)))
    out, _, _ = block(jnp.asarray(x), jnp.asarray(cache_k), jnp.asarray(cache_v), jnp.asarray(visible))
    expected = numpy_block(block, x.astype(np.float64), cache_k, cache_v, visible)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------ the dynamics

ACTIONS, TOKENS = 2, 6


def small_tssm(context: int = 2, latent: str = "categorical") -> TSSM:
    return TSSM(TOKENS, ACTIONS, embed=8, layers=2, heads=2, context=context, hidden=8, stoch=2, classes=3,
                latent=latent, key=jax.random.key(1))  # fmt: skip


def jitted(dyn: TSSM):
    """The dynamics' methods, compiled (eager dispatch of many small ops is slow on a loaded CPU)."""
    seq = eqx.filter_jit(lambda d, *a: d.sequence(*a))
    step = eqx.filter_jit(lambda d, lat, a, k: d.imagine_step(lat, a, key=k))
    obs = eqx.filter_jit(lambda d, *a, k: d.observe(*a, key=k))
    sequence = lambda *a: seq(dyn, *a)  # noqa: E731
    imagine_step = lambda lat, a, key: step(dyn, lat, a, key)  # noqa: E731
    observe = lambda *a, key: obs(dyn, *a, k=key)  # noqa: E731
    return sequence, imagine_step, observe


def random_inputs(rng, batch, steps, dyn):
    prev_a = jnp.asarray(rng.normal(size=(batch, steps, ACTIONS)), jnp.float32)
    prev_r = jnp.asarray(rng.normal(size=(batch, steps)), jnp.float32)
    z = jax.nn.one_hot(rng.integers(0, dyn.classes, size=(batch, steps, dyn.stoch)), dyn.classes)
    return prev_a, prev_r, z


def test_full_pass_is_causal():
    dyn = small_tssm(context=8)
    rng = np.random.default_rng(2)
    prev_a, prev_r, z = random_inputs(rng, 1, 5, dyn)
    first = jnp.zeros((1, 5), bool)
    cache = {k: v for k, v in dyn.initial(1).items() if k in CACHE_KEYS}
    sequence, _, _ = jitted(dyn)
    base = sequence(cache, prev_a, prev_r, z, first)
    # Change step 3's reward token: steps 0-2 must not move; step 3's z-token output (deter) must.
    moved = sequence(cache, prev_a, prev_r.at[0, 3].add(5.0), z, first)
    np.testing.assert_array_equal(np.asarray(base[0][:, :3]), np.asarray(moved[0][:, :3]))
    np.testing.assert_array_equal(np.asarray(base[1][:, :4]), np.asarray(moved[1][:, :4]))  # a token precedes r
    assert not np.allclose(np.asarray(base[0][:, 3]), np.asarray(moved[0][:, 3]))


def test_step_by_step_window_equals_full_pass_across_episode_start():
    dyn = small_tssm(context=2)  # a window of 6 tokens: slides within the 7 steps
    rng = np.random.default_rng(3)
    batch, steps = 2, 7
    prev_a, prev_r, z = random_inputs(rng, batch, steps, dyn)
    first = jnp.zeros((batch, steps), bool).at[1, 4].set(True)
    cache = {k: v for k, v in dyn.initial(batch).items() if k in CACHE_KEYS}
    sequence, _, _ = jitted(dyn)
    deter, prior, reward, windows = sequence(cache, prev_a, prev_r, z, first)
    for t in range(steps):
        sl = lambda x: x[:, t : t + 1]  # noqa: E731
        d, p, r, w = sequence(cache, sl(prev_a), sl(prev_r), sl(z), sl(first))
        np.testing.assert_allclose(np.asarray(d[:, 0]), np.asarray(deter[:, t]), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(p[:, 0]), np.asarray(prior[:, t]), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(r[:, 0]), np.asarray(reward[:, t]), rtol=1e-5, atol=1e-5)
        cache = {k: v[:, 0] for k, v in w.items()}
        np.testing.assert_array_equal(np.asarray(cache["valid"]), np.asarray(windows["valid"][:, t]))


@pytest.mark.parametrize("kind", ["categorical", "gaussian"])
def test_kv_window_imagination_equals_full_causal_pass(kind):
    dyn = small_tssm(context=2, latent=kind)
    rng = np.random.default_rng(4)
    batch, observed, horizon = 2, 3, 6
    tokens = jnp.asarray(rng.normal(size=(batch, observed, TOKENS + 1)), jnp.float32)
    prev_a = jnp.asarray(rng.normal(size=(batch, observed, ACTIONS)), jnp.float32)
    first = jnp.zeros((batch, observed), bool).at[:, 0].set(True)
    sequence, imagine_step, observe = jitted(dyn)
    last, posts, _ = observe(dyn.initial(batch), tokens, prev_a, first, key=jax.random.key(5))
    actions = jnp.asarray(rng.normal(size=(batch, horizon, ACTIONS)), jnp.float32)
    keys = jax.random.split(jax.random.key(6), horizon)
    latent, imagined = last, []
    for k in range(horizon):
        latent = imagine_step(latent, actions[:, k], key=keys[k])
        imagined.append(latent)
    # The same stream through the full causal pass from an empty window: observed chunks, then imagined ones.
    rewards = [posts["reward"][:, t] for t in range(observed)] + [x["reward"] for x in imagined]
    keep = 1.0 - first.astype(jnp.float32)
    full_prev_a = jnp.concatenate([prev_a * keep[..., None], actions], 1)
    full_prev_r = jnp.stack([jnp.zeros(batch)] + rewards[:-1], 1) * jnp.concatenate(
        [keep, jnp.ones((batch, horizon))], 1
    )
    full_z = jnp.concatenate([posts["stoch"], jnp.stack([x["stoch"] for x in imagined], 1)], 1)
    full_first = jnp.concatenate([first, jnp.zeros((batch, horizon), bool)], 1)
    cache = {k: v for k, v in dyn.initial(batch).items() if k in CACHE_KEYS}
    deter, prior, reward, _ = sequence(cache, full_prev_a, full_prev_r, full_z, full_first)
    np.testing.assert_allclose(np.asarray(deter[:, :observed]), np.asarray(posts["deter"]), rtol=1e-5, atol=1e-5)
    for k, x in enumerate(imagined):
        t = observed + k
        np.testing.assert_allclose(np.asarray(x["deter"]), np.asarray(deter[:, t]), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(x["reward"]), np.asarray(reward[:, t]), rtol=1e-5, atol=1e-5)
        # The imagined latent is the sample of the full pass's prior under the same key.
        if kind == "categorical":
            expected = dists.sample_onehot(keys[k], prior[:, t])
        else:  # mean + std * eps, written out
            mean, std = prior[:, t, :, 0], prior[:, t, :, 1]
            expected = mean + std * jax.random.normal(keys[k], mean.shape)
        np.testing.assert_allclose(np.asarray(x["stoch"]), np.asarray(expected), rtol=1e-5, atol=1e-6)
    if kind == "gaussian":  # the stochastic state is S continuous dimensions, std at least min_std
        assert posts["stoch"].shape == (batch, observed, dyn.stoch)
        assert float(prior[..., 1].min()) >= 0.1


@pytest.mark.parametrize("latent", ["categorical", "gaussian"])
def test_dynamics_backprop_through_frozen_tssm_reaches_actions_not_parameters(latent):
    from agents.common.behaviour import frozen

    dyn = small_tssm(context=2, latent=latent)
    rng = np.random.default_rng(5)
    tokens = jnp.asarray(rng.normal(size=(2, 2, TOKENS + 1)), jnp.float32)
    prev_a = jnp.asarray(rng.normal(size=(2, 2, ACTIONS)), jnp.float32)
    _, _, observe = jitted(dyn)
    start, _, _ = observe(dyn.initial(2), tokens, prev_a, jnp.zeros((2, 2), bool), key=jax.random.key(0))
    actions = jnp.asarray(rng.normal(size=(3, 2, ACTIONS)), jnp.float32)

    @eqx.filter_jit
    def grads(dyn, actions):
        def objective(dyn, actions):
            latent, model = start, frozen(dyn)
            for k in range(3):
                latent = model.imagine_step(latent, actions[k], key=jax.random.key(k))
            return jnp.sum(model.features(latent) ** 2) + jnp.sum(latent["reward"])

        return eqx.filter_grad(objective)(dyn, actions), jax.grad(objective, argnums=1)(dyn, actions)

    into_params, into_actions = grads(dyn, actions)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(into_params))
    assert float(jnp.abs(into_actions).max()) > 0.0


def test_actions_are_rescaled_to_unit_magnitude_as_in_the_rssm():
    # DreamerV3 feeds its dynamics a / max(1, |a|) per dimension, the divisor without gradient (reference
    # dreamerv3.md). Replay holds clipped actions in [-1, 1]; imagined bounded-normal samples go beyond.
    dyn = small_tssm(context=2)
    rng = np.random.default_rng(6)
    tokens = jnp.asarray(rng.normal(size=(2, 2, TOKENS + 1)), jnp.float32)
    prev_a = jnp.asarray(rng.uniform(-1, 1, size=(2, 2, ACTIONS)), jnp.float32)
    sequence, imagine_step, observe = jitted(dyn)
    start, _, _ = observe(dyn.initial(2), tokens, prev_a, jnp.zeros((2, 2), bool), key=jax.random.key(0))
    big = rng.uniform(-3, 3, size=(2, ACTIONS)) + 3.0 * np.sign(rng.normal(size=(2, ACTIONS)))
    rescaled = big / np.maximum(1.0, np.abs(big))  # the formula, in numpy
    key = jax.random.key(1)
    out_big = imagine_step(start, jnp.asarray(big, jnp.float32), key)
    out_rescaled = imagine_step(start, jnp.asarray(rescaled, jnp.float32), key)
    for name in ("deter", "reward", "stoch"):
        np.testing.assert_allclose(np.asarray(out_big[name]), np.asarray(out_rescaled[name]), rtol=1e-6, atol=1e-6)
    # The training pass rescales the same way.
    _, prev_r, z = random_inputs(rng, 2, 1, dyn)
    cache = {k: v for k, v in dyn.initial(2).items() if k in CACHE_KEYS}
    full_big = sequence(cache, jnp.asarray(big, jnp.float32)[:, None], prev_r, z, jnp.zeros((2, 1), bool))
    full_rescaled = sequence(cache, jnp.asarray(rescaled, jnp.float32)[:, None], prev_r, z, jnp.zeros((2, 1), bool))
    np.testing.assert_allclose(np.asarray(full_big[0]), np.asarray(full_rescaled[0]), rtol=1e-6, atol=1e-6)
    # Gradient: d(a / sg(max(1, |a|)))/da = 1 / max(1, |a|), so the Jacobian at `big` is the one at `rescaled`
    # divided by max(1, |a|) per action dimension.
    deter = lambda a: imagine_step(start, a, key)["deter"].sum()  # noqa: E731
    grad_big = jax.grad(deter)(jnp.asarray(big, jnp.float32))
    grad_rescaled = jax.grad(deter)(jnp.asarray(rescaled, jnp.float32))
    np.testing.assert_allclose(np.asarray(grad_big), np.asarray(grad_rescaled) / np.maximum(1.0, np.abs(big)),
                               rtol=1e-4, atol=1e-6)  # fmt: skip
