"""Layers of agents/common/nets.py: shapes, the fast upsampling convolution, block-linear, block GRU."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.common.conv import (Conv2d, ConvDecoder, ConvEncoder, conv2d, general_conv, normed_activation,
                                upsample_nearest)
from agents.common.nets import BlockGRU, BlockLinear, Linear, RMSNorm
from tests.helpers import convolution_group_counts


def test_trunc_normal_init_scale_and_zero_outscale():
    layer = Linear(400, 300, key=jax.random.key(0))
    np.testing.assert_allclose(np.std(layer.weight), math.sqrt(1 / 400), rtol=0.05)
    assert np.all(np.asarray(layer.bias) == 0)
    assert np.all(np.asarray(Linear(4, 3, outscale=0.0, key=jax.random.key(0)).weight) == 0)


def test_rmsnorm():
    x = jnp.array([3.0, 4.0])
    np.testing.assert_allclose(RMSNorm(2, eps=0.0)(x), x / math.sqrt(12.5), rtol=1e-6)


@pytest.mark.parametrize("act", ["silu", "tanh"])
def test_normed_activation_and_its_hand_written_gradient_equal_the_plain_form(act):
    """act(x / sqrt(mean(x^2) + eps) * scale), written out here; its gradients by autodiff of that expression."""
    fn = {"silu": jax.nn.silu, "tanh": jnp.tanh}[act]
    norm = eqx.tree_at(lambda n: n.scale, RMSNorm(5), jax.random.uniform(jax.random.key(2), (5,)) + 0.5)
    x = 2.0 * jax.random.normal(jax.random.key(0), (3, 4, 4, 5))
    weights = jax.random.normal(jax.random.key(1), x.shape)

    def plain(x, scale):
        return fn(x / jnp.sqrt(jnp.mean(x * x, axis=-1, keepdims=True) + norm.eps) * scale)

    def ours(x, scale):
        return normed_activation(eqx.tree_at(lambda n: n.scale, norm, scale), act, x)

    np.testing.assert_allclose(ours(x, norm.scale), plain(x, norm.scale), rtol=1e-5, atol=1e-6)
    loss = lambda f: lambda x, scale: jnp.sum(weights * f(x, scale))
    for a, b in zip(jax.grad(loss(ours), (0, 1))(x, norm.scale), jax.grad(loss(plain), (0, 1))(x, norm.scale)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_block_linear_equals_block_diagonal_matrix():
    layer = BlockLinear(6, 4, 2, key=jax.random.key(0))
    layer = jax.tree.map(lambda b: b + 0.5, layer)  # non-zero bias too
    x = jax.random.normal(jax.random.key(1), (6,))
    dense = np.zeros((6, 4))
    dense[:3, :2] = layer.weight[0]
    dense[3:, 2:] = layer.weight[1]
    np.testing.assert_allclose(layer(x), x @ dense + layer.bias, rtol=1e-5)


def test_block_linear_with_shared_equals_each_block_fed_its_slice_and_the_shared_part():
    layer = BlockLinear(2 * (3 + 5), 2 * 4, 2, key=jax.random.key(0))  # per block: 3 own inputs, 5 shared
    layer = jax.tree.map(lambda b: b + 0.5, layer)
    own = np.asarray(jax.random.normal(jax.random.key(1), (7, 6)))
    shared = np.asarray(jax.random.normal(jax.random.key(2), (7, 5)))
    w = np.asarray(layer.weight, np.float64)
    expected = np.concatenate([np.concatenate([own[:, 3 * g:3 * g + 3], shared], 1) @ w[g] for g in range(2)], 1)
    np.testing.assert_allclose(layer.with_shared(own, shared), expected + 0.5, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="3 \\+ 4 inputs per block, the layer takes 8"):
        layer.with_shared(own, shared[:, :4])


@pytest.mark.parametrize("kernel", [3, 5])
def test_upsampled_conv_equals_upsample_then_conv(kernel):
    conv = Conv2d(3, 4, kernel, key=jax.random.key(0))
    conv = jax.tree.map(lambda b: b + 0.1, conv)
    x = jax.random.normal(jax.random.key(1), (4, 5, 3))
    np.testing.assert_allclose(conv.upsampled(x), conv(upsample_nearest(x)), rtol=1e-4, atol=1e-5)


def test_encoder_decoder_shapes():
    encoder = ConvEncoder((64, 64, 3), 4, (2, 3, 4, 4), 5, key=jax.random.key(0))
    image = jnp.zeros((64, 64, 3), jnp.uint8)
    assert encoder(image).shape == (4 * 4 * 16,) == (encoder.out_size,)
    decoder = ConvDecoder(64, 8, (64, 64, 3), 4, (2, 3, 4, 4), 5, units=16, blocks=8, key=jax.random.key(1))
    out = decoder(jnp.ones(64), jnp.ones(8))
    assert out.shape == (64, 64, 3)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_block_gru_keeps_state_when_update_gate_closed():
    gru = BlockGRU(8, 6, 2, 4, blocks=2, key=jax.random.key(0))
    deter = jax.random.uniform(jax.random.key(1), (8,), minval=-1, maxval=1)
    out = gru(deter, jnp.ones(6), jnp.array([3.0, -0.5]))
    assert out.shape == (8,)
    # Drive the update gate shut through its bias: the state must be carried over unchanged.
    bias = gru.gates.bias.reshape(2, 3, -1).at[:, 2].set(-1e4).reshape(-1)
    closed = eqx.tree_at(lambda g: g.gates.bias, gru, bias)
    np.testing.assert_allclose(closed(deter, jnp.ones(6), jnp.zeros(2)), deter, atol=1e-6)



def test_max_pool_gradient_goes_to_the_maximum():
    from agents.common.conv import max_pool_2x2

    x = jnp.array([[1.0, 5.0, 0.0, -1.0], [2.0, 3.0, -2.0, -3.0]])[..., None]  # (2, 4, 1)
    np.testing.assert_array_equal(max_pool_2x2(x)[..., 0], [[5.0, 0.0]])
    grad = jax.grad(lambda x: jnp.sum(max_pool_2x2(x) * jnp.array([[2.0], [3.0]])))(x)
    np.testing.assert_array_equal(grad[..., 0], [[0, 2.0, 3.0, 0], [0, 0, 0, 0]])
    batched_x = jax.random.normal(jax.random.key(0), (3, 8, 8, 5))
    reference = jax.grad(lambda x: jnp.sum(jnp.sin(x.reshape(3, 4, 2, 4, 2, 5).max((2, 4)))))(batched_x)
    np.testing.assert_allclose(jax.grad(lambda x: jnp.sum(jnp.sin(jax.vmap(max_pool_2x2)(x))))(batched_x), reference)


@pytest.mark.parametrize("kernel", [3, 5])
def test_pooled_conv_equals_conv_then_max_pool(kernel):
    from agents.common.conv import max_pool_2x2

    conv = Conv2d(3, 5, kernel, key=jax.random.key(0))
    conv = jax.tree.map(lambda b: b + 0.1, conv)
    x = jax.random.normal(jax.random.key(1), (8, 12, 3))
    np.testing.assert_allclose(conv.pooled(x), max_pool_2x2(conv(x)), rtol=1e-5, atol=1e-5)
    grads = [jax.grad(lambda c: jnp.sum(jnp.sin(f(c))))(conv) for f in (lambda c: c.pooled(x), lambda c: max_pool_2x2(c(x)))]
    np.testing.assert_allclose(grads[0].weight, grads[1].weight, rtol=1e-4, atol=1e-5)


def _plain_conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("every_stage", [True, False])
def test_encoder_equals_plain_conv_pool_norm_act(kernel, every_stage, monkeypatch):
    """Every encoder stage (at half resolution, `Conv2d.pooled`, or plain; the first always pooled) is
    XLA's 'SAME' convolution + bias, a 2x2 max-pool, x / sqrt(mean(x^2) + eps) * scale and SiLU; pixels
    scaled to [-0.5, 0.5]."""
    from agents.common import conv as conv_module

    monkeypatch.setattr(conv_module, "pool_stage", lambda channels: every_stage)
    encoder = ConvEncoder((16, 16, 3), 2, (2, 3, 4), kernel, key=jax.random.key(0))
    encoder = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(3), p.shape), encoder)
    images = jax.random.randint(jax.random.key(1), (3, 16, 16, 3), 0, 256).astype(jnp.uint8)

    def plain(enc):
        x = images.astype(jnp.float32) / 255.0 - 0.5
        for conv, norm in zip(enc.convs, enc.norms):
            x = _plain_conv(x, conv.weight) + conv.bias
            x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
            x = x / jnp.sqrt(jnp.mean(x**2, axis=-1, keepdims=True) + norm.eps) * norm.scale
            x = x * jax.nn.sigmoid(x)
        return x.reshape(x.shape[0], -1)

    np.testing.assert_allclose(encoder(images), plain(encoder), rtol=1e-4, atol=1e-5)
    weights = jax.random.normal(jax.random.key(2), (3, encoder.out_size))
    gradient = lambda f: jax.grad(lambda e: jnp.sum(f(e) * weights))(encoder)
    ours, reference = gradient(lambda e: e(images)), gradient(plain)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_later_encoder_stages_run_pooled_on_cpu_up_to_16_channels(monkeypatch):
    """The speed rule of `conv.pool_stage` (docs/cpu_runs.md): on CPU stages of at most 16 channels (`debug`,
    `size1m`) pooled, `size12m`'s 32-64 plain; elsewhere every later stage plain."""
    from agents.common import conv as conv_module

    assert conv_module.pool_stage(16) and not conv_module.pool_stage(32)
    monkeypatch.setattr(conv_module, "cpu_forms", lambda: False)
    assert not conv_module.pool_stage(16)


