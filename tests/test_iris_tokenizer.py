"""IRIS tokenizer: vector quantisation, its losses and straight-through gradient by hand; it learns toy
frames."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agents.iris.tokenizer import (AttnBlock, Tokenizer, conv, group_norm, perceptual_loss, quantize,
                                   reconstruction_l1, straight_through, vq_losses)  # fmt: skip


def test_quantize_and_vq_losses_by_hand():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(6, 3)).astype(np.float32)
    codebook = rng.normal(size=(5, 3)).astype(np.float32)
    expected = np.array([np.argmin([np.sum((zi - e) ** 2) for e in codebook]) for zi in z])
    tokens, z_q = quantize(jnp.asarray(z), jnp.asarray(codebook))
    np.testing.assert_array_equal(tokens, expected)
    np.testing.assert_allclose(z_q, codebook[expected], rtol=1e-6)
    beta = 0.25  # not 1, so swapping the two terms' stop-gradients would show
    mse = np.mean((z - codebook[expected]) ** 2)
    losses = vq_losses(jnp.asarray(z), jnp.asarray(codebook[expected]), beta)
    np.testing.assert_allclose(losses, (1 + beta) * mse, rtol=1e-5)

    # Gradients: the codebook term moves entries towards encodings, the commitment term (times beta) moves
    # encodings towards entries: d/dz = beta * 2 (z - e) / n, d/de = 2 (e - z) / n.
    def loss(z, codebook):
        _, z_q = quantize(z, codebook)
        return vq_losses(z, z_q, beta)

    gz, gc = jax.grad(loss, argnums=(0, 1))(jnp.asarray(z), jnp.asarray(codebook))
    n = z.size
    np.testing.assert_allclose(gz, beta * 2 * (z - codebook[expected]) / n, rtol=1e-5, atol=1e-7)
    expected_gc = np.zeros_like(codebook)
    for i, k in enumerate(expected):
        expected_gc[k] += 2 * (codebook[k] - z[i]) / n
    np.testing.assert_allclose(gc, expected_gc, rtol=1e-5, atol=1e-7)


def test_straight_through_forward_value_and_gradient():
    rng = np.random.default_rng(1)
    z = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
    codebook = jnp.asarray(rng.normal(size=(7, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)

    def downstream(z, codebook):
        _, z_q = quantize(z, codebook)
        return jnp.sum(w * straight_through(z, z_q))

    _, z_q = quantize(z, codebook)
    np.testing.assert_allclose(straight_through(z, z_q), z_q, rtol=1e-6)  # forward: the codebook entry
    gz, gc = jax.grad(downstream, argnums=(0, 1))(z, codebook)
    np.testing.assert_allclose(gz, w, rtol=1e-6)  # identity gradient to the encoder
    np.testing.assert_array_equal(gc, np.zeros_like(codebook))  # the decoder loss does not move the codebook


@pytest.mark.parametrize("kwargs", [dict(padding=1), dict(stride=2, padding=((0, 1), (0, 1))), dict()],
                         ids=["3x3-same", "3x3-stride2-downsample", "1x1"])  # fmt: skip
def test_channel_last_conv_matches_equinox_per_image(kwargs):
    """The networks run channel-last (speed, see tokenizer.py); each layer must equal Equinox's own call on
    each channel-first image, including IRIS's right/bottom-only padding of the stride-2 downsampling."""
    size = 1 if not kwargs else 3
    layer = eqx.nn.Conv2d(4, 5, size, key=jax.random.key(0), **kwargs)
    x = jax.random.normal(jax.random.key(1), (2, 6, 6, 4))
    expected = jnp.moveaxis(jax.vmap(layer)(jnp.moveaxis(x, -1, 1)), 1, -1)
    np.testing.assert_allclose(conv(layer, x), expected, rtol=1e-5, atol=1e-5)


def test_conv_trained_in_loop_has_the_same_value_and_gradients():
    layer = eqx.nn.Conv2d(4, 5, 3, padding=1, key=jax.random.key(5))
    x = jax.random.normal(jax.random.key(6), (3, 6, 6, 4))
    target = jax.random.normal(jax.random.key(7), (3, 6, 6, 5))
    loss = lambda layer, x, fast: jnp.sum(target * jnp.tanh(conv(layer, x, trained_in_loop=fast)))  # noqa: E731
    plain, fast = (jax.grad(loss, argnums=(0, 1))(layer, x, f) for f in (False, True))
    np.testing.assert_allclose(conv(layer, x, trained_in_loop=True), conv(layer, x), rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="stride-1"):
        conv(eqx.nn.Conv2d(4, 5, 3, stride=2, key=jax.random.key(0)), x, trained_in_loop=True)


