"""IRIS GPT: the KV-cache path equals the full causal pass, the mask is causal, heads read the right
positions, the no-cache baseline samples what the cache samples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.iris.transformer import (
    WorldModelGPT,
    generate_step,
    generate_step_recompute,
    interleave,
    sequence_logits,
    start_from_frame,
    start_recompute,
)

K, STEPS, VOCAB, ACTIONS = 4, 3, 11, 5


@pytest.fixture(scope="module")
def gpt():
    return WorldModelGPT(vocab=VOCAB, actions=ACTIONS, frame_tokens=K, max_steps=STEPS, embed=16, layers=2,
                         heads=2, dropout=0.1, key=jax.random.key(0))  # fmt: skip


def random_sequence(seed):
    rng = np.random.default_rng(seed)
    frames = jnp.asarray(rng.integers(0, VOCAB, (STEPS, K)), jnp.int32)
    actions = jnp.asarray(rng.integers(0, ACTIONS, (STEPS,)), jnp.int32)
    return frames, actions


def test_cache_token_by_token_equals_full_pass(gpt):
    frames, actions = random_sequence(0)
    tokens = interleave(frames, actions)
    assert tokens.shape == (gpt.max_tokens,)
    full, full_cache = gpt(tokens, gpt.empty_cache(), jnp.zeros((), jnp.int32))
    step = jax.jit(lambda t, c, n: gpt(t, c, n))
    cache, rows = gpt.empty_cache(), []
    for i in range(gpt.max_tokens):  # a whole context, one token at a time
        hidden, cache = step(tokens[i : i + 1], cache, jnp.asarray(i, jnp.int32))
        rows.append(hidden[0])
    incremental = jnp.stack(rows)
    for head in (gpt.obs_logits, gpt.reward_logits, gpt.end_logits):
        np.testing.assert_allclose(head(incremental), head(full), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cache.keys, full_cache.keys, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cache.values, full_cache.values, rtol=1e-4, atol=1e-5)


def test_attention_is_causal(gpt):
    frames, actions = random_sequence(1)
    tokens = interleave(frames, actions)
    base, _ = gpt(tokens, gpt.empty_cache(), jnp.zeros((), jnp.int32))
    for j in (3, K, 2 * K + 1, gpt.max_tokens - 1):
        changed = tokens.at[j].set((tokens[j] + 1) % min(VOCAB, ACTIONS))
        out, _ = gpt(changed, gpt.empty_cache(), jnp.zeros((), jnp.int32))
        np.testing.assert_allclose(out[:j], base[:j], rtol=1e-5, atol=1e-6)
        assert np.abs(np.asarray(out[j] - base[j])).max() > 1e-4  # the perturbed position itself changes


def test_dropout_only_with_a_key(gpt):
    frames, actions = random_sequence(2)
    a = sequence_logits(gpt, frames, actions)["obs"]
    b = sequence_logits(gpt, frames, actions)["obs"]
    c = sequence_logits(gpt, frames, actions, key=jax.random.key(1))["obs"]
    np.testing.assert_array_equal(a, b)
    assert np.abs(np.asarray(a - c)).max() > 1e-4


def test_sequence_logits_read_the_previous_position(gpt):
    """Frame token (t, k) is predicted from the token before it; reward and end from the action position."""
    frames, actions = random_sequence(3)
    out = sequence_logits(gpt, frames, actions)
    # The causal test shows a position's hidden state depends only on the tokens up to it, so one full pass
    # gives every prefix's last hidden state.
    hidden, _ = gpt(interleave(frames, actions), gpt.empty_cache(), jnp.zeros((), jnp.int32))
    for t in range(STEPS):
        for k in range(K):
            pos = t * (K + 1) + k  # position of the predicted token
            if pos == 0:
                continue
            expected = gpt.obs_logits(hidden[pos - 1])
            np.testing.assert_allclose(out["obs"][t, k], expected, rtol=1e-4, atol=1e-5)
        action_pos = t * (K + 1) + K
        expected = gpt.reward_logits(hidden[action_pos])
        np.testing.assert_allclose(out["reward"][t], expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out["end"][t], gpt.end_logits(hidden[action_pos]), rtol=1e-4, atol=1e-5)


def test_generate_step_fills_the_cache_like_a_full_pass_and_refreshes(gpt):
    frames, actions = random_sequence(4)
    batch = 2
    first = jnp.stack([frames[0], frames[1]])
    acts = jnp.stack([actions[0], actions[1]])
    cache, length = start_from_frame(gpt, first)
    assert int(length) == K
    step = jax.jit(lambda c, n, f, a, key: generate_step(gpt, c, n, f, a, key=key))
    out, cache, length = step(cache, length, first, acts, jax.random.key(5))
    assert int(length) == 2 * K + 1 and out["frame_tokens"].shape == (batch, K)
    assert set(np.unique(out["reward"])) <= {-1.0, 0.0, 1.0}
    for b in range(batch):
        seq = jnp.concatenate([first[b], acts[b : b + 1], out["frame_tokens"][b]])
        _, full = gpt(seq, gpt.empty_cache(), jnp.zeros((), jnp.int32))
        filled = 2 * K + 1
        np.testing.assert_allclose(cache.keys[b][:, :, :filled], full.keys[:, :, :filled], 1e-4, 1e-5)
    # STEPS = 3 blocks fit: the third step would overflow (2K+1 + K+1 > 3(K+1) - ...) only after the second.
    frame = out["frame_tokens"]
    out, cache, length = step(cache, length, frame, acts, jax.random.key(6))
    assert int(length) == 3 * K + 2
    out2, cache, length = step(cache, length, out["frame_tokens"], acts, jax.random.key(7))
    assert int(length) == K + K + 1  # restarted from the current frame, then one step
    fresh, _ = start_from_frame(gpt, out["frame_tokens"])
    np.testing.assert_allclose(cache.keys[:, :, :, :K], fresh.keys[:, :, :, :K], rtol=1e-4, atol=1e-5)


def test_recomputing_generator_samples_what_the_cache_samples(gpt):
    """The no-cache baseline that `bench perf agent` times does the same work: for the same keys it samples
    the same rewards, ends and frames over several steps, across a context refresh."""
    rng = np.random.default_rng(8)
    frames = jnp.asarray(rng.integers(0, VOCAB, (3, K)), jnp.int32)
    cached = jax.jit(lambda c, n, f, a, key: generate_step(gpt, c, n, f, a, key=key))
    recompute = jax.jit(lambda c, n, f, a, key: generate_step_recompute(gpt, c, n, f, a, key=key))
    cache, length = start_from_frame(gpt, frames)
    buffer, length_r = start_recompute(gpt, frames)
    frame, frame_r, lengths = frames, frames, []
    for step in range(5):  # STEPS = 3: the context restarts from the current frame once
        action = jnp.asarray(rng.integers(0, ACTIONS, (3,)), jnp.int32)
        key = jax.random.key(100 + step)
        out, cache, length = cached(cache, length, frame, action, key)
        out_r, buffer, length_r = recompute(buffer, length_r, frame_r, action, key)
        for name in ("reward", "end", "frame_tokens"):
            np.testing.assert_array_equal(out_r[name], out[name], err_msg=f"step {step} {name}")
        assert int(length_r) == int(length)
        frame, frame_r = out["frame_tokens"], out_r["frame_tokens"]
        lengths.append(int(length))
    assert min(lengths[1:]) < max(lengths)  # a refresh happened