@pytest.mark.parametrize("kernel, channels, patch_products", [
    (3, (3, 4), False), (5, (3, 4), False), (3, (12, 32), True), (5, (12, 32), True), (3, (32, 48), True),
    (5, (32, 48), False)])  # fmt: skip
def test_conv2d_gradients_equal_xla(kernel, channels, patch_products):
    """conv2d's forward pass and input gradient are chunked patch products (a loop in the program) where they
    have 32-64 output channels and 100-600 taps x input channels (12 -> 32: the forward pass; 32 -> 48 with a
    3 x 3 kernel: both), XLA's convolution elsewhere: XLA's values and gradients either way."""
    x = jax.random.normal(jax.random.key(0), (6, 8, 8, channels[0]))
    w = jax.random.normal(jax.random.key(1), (kernel, kernel, *channels))
    assert ("stablehlo.while" in jax.jit(conv2d).lower(x, w).as_text()) == patch_products
    loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))
    np.testing.assert_allclose(conv2d(x, w), _plain_conv(x, w), rtol=1e-5, atol=1e-5)
    ours = jax.grad(loss(conv2d), argnums=(0, 1))(x, w)
    plain = jax.grad(loss(_plain_conv), argnums=(0, 1))(x, w)
    for a, b in zip(ours, plain):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # Under vmap (one image per call) the gradient is the same.
    per_image = jax.grad(lambda w: jnp.sum(jax.vmap(lambda im: jnp.sin(conv2d(im[None], w)))(x)))(w)
    np.testing.assert_allclose(per_image, plain[1], rtol=1e-4, atol=1e-4)