def test_channel_last_group_norm_matches_equinox_per_image():
    layer = eqx.nn.GroupNorm(2, 6)
    layer = eqx.tree_at(lambda n: (n.weight, n.bias), layer, (jnp.arange(1.0, 7.0), jnp.arange(6.0) - 2.0))
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(2), (3, 4, 5, 6))
    expected = jnp.moveaxis(jax.vmap(layer)(jnp.moveaxis(x, -1, 1)), 1, -1)
    np.testing.assert_allclose(group_norm(layer, x), expected, rtol=1e-5, atol=1e-5)


def test_attention_block_by_hand():
    """x + proj(softmax(q k^T / sqrt(C)) v) over the H*W positions of each image, q, k, v = the three channel
    thirds of the 1x1 conv qkv(GroupNorm(x))."""
    block = AttnBlock(4, key=jax.random.key(3))
    x = np.asarray(jax.random.normal(jax.random.key(4), (2, 3, 3, 4)))
    out = np.asarray(block(jnp.asarray(x)))
    normed = np.asarray(group_norm(block.norm, jnp.asarray(x))).reshape(2, 9, 4)
    w_qkv = np.asarray(block.qkv.weight)[:, :, 0, 0]  # (3C, C)
    qkv = normed @ w_qkv.T + np.asarray(block.qkv.bias).reshape(-1)
    q, k, v = qkv[..., :4], qkv[..., 4:8], qkv[..., 8:]
    for n in range(2):
        logits = q[n] @ k[n].T / np.sqrt(4.0)
        attn = np.exp(logits - logits.max(-1, keepdims=True))
        attn /= attn.sum(-1, keepdims=True)
        mixed = attn @ v[n]
        proj = mixed @ np.asarray(block.proj.weight)[:, :, 0, 0].T + np.asarray(block.proj.bias).reshape(-1)
        np.testing.assert_allclose(out[n], x[n] + proj.reshape(3, 3, 4), rtol=1e-4, atol=1e-5)


def test_gradient_perceptual_loss_by_hand():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(2, 5, 4, 3)).astype(np.float32), rng.normal(size=(2, 5, 4, 3)).astype(np.float32)
    d = x - y  # (N, H, W, C): horizontal differences along axis 2, vertical along axis 1
    expected = np.mean(np.abs(np.diff(d, axis=2))) + np.mean(np.abs(np.diff(d, axis=1)))
    loss = perceptual_loss(jnp.asarray(x), jnp.asarray(y), "gradient")
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert float(perceptual_loss(jnp.asarray(x), jnp.asarray(y), "none")) == 0.0


def test_foreground_weighted_l1_by_hand():
    """`tokenizer.foreground_weight` (ours): pixels that differ from the batch's per-pixel median frame by more
    than 0.05 in some channel weigh 1 + weight, the rest 1; weight 0 is IRIS's plain mean L1."""
    x = -np.ones((3, 3, 1, 2), np.float32)  # 3 frames, 3 channels, 1 x 2 pixels, background -1
    x[0, 1, 0, 0] = 0.6  # a green sprite on pixel (0, 0) of frame 0: foreground (median there is -1)
    x[2, 0, 0, 1] = -0.96  # a change of 0.04 on pixel (0, 1) of frame 2: below the 0.05 threshold
    x[1, 2, 0, 1] = -0.9  # pixel (0, 1) of frame 1: foreground by its blue channel alone (0.1 > 0.05)
    rng = np.random.default_rng(3)
    x_hat = x + rng.normal(scale=0.3, size=x.shape).astype(np.float32)
    error = np.abs(x - x_hat)  # (frame, channel, row, col)
    weight = 4.0
    pixel_weights = {(0, 0, 0): 1 + weight, (1, 0, 1): 1 + weight}  # (frame, row, col) of the two sprites
    numerator = denominator = 0.0
    for n in range(3):
        for col in range(2):
            w = pixel_weights.get((n, 0, col), 1.0)
            numerator += w * error[n, :, 0, col].sum()
            denominator += 3 * w
    channel_last = lambda a: jnp.asarray(np.moveaxis(a, 1, -1))  # noqa: E731  the tokenizer's (N, H, W, C)
    np.testing.assert_allclose(reconstruction_l1(channel_last(x), channel_last(x_hat), weight),
                               numerator / denominator, rtol=1e-6)  # fmt: skip
    np.testing.assert_allclose(reconstruction_l1(channel_last(x), channel_last(x_hat), 0.0), error.mean(),
                               rtol=1e-6)  # fmt: skip


def toy_frames(count=6, size=16):
    """Coloured squares at different places on a dark background."""
    rng = np.random.default_rng(3)
    frames = np.full((count, size, size, 3), 20, np.uint8)
    for i in range(count):
        r, c = rng.integers(0, size - 6, 2)
        frames[i, r : r + 6, c : c + 6] = rng.integers(80, 256, 3)
    return frames


@pytest.mark.slow  # ~3 min on a shared 2-core CPU (300 Adam steps)
def test_tokenizer_learns_to_reconstruct_toy_frames():
    tok = Tokenizer(resolution=16, channels=16, mults=(1, 2, 2), res_blocks=1, attn_resolutions=(4,),
                    z_channels=16, embed_dim=16, vocab=32, beta=1.0, perceptual="gradient",
                    perceptual_scale=1.0, key=jax.random.key(0))  # fmt: skip
    frames = jnp.asarray(toy_frames())
    assert tok.encode(frames).shape == (6, 16)  # 16x16 frame, two downsamplings: 4x4 tokens
    opt = optax.adam(2e-3)
    params, static = eqx.partition(tok, eqx.is_inexact_array)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state):
        def loss(params):
            terms, _ = eqx.combine(params, static).loss(frames)
            return sum(terms.values()), terms

        (_, terms), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, terms

    first = None
    for _ in range(300):
        params, opt_state, terms = step(params, opt_state)
        first = first or {k: float(v) for k, v in terms.items()}
    model = eqx.combine(params, static)
    recon = np.asarray(model.decode(model.encode(frames)))
    error = np.abs(recon - np.asarray(frames) / 255.0).mean()
    assert error < 0.05, (first, {k: float(v) for k, v in terms.items()}, error)
    # Each square must survive quantisation: its mean colour within 15% of the truth.
    truth = np.asarray(frames) / 255.0
    bright = truth.sum(-1) > 0.5
    assert np.abs(recon[bright] - truth[bright]).mean() < 0.15


def test_warmup_loss_decodes_the_encoder_output_and_counts_only_l1():
    """`tokenizer.warmup_updates` (ours): during the warm-up the decoder reads the encoder's output itself
    (no quantisation), the VQ and perceptual terms are zero and the codebook gets no gradient."""
    tok = Tokenizer(resolution=16, channels=8, mults=(1, 1, 1), res_blocks=1, attn_resolutions=(4,),
                    z_channels=8, embed_dim=8, vocab=16, beta=1.0, perceptual="gradient",
                    perceptual_scale=1.0, key=jax.random.key(1))  # fmt: skip
    frames = jnp.asarray(toy_frames(3))
    z, x = tok._encode(frames)

    def decode(latents):
        x_hat = tok.decoder(latents)
        return float(jnp.mean(jnp.abs(x - x_hat)))

    warm, _ = tok.loss(frames, True)
    assert float(warm["vq"]) == 0.0 and float(warm["perceptual"]) == 0.0
    np.testing.assert_allclose(float(warm["rec_l1"]), decode(z), rtol=1e-5)
    cold, _ = tok.loss(frames, False)
    _, z_q = quantize(z.reshape(-1, z.shape[-1]), tok.codebook)
    np.testing.assert_allclose(float(cold["rec_l1"]), decode(z_q.reshape(z.shape)), rtol=1e-5)
    assert abs(decode(z) - decode(z_q.reshape(z.shape))) > 1e-4  # the two inputs differ, so the check can fail
    assert float(cold["vq"]) > 0.0 and float(cold["perceptual"]) > 0.0

    grads = jax.grad(lambda t: sum(t.loss(frames, True)[0].values()))(tok)
    np.testing.assert_array_equal(grads.codebook, np.zeros_like(tok.codebook))


def test_codebook_from_draws_distinct_encodings():
    tok = Tokenizer(resolution=16, channels=8, mults=(1, 1, 1), res_blocks=1, attn_resolutions=(4,),
                    z_channels=8, embed_dim=8, vocab=16, beta=1.0, perceptual="gradient",
                    perceptual_scale=1.0, key=jax.random.key(2))  # fmt: skip
    frames = jnp.asarray(toy_frames(2))  # 2 frames x 16 tokens = 32 encodings for 16 entries
    z, _ = tok._encode(frames)
    flat = np.asarray(z).reshape(-1, z.shape[-1])
    book = np.asarray(tok.codebook_from(frames, jax.random.key(3)))
    assert book.shape == (16, 8)
    rows = [int(np.argmin(np.abs(flat - row).sum(-1))) for row in book]
    np.testing.assert_allclose(book, flat[rows], rtol=1e-6)  # each entry is one of the encodings
    assert len(set(rows)) == 16  # drawn without replacement