def _check_vmapped_conv_per_index(convolve, plain, kernel: int, mapped: str):
    """Under jax.vmap over 3 indices (images and/or kernels mapped), every index's value and gradients equal
    `plain`'s for that index's images and kernel, and no convolution in the program is grouped."""
    xs = jax.random.normal(jax.random.key(0), (3, 2, 6, 6, 4))
    ws = jax.random.normal(jax.random.key(1), (3, kernel, kernel, 4, 5))
    x_axis, w_axis = {"both": (0, 0), "images": (0, None), "kernels": (None, 0)}[mapped]
    loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)) * jnp.arange(5.0))
    mapped_step = jax.jit(jax.vmap(jax.value_and_grad(loss(convolve), argnums=(0, 1)), in_axes=(x_axis, w_axis)))
    args = (xs if x_axis == 0 else xs[0], ws if w_axis == 0 else ws[0])
    assert convolution_group_counts(mapped_step.lower(*args).as_text()) == {1}
    ours = mapped_step(*args)
    for index in range(3):
        x, w = xs[index if x_axis == 0 else 0], ws[index if w_axis == 0 else 0]
        value, grads = jax.value_and_grad(loss(plain), argnums=(0, 1))(x, w)
        np.testing.assert_allclose(ours[0][index], value, rtol=1e-4, atol=1e-4)
        for a, b in zip(ours[1], grads):
            np.testing.assert_allclose(a[index], b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mapped", ["both", "images", "kernels"])
def test_conv2d_under_vmap_equals_xla_for_each_index(mapped):
    """`bench run --vmap` maps conv2d over seeds, each with its own kernel (agents/common/conv.py runs one
    convolution and one weight gradient per index then): every index's value and gradients are XLA's plain
    convolution's for that index's images and kernel; so with shared kernels or shared images."""
    _check_vmapped_conv_per_index(conv2d, _plain_conv, 5, mapped)


@pytest.mark.parametrize("mapped", ["both", "images", "kernels"])
@pytest.mark.parametrize("kernel, stride, padding", [(3, 2, ((0, 1), (0, 1))), (1, 1, ((0, 0), (0, 0))),
                                                     (3, 1, ((1, 1), (1, 1)))])  # fmt: skip
def test_general_conv_equals_xla_and_stays_ungrouped_under_vmap(mapped, kernel, stride, padding):
    """IRIS's tokenizer convolutions (stride-2 downsampling padded right/bottom, 1x1, 3x3): `general_conv` is
    XLA's convolution with XLA's gradients, and under vmap with a kernel per seed it runs plain ones."""
    convolve = general_conv((stride, stride), padding)
    plain = lambda x, w: jax.lax.conv_general_dilated(x, w, (stride, stride), padding,
                                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip
    _check_vmapped_conv_per_index(convolve, plain, kernel, mapped)


def _convolution_and_xla(which: str):
    """(conv2d or an IRIS-like stride-2 general_conv, and XLA's convolution with the same settings)."""
    stride, padding = (1, "SAME") if which == "conv2d" else (2, ((0, 1), (0, 1)))
    convolve = conv2d if which == "conv2d" else general_conv((stride, stride), padding)
    plain = lambda x, w: jax.lax.conv_general_dilated(x, w, (stride, stride), padding,
                                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip
    return convolve, plain


def _check_each_seed(step, plain, loss, xs, ws):
    """Each seed's slice of the vmapped `step`'s value and gradients equals `plain`'s for that seed alone."""
    ours = step(xs, ws)
    for seed in range(xs.shape[0]):
        value, grads = jax.value_and_grad(loss(plain), argnums=(0, 1))(xs[seed], ws[seed])
        np.testing.assert_allclose(ours[0][seed], value, rtol=1e-4, atol=1e-4)
        for a, b in zip(ours[1], grads):
            np.testing.assert_allclose(a[seed], b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("which", ["conv2d", "general_conv"])
def test_off_cpu_convolutions_under_vmap_are_xla_batched(which, monkeypatch):
    """Off the CPU (`cpu_forms()` False, as on GPUs) a convolution vmapped with a kernel per seed is XLA's own
    batching, one grouped convolution (cuDNN's kernels), not one plain convolution per seed: XLA's values and
    gradients for each seed."""
    from agents.common import conv as conv_module

    monkeypatch.setattr(conv_module, "cpu_forms", lambda: False)
    convolve, plain = _convolution_and_xla(which)
    xs = jax.random.normal(jax.random.key(0), (3, 2, 6, 6, 4))
    ws = jax.random.normal(jax.random.key(1), (3, 3, 3, 4, 5))
    loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)) * jnp.arange(5.0))
    step = jax.jit(jax.vmap(jax.value_and_grad(loss(convolve), argnums=(0, 1))))
    assert convolution_group_counts(step.lower(xs, ws).as_text()) - {1}  # some grouped: XLA's batching
    _check_each_seed(step, plain, loss, xs, ws)


@pytest.mark.parametrize("which", ["conv2d", "general_conv"])
def test_convolutions_stay_ungrouped_under_nested_vmaps(which):
    """A seed vmap around an agent's own vmap over frames with shared kernels (as `bench run --vmap` would do
    to an agent that vmaps its encoder): still no grouped convolution, and XLA's values and gradients."""
    convolve, plain = _convolution_and_xla(which)
    xs = jax.random.normal(jax.random.key(0), (2, 3, 2, 6, 6, 4))  # seeds, frames, images
    ws = jax.random.normal(jax.random.key(1), (2, 3, 3, 4, 5))
    loss = lambda f: lambda x, w: jnp.sum(jnp.sin(jax.vmap(lambda frame: f(frame, w))(x)) * jnp.arange(5.0))
    step = jax.jit(jax.vmap(jax.value_and_grad(loss(convolve), argnums=(0, 1))))
    assert convolution_group_counts(step.lower(xs, ws).as_text()) == {1}
    _check_each_seed(step, plain, loss, xs, ws)


def test_encoder_and_decoder_take_leading_batch_dims():
    encoder = ConvEncoder((16, 16, 3), 2, (2, 3), 5, key=jax.random.key(0))
    images = jax.random.randint(jax.random.key(1), (2, 3, 16, 16, 3), 0, 255).astype(jnp.uint8)
    tokens = encoder(images)
    assert tokens.shape == (2, 3, encoder.out_size)
    np.testing.assert_allclose(tokens[1, 2], encoder(images[1, 2]), rtol=1e-5, atol=1e-5)
    decoder = ConvDecoder(8, 4, (16, 16, 3), 2, (2, 3), 5, units=8, blocks=2, key=jax.random.key(2))
    out = decoder(jnp.ones((2, 3, 8)), jnp.ones((2, 3, 4)))
    assert out.shape == (2, 3, 16, 16, 3)
    np.testing.assert_allclose(out[0, 1], decoder(jnp.ones(8), jnp.ones(4)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("form, loop, convolutions", [
    ("patch products", True, 2), ("XLA's per chunk", False, 5), ("XLA's per chunk, wide layer", False, 4),
    ("not on CPU", False, 3)])  # fmt: skip
@pytest.mark.parametrize("kernel", [3, 5])
def test_conv2d_weight_gradient_forms(form, loop, convolutions, kernel, monkeypatch):
    """On CPU conv2d's weight gradient is a loop of patch products over batch chunks, or for narrow layers one
    XLA weight-gradient convolution per chunk (6 images, 2 per chunk: 3 of them, besides the forward pass and
    the input gradient; for a layer counted wide, 3 per chunk: 2); elsewhere (`cpu_forms()` False, as on GPUs)
    XLA's own gradient, one convolution. Values and gradients equal XLA's in every form."""
    from agents.common import conv as conv_module

    monkeypatch.setattr(conv_module, "cpu_forms", lambda: form != "not on CPU")
    monkeypatch.setattr(conv_module, "PATCH_CHUNK_BYTES", 8 * 8 * kernel**2 * 3 * 4 * 2)  # 2 images per chunk
    monkeypatch.setattr(conv_module, "XLA_GRADIENT_CHUNK_BYTES", 8 * 8 * 3 * 4 * 2)  # 2 images per chunk
    monkeypatch.setattr(conv_module, "XLA_GRADIENT_MIN_IMAGES", 2)
    if form == "patch products":
        monkeypatch.setattr(conv_module, "XLA_GRADIENT_MAX_CHANNELS", 3)
    if form == "XLA's per chunk, wide layer":
        monkeypatch.setattr(conv_module, "XLA_GRADIENT_WIDE_CHANNELS", 4)
        monkeypatch.setattr(conv_module, "XLA_GRADIENT_WIDE_CHUNK_BYTES", 8 * 8 * 3 * 4 * 3)  # 3 images per chunk
    x = jax.random.normal(jax.random.key(0), (6, 8, 8, 3))
    w = jax.random.normal(jax.random.key(1), (kernel, kernel, 3, 4))
    loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))
    step = jax.jit(jax.value_and_grad(loss(conv2d), argnums=(0, 1)))
    program = step.lower(x, w).as_text()
    assert ("stablehlo.while" in program) == loop
    assert program.count("stablehlo.convolution") == convolutions
    value, grads = step(x, w)
    plain_value, plain_grads = jax.value_and_grad(loss(_plain_conv), argnums=(0, 1))(x, w)
    np.testing.assert_allclose(value, plain_value, rtol=1e-5, atol=1e-4)
    for a, b in zip(grads, plain_grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
