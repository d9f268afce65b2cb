"""Convolutional encoder and decoder of DreamerV3 (2024), tuned for XLA on CPU.

Unlike the dense layers, these networks take images with ANY leading batch shape (a single (H, W, C) image
works too): their weight gradients are computed for the whole batch at once by `conv2d` below, which is
where most of a DreamerV3 update's time goes. Under `jax.vmap` (over seeds, frames, or both) their
convolutions stay plain ones (`mapped_per_index`), and the weight gradient runs once per mapped index.

Speed-ups that leave the math unchanged (each tested against the plain form):

* `conv2d`: XLA computes a convolution's weight gradient as a convolution with the batch as the contracting
  dimension, which runs at a fraction of the machine's matmul speed on CPU. There we compute it as a sum over
  small batch chunks of patches^T @ grad, where the patch matrix of a chunk stays in cache, or, for layers of
  at most 64 channels, as XLA's weight-gradient convolution of each small chunk; and the forward pass and
  input gradient as patches @ kernel where that runs faster (`_fast_conv`). Elsewhere (GPUs) `conv2d` is
  XLA's convolution with XLA's gradients (`cpu_forms`).
* `Conv2d.pooled`: conv followed by 2x2 max-pooling, computed at half resolution (space-to-depth): 4x the
  channels on each side, for 1.44x the multiply-adds of a 5x5 kernel. The first encoder stage (3 input
  channels) always; on CPU later stages too where that measured faster (`pool_stage`), since XLA runs
  convolutions with few channels slowly.
* `Conv2d.upsampled`: conv after 2x nearest upsampling, computed at the low resolution with one small kernel
  per output phase (decoder): 9/25 of the multiply-adds.
* `max_pool_2x2`: a one-pass gradient instead of XLA's generic gradient of a max reduction.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from agents.common.nets import (BlockLinear, Linear, NormedLinear, RMSNorm, activation, product_operands,
                                trunc_normal_in)

# Batch images per chunk in the weight gradient: the chunk's patch matrix should fit in the cache. 2 MiB
# ran 1.01-1.08x as fast as 8 MiB per update, 32 MiB slower (scripts/ab_variants/patch_chunk.py).
PATCH_CHUNK_BYTES = 2 * 2**20
DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def mapped_per_index(fn, *, one_mapped=None):
    """`fn` of arrays, run under `jax.vmap` as one plain call per mapped index (the seeds of `bench run --vmap`:
    each seed its own images and kernels). XLA's own batching of a convolution with a kernel per index is one
    grouped convolution, which its CPU backend runs ~10x slower per image than plain ones.

    `one_mapped(call, axis_size, in_batched, *args)`, where given, computes the mapped result when only one
    argument is mapped through `call` (this function again, so an enclosing `jax.vmap` still gets this rule)
    or returns None; otherwise, and by default, shared arguments are broadcast and looped over too."""
    wrapped = jax.custom_batching.custom_vmap(fn)

    @wrapped.def_vmap
    def rule(axis_size, in_batched, *args):
        out = one_mapped(wrapped, axis_size, in_batched, *args) if one_mapped and sum(in_batched) == 1 else None
        if out is None:
            args = [value if mapped else jnp.broadcast_to(value, (axis_size, *value.shape))
                    for value, mapped in zip(args, in_batched)]  # fmt: skip
            calls = [wrapped(*(value[index] for value in args)) for index in range(axis_size)]
            out = jax.tree.map(lambda *per_index: jnp.stack(per_index), *calls)
        return out, jax.tree.map(lambda _: True, out)

    return wrapped


def _fold_convolution(call, axis_size: int, in_batched, x: Array, weight: Array, groups: int = 1) -> Array | None:
    """A convolution mapped over images only or kernels only, as one convolution: a shared kernel takes the
    mapped axis into the image batch; shared images take the kernels side by side as output channels (not
    for grouped convolutions: None)."""
    x_mapped, _ = in_batched
    if x_mapped:
        y = call(x.reshape(-1, *x.shape[2:]), weight)
        return y.reshape(axis_size, x.shape[1], *y.shape[1:])
    if groups != 1:
        return None
    y = call(x, jnp.concatenate(list(weight), axis=-1))
    return jnp.moveaxis(y.reshape(*y.shape[:-1], axis_size, -1), -2, 0)


# Forward and input-gradient convolutions with 32-64 output channels and 100-600 taps x input channels run as
# chunked patch products (`_patch_conv`; on CPU only, as the weight gradient). Whole DreamerV3 updates with them
# against XLA's convolutions (scripts/ab_variants/patch_forward.py): `debug` 1.07-1.08x as fast, `size1m`
# 1.07-1.09x; at `size12m` 0.97-0.99x with no upper bounds and 1.01x with them. Alone (probed at these shapes),
# fewer output channels or taps ran slower than XLA's convolution (0.84-0.87x).
PATCH_CONV_MIN_OUT, PATCH_CONV_MAX_OUT, PATCH_CONV_MIN_TAPS, PATCH_CONV_MAX_TAPS = 32, 64, 100, 600
PATCH_CONV = True


def _xla_conv(x, weight):
    return jax.lax.conv_general_dilated(x, weight, (1, 1), "SAME", dimension_numbers=DIMENSIONS)


def _patches(x: Float[Array, "n h w i"], kernel: int) -> Float[Array, "n*h*w k*k*i"]:
    """Every pixel's k x k neighbourhood ('SAME' zero padding), taps then channels along the last axis."""
    _, height, width, channels = x.shape
    radius = kernel // 2
    padded = jnp.pad(x, ((0, 0), (radius, radius), (radius, radius), (0, 0)))
    taps = [padded[:, dy : dy + height, dx : dx + width] for dy in range(kernel) for dx in range(kernel)]
    return jnp.concatenate(taps, -1).reshape(-1, kernel * kernel * channels)


def _patch_conv(x: Float[Array, "n h w i"], weight: Float[Array, "k k i o"]) -> Float[Array, "n h w o"]:
    """The stride-1 'SAME' convolution as patches @ kernel, over batch chunks whose patches stay in cache."""
    batch, height, width, channels = x.shape
    kernel, out = weight.shape[0], weight.shape[-1]
    chunk = _chunk_size(batch, height * width * kernel * kernel * channels * 4)
    flat_weight = weight.reshape(-1, out)
    per_chunk = lambda x_chunk: (_patches(x_chunk, kernel) @ flat_weight).reshape(chunk, height, width, out)
    return jax.lax.map(per_chunk, x.reshape(batch // chunk, chunk, height, width, channels)).reshape(
        batch, height, width, out)


def _fast_conv(x, weight):
    kernel, channels, out = weight.shape[0], weight.shape[2], weight.shape[3]
    taps = kernel * kernel * channels
    wide_enough = PATCH_CONV_MIN_OUT <= out <= PATCH_CONV_MAX_OUT
    if PATCH_CONV and wide_enough and PATCH_CONV_MIN_TAPS <= taps <= PATCH_CONV_MAX_TAPS:
        return _patch_conv(x, weight)
    return _xla_conv(x, weight)


_conv = mapped_per_index(_fast_conv, one_mapped=_fold_convolution)


def _input_gradient(grad: Float[Array, "n h w o"], weight: Float[Array, "k k i o"]) -> Float[Array, "n h w i"]:
    """d(sum grad * conv(x, w)) / dx: the stride-1 'SAME' convolution of grad with the kernel flipped in space
    and its channel axes swapped (odd kernel: the padding is symmetric)."""
    return _conv(grad, jnp.flip(weight, (0, 1)).swapaxes(2, 3))


def _chunk_size(batch: int, bytes_per_image: int, chunk_bytes: int | None = None) -> int:
    """The largest divisor of `batch` whose images' bytes fit in `chunk_bytes` (by default PATCH_CHUNK_BYTES,
    for patches; at least 1)."""
    limit = max(1, (PATCH_CHUNK_BYTES if chunk_bytes is None else chunk_bytes) // max(1, bytes_per_image))
    return max(d for d in range(1, min(batch, limit) + 1) if batch % d == 0)


# Weight gradients of narrow layers (at most 64 channels in and out) run as XLA's own weight-gradient
# convolution over batch chunks of at most 256 KiB of input (4 images or more), one call per chunk, summed
# in float32: DreamerV3's whole update 1.09-1.10x as fast at `debug` and 1.03-1.11x at `size1m` as with the
# patch products (scripts/ab_variants/weight_gradient_xla_chunks.py). Timed alone at 1024 images
# (scripts/weight_gradient_probe.py), XLA's ran 1.06-1.60x as fast as the patch products per 256 KiB chunk at
# 16x16 and 32x32 layers, but 0.13-0.44x over the whole batch and 0.04x per chunk inside a `lax.scan`: hence
# the chunks, as separate calls. They cost compile time: up to 256 calls per layer at `size1m`, whose update
# compiled in 34 s against 14 s before (`debug` 14-15 s against 11 s). `size12m`'s pooled layers (128-256
# channels) keep the patch products, which ran 0.93x as fast in this form. Layers of 32-64 channels (`size12m`'s
# decoder and its plain encoder stages) take chunks of 1 MiB: the `size12m` update 1.05-1.11x
# as fast as two batch shards and 1.02x on one device as with 256 KiB (512 KiB: 1.05x and 1.05x; 2 MiB: 0.95x
# as shards; scripts/ab_variants/weight_gradient_wide_chunks.py).
XLA_GRADIENT_MAX_CHANNELS, XLA_GRADIENT_CHUNK_BYTES, XLA_GRADIENT_MIN_IMAGES = 64, 256 * 2**10, 4
XLA_GRADIENT_WIDE_CHANNELS, XLA_GRADIENT_WIDE_CHUNK_BYTES = 32, 1024 * 2**10


def _weight_gradient(x: Float[Array, "n h w i"], grad: Float[Array, "n h w o"], kernel: int) -> Array:
    """d(sum grad * conv(x, w)) / dw: XLA's per chunk for narrow layers, the patch products otherwise."""
    batch, height, width, channels = x.shape
    widest = max(channels, grad.shape[-1])
    if widest <= XLA_GRADIENT_MAX_CHANNELS:
        wide = widest >= XLA_GRADIENT_WIDE_CHANNELS
        chunk_bytes = XLA_GRADIENT_WIDE_CHUNK_BYTES if wide else XLA_GRADIENT_CHUNK_BYTES
        chunk = _chunk_size(batch, height * width * channels * x.dtype.itemsize, chunk_bytes)
        if chunk >= min(batch, XLA_GRADIENT_MIN_IMAGES):
            return _weight_gradient_by_xla(x, grad, kernel, chunk)
    return _weight_gradient_by_patches(x, grad, kernel)


def _weight_gradient_by_patches(x: Float[Array, "n h w i"], grad: Float[Array, "n h w o"],
                                kernel: int) -> Array:  # fmt: skip
    """Sum over pixels of grad outer patch(x), accumulated over chunks whose patches stay in cache, as (out,
    taps x channels in) and transposed once at the end: XLA's CPU product with that output layout ran
    1.16-1.44x as fast as with (taps x channels in, out) at `size12m`'s shapes (256-1024 pixels x 1152 x 192);
    the whole `size12m` update 1.05x as fast, 1.016x as two batch shards
    (scripts/ab_variants/weight_gradient_out_major.py)."""
    batch, height, width, channels = x.shape
    chunk = _chunk_size(batch, height * width * kernel * kernel * channels * 4)
    xs = x.reshape(batch // chunk, chunk, height, width, channels)
    grads = grad.reshape(batch // chunk, chunk, height, width, grad.shape[-1])

    def accumulate(total, inputs):
        x_chunk, grad_chunk = inputs
        flat = _patches(x_chunk, kernel)
        grad_flat = grad_chunk.reshape(flat.shape[0], -1).astype(flat.dtype)  # bfloat16 operands: see nets.py
        return total + jnp.einsum("pk,po->ok", flat, grad_flat).astype(jnp.float32), None

    total = jnp.zeros((grad.shape[-1], kernel * kernel * channels), jnp.float32)
    total, _ = jax.lax.scan(accumulate, total, (xs, grads))
    return total.T.reshape(kernel, kernel, channels, grad.shape[-1])


def _weight_gradient_by_xla(x: Float[Array, "n h w i"], grad: Float[Array, "n h w o"], kernel: int,
                            chunk: int) -> Array:  # fmt: skip
    """The same gradient as XLA's convolution of the images with the output gradient as the window (images
    contracted, the input channels as its batch), one call per `chunk` images, summed in float32."""
    radius = kernel // 2
    total = jnp.zeros((x.shape[-1], kernel, kernel, grad.shape[-1]), jnp.float32)  # (i, k, k, o)
    for start in range(0, x.shape[0], chunk):
        total = total + jax.lax.conv_general_dilated(
            x[start : start + chunk], grad[start : start + chunk].astype(x.dtype), (1, 1),
            ((radius, radius), (radius, radius)), dimension_numbers=("CHWN", "IHWO", "NHWC"),
            preferred_element_type=jnp.float32)  # fmt: skip
    return jnp.transpose(total, (1, 2, 0, 3))


@functools.cache
def _weight_gradient_of(kernel: int):
    """`_weight_gradient` for one kernel size, run once per mapped index under `jax.vmap` (batched, its
    chunked scan and products run ~1.3x slower per index on CPU)."""
    return mapped_per_index(lambda x, grad: _weight_gradient(x, grad, kernel))


def cpu_forms() -> bool:
    """Whether `conv2d` and `general_conv` run their CPU forms (on CPU): the chunked weight gradient and patch
    products, and one plain convolution per index under `jax.vmap`, where XLA's CPU backend runs grouped ones
    ~10x slower. Elsewhere they are XLA's convolution with XLA's gradients and batching (cuDNN's kernels on a
    GPU), because there the chunked gradient is a sequential loop of small products: 256 steps for the first
    encoder stage of a `size12m` DreamerV3 update (1024 images, 442 KB of patches each, 2 MiB chunks). On an
    H200 (docs/gpu_check.md) VSG's and SVSG's `size12m` updates took 0.136 and 0.107 s with 2 MiB chunks on
    2026-12-04 (other jobs compiling on the host meanwhile), 0.054 s each with 8 MiB chunks on 2026-11-30.
    XLA's own gradient has not been measured there yet."""
    return jax.default_backend() == "cpu"


def conv2d(x: Float[Array, "n h w i"], weight: Float[Array, "k k i o"]) -> Float[Array, "n h w o"]:
    """Stride-1 'SAME' convolution of a batch (NHWC, kernel HWIO); on CPU with the fast weight gradient."""
    if cpu_forms():
        return _conv2d_chunked(x, weight)
    return _xla_conv(x, weight)


@jax.custom_vjp
def _conv2d_chunked(x: Float[Array, "n h w i"], weight: Float[Array, "k k i o"]) -> Float[Array, "n h w o"]:
    return _conv(x, weight)


def _conv2d_forward(x, weight):
    return _conv(x, weight), (x, weight)


def _conv2d_backward(residuals, grad):
    x, weight = residuals
    input_grad = _input_gradient(grad.astype(weight.dtype), weight).astype(x.dtype)
    return input_grad, _weight_gradient_of(weight.shape[0])(x, grad).astype(weight.dtype)


_conv2d_chunked.defvjp(_conv2d_forward, _conv2d_backward)


@functools.cache
def general_conv(stride: tuple[int, int], padding: tuple[tuple[int, int], ...], dilation: tuple[int, int] = (1, 1),
                 groups: int = 1):  # fmt: skip
    """XLA's convolution (NHWC, kernel HWIO) with these settings, and XLA's gradients, except that under
    `jax.vmap` with a kernel per index the forward pass and both gradients run as plain convolutions per index
    (`mapped_per_index`) instead of grouped ones; the gradients run per index under any `jax.vmap` (with a
    shared kernel too: each index needs its own weight gradient). That is on CPU; elsewhere XLA's batching
    too (`cpu_forms`). For the strided and unpadded convolutions that `conv2d` does not cover (IRIS's
    tokenizer)."""

    def plain(x, weight):
        return jax.lax.conv_general_dilated(x, weight, stride, padding, rhs_dilation=dilation,
                                            dimension_numbers=DIMENSIONS, feature_group_count=groups)  # fmt: skip

    forward = mapped_per_index(plain, one_mapped=functools.partial(_fold_convolution, groups=groups))
    backward = mapped_per_index(lambda x, weight, grad: jax.vjp(plain, x, weight)[1](grad))

    @jax.custom_vjp
    def convolve(x: Float[Array, "n h w i"], weight: Float[Array, "k k i/g o"]) -> Float[Array, "n h2 w2 o"]:
        return forward(x, weight)

    convolve.defvjp(lambda x, weight: (forward(x, weight), (x, weight)),
                    lambda residuals, grad: backward(*residuals, grad))  # fmt: skip
    return lambda x, weight: convolve(x, weight) if cpu_forms() else plain(x, weight)


def _as_batch(x: Array) -> tuple[Array, tuple[int, ...]]:
    lead = x.shape[:-3]
    return x.reshape((math.prod(lead), *x.shape[-3:])), lead


def _from_batch(y: Array, lead: tuple[int, ...]) -> Array:
    return y.reshape((*lead, *y.shape[1:]))


# ------------------------------------------------------------------------------------------- pooling


def _max_pool_2x2(x: Array) -> Array:
    *lead, height, width, channels = x.shape
    return x.reshape(*lead, height // 2, 2, width // 2, 2, channels).max(axis=(-4, -2))


@jax.custom_vjp
def max_pool_2x2(x: Float[Array, "*b h w c"]) -> Float[Array, "*b h/2 w/2 c"]:
    """2x2 max-pooling. Its gradient is one fused pass: the incoming gradient goes to the input(s) equal to
    the maximum (XLA's generic gradient of a max reduction takes several passes over the large pre-pool
    activation). Exact ties, which do not occur for continuous conv outputs in practice, each receive the
    full gradient instead of a share of it."""
    return _max_pool_2x2(x)


def _max_pool_forward(x):
    pooled = _max_pool_2x2(x)
    return pooled, (x, pooled)


def _max_pool_backward(residuals, grad):
    x, pooled = residuals
    up = lambda a: jnp.repeat(jnp.repeat(a, 2, axis=-3), 2, axis=-2)
    return (jnp.where(x == up(pooled), up(grad), 0.0),)


max_pool_2x2.defvjp(_max_pool_forward, _max_pool_backward)


@jax.custom_vjp
def max_over_phases(x: Float[Array, "*b h w p c"]) -> Float[Array, "*b h w c"]:
    """Maximum over axis -2 with the same one-pass gradient as `max_pool_2x2`."""
    return x.max(axis=-2)


def _max_phases_forward(x):
    pooled = x.max(axis=-2)
    return pooled, (x, pooled)


def _max_phases_backward(residuals, grad):
    x, pooled = residuals
    return (jnp.where(x == pooled[..., None, :], grad[..., None, :], 0.0),)


max_over_phases.defvjp(_max_phases_forward, _max_phases_backward)


def upsample_nearest(x: Float[Array, "*b h w c"]) -> Float[Array, "*b 2h 2w c"]:
    return jnp.repeat(jnp.repeat(x, 2, axis=-3), 2, axis=-2)


# ------------------------------------------------------------------------------- norm + activation

def normed_activation(norm: RMSNorm, act: str, x: Float[Array, "*b c"]) -> Float[Array, "*b c"]:
    """act(norm(x)) for image activations, with a hand-written gradient (same math).

    XLA's CPU backend runs the generic gradient of RMSNorm followed by an activation as several passes over
    the (pixels x few channels) activation, at a small fraction of memory bandwidth; here the backward is one
    per-pixel reduction and one elementwise pass, from the saved input and per-pixel inverse RMS.
    """
    return _norm_act(activation(act), x, norm.scale, norm.eps)


def _inverse_rms(x: Array, eps: float) -> Array:
    return jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3))
def _norm_act(act, x, scale, eps):
    return act(x * _inverse_rms(x, eps) * scale)


def _norm_act_forward(act, x, scale, eps):
    inverse = _inverse_rms(x, eps)
    return act(x * inverse * scale), (x, inverse, scale)


def _norm_act_backward(act, eps, residuals, grad):
    """n = x r s with r = (mean(x^2) + eps)^-1/2:  dx = r s dn - x r^3 mean(s dn x),  ds = sum(dn x r)."""
    del eps
    x, inverse, scale = residuals
    _, act_vjp = jax.vjp(act, x * inverse * scale)
    (d_normed,) = act_vjp(grad)
    scaled = d_normed * scale
    mean_dot = jnp.mean(scaled * x, axis=-1, keepdims=True)
    d_x = inverse * scaled - x * (inverse**3 * mean_dot)
    d_scale = jnp.sum((d_normed * x * inverse).reshape(-1, x.shape[-1]), axis=0)
    return d_x, d_scale


_norm_act.defvjp(_norm_act_forward, _norm_act_backward)


# ------------------------------------------------------------------------------------------ Conv2d


class Conv2d(eqx.Module):
    """Stride-1 'SAME' convolution, kernel HWIO, on images with any leading batch shape."""

    weight: Float[Array, "k k i o"]
    bias: Float[Array, " o"]

    def __init__(self, in_channels: int, out_channels: int, kernel: int, *, outscale: float = 1.0, key):
        if kernel % 2 != 1:
            raise ValueError(f"Conv2d: 'SAME' padding here needs an odd kernel size, got {kernel}")
        shape = (kernel, kernel, in_channels, out_channels)
        self.weight = trunc_normal_in(key, shape, kernel * kernel * in_channels, outscale)
        self.bias = jnp.zeros((out_channels,), jnp.float32)

    def __call__(self, x: Float[Array, "*b h w i"]) -> Float[Array, "*b h w o"]:
        batch, lead = _as_batch(x)
        return _from_batch(conv2d(*product_operands(batch, self.weight)).astype(jnp.float32), lead) + self.bias

    def pooled(self, x: Float[Array, "*b h w i"]) -> Float[Array, "*b h/2 w/2 o"]:
        """Exactly max_pool_2x2(self(x)), computed at half resolution (space-to-depth).

        Each 2x2 block of input pixels becomes one pixel with 4x the channels; the k x k kernel becomes one
        3 x 3 kernel (for k = 5) per output phase, and the pooling is the maximum over the 4 phases. For the
        first encoder stage (3 input channels at full resolution) this turns a convolution that XLA runs at a
        few GFLOP/s into one with 4x the channels on each side, at the price of 9 * 16 / (25 * 4) = 1.44x the
        multiply-adds; on CPU the later stages (8 to 16 channels at the small sizes) gain a few percent too.
        """
        kernel = self.weight.shape[0]
        radius = kernel // 2
        reach = (radius + 1) // 2
        size = 2 * reach + 1
        # taps[p, a, s, d] = 1 where tap d of output phase p reads sub-pixel s of the block at offset a - reach.
        taps = np.zeros((2, size, 2, kernel), np.float32)
        for phase in range(2):
            for d in range(kernel):
                offset = phase + d - radius
                taps[phase, offset // 2 + reach, offset % 2, d] = 1.0
        weight = jnp.einsum("pasd,qbte,deco->abstcpqo", taps, taps, self.weight)
        in_channels, out_channels = self.weight.shape[2], self.weight.shape[3]
        weight = weight.reshape(size, size, 4 * in_channels, 4 * out_channels)
        batch, lead = _as_batch(x)
        count, height, width, _ = batch.shape
        blocks = batch.reshape(count, height // 2, 2, width // 2, 2, in_channels).transpose(0, 1, 3, 2, 4, 5)
        blocks = blocks.reshape(count, height // 2, width // 2, 4 * in_channels)
        y = conv2d(*product_operands(blocks, weight)).astype(jnp.float32)
        y = y.reshape(count, height // 2, width // 2, 4, out_channels)
        return _from_batch(max_over_phases(y), lead) + self.bias

    def upsampled(self, x: Float[Array, "*b h w i"]) -> Float[Array, "*b 2h 2w o"]:
        """Exactly this convolution applied to the 2x nearest-neighbour upsampled `x`, computed cheaply.

        Each output pixel of conv(upsample(x)) sees a k x k window of the upsampled image, which covers
        only a 3 x 3 window of `x` (for k = 5). Summing the taps that hit the same input pixel gives one
        small kernel per output phase (2 x 2 phases), so the work runs at the low resolution with 9/25 of
        the multiply-adds. Zero padding maps to zero padding, so the result is identical.
        """
        kernel = self.weight.shape[0]
        radius = kernel // 2
        reach = (radius + 1) // 2  # low-resolution pixels each side that a tap can reach
        # taps[p, j, d] = 1 where high-resolution tap d of output phase p reads low-res offset j - reach.
        taps = np.zeros((2, 2 * reach + 1, kernel), np.float32)
        for phase in range(2):
            for d in range(kernel):
                taps[phase, (phase + d - radius) // 2 + reach, d] = 1.0
        phase_kernels = jnp.einsum("pjd,qie,deco->jicpqo", taps, taps, self.weight)
        size = 2 * reach + 1
        phase_kernels = phase_kernels.reshape(size, size, self.weight.shape[2], -1)
        batch, lead = _as_batch(x)
        count, height, width, _ = batch.shape
        out = self.weight.shape[-1]
        y = conv2d(*product_operands(batch, phase_kernels)).astype(jnp.float32).reshape(count, height, width, 2, 2, out)
        y = y.transpose(0, 1, 3, 2, 4, 5).reshape(count, 2 * height, 2 * width, out)
        return _from_batch(y, lead) + self.bias


# ------------------------------------------------------------------------------------ encoder/decoder


# Encoder stages after the first run as `Conv2d.pooled` on CPU where that measured faster, by
# scripts/ab_variants/encoder_pooling.py on the AVX-512 host (2026-12-05; first stage only over pooled,
# DreamerV3's whole update): stages of at most 16 channels (`debug`, `size1m`) 1.03x as two batch shards and
# 1.03-1.05x on one device (an older host). Wider ones (`size12m`'s 32-64) stay plain: pooled, they ran
# 0.91-0.92x as two batch shards, and 0.91x on one device once the plain stages' weight gradients took 1 MiB
# chunks (1.06x before).
POOLED_STAGE_MAX_CHANNELS = 16


def pool_stage(channels: int) -> bool:
    """Whether an encoder stage after the first, with `channels` output channels, runs as `Conv2d.pooled`."""
    return cpu_forms() and channels <= POOLED_STAGE_MAX_CHANNELS


_PLAIN_STAGES: contextvars.ContextVar = contextvars.ContextVar("plain_encoder_stages", default=False)


@contextlib.contextmanager
def plain_encoder_stages():
    """While open, `ConvEncoder` traces every stage as its plain convolution then 2x2 max-pooling, the same
    function with the model's own multiply-adds (`Conv2d.pooled` does 1.44x them): for counting the model's
    FLOPs (`bench perf agent`), not for running it."""
    token = _PLAIN_STAGES.set(True)
    try:
        yield
    finally:
        _PLAIN_STAGES.reset(token)


class ConvEncoder(eqx.Module):
    """Images (*B, H, W, C) uint8 -> flat tokens (*B, N). Stages: stride-1 conv, 2x2 max-pool, RMSNorm, act.

    Pixels are scaled to [-0.5, 0.5]. With 4 stages a 64x64 image ends at 4x4 x (depth * mults[-1]).
    """

    convs: tuple[Conv2d, ...]
    norms: tuple[RMSNorm, ...]
    act: str = eqx.field(static=True)
    out_size: int = eqx.field(static=True)

    def __init__(self, image_shape: tuple[int, int, int], depth: int, mults: tuple[int, ...], kernel: int,
                 act: str = "silu", *, key):  # fmt: skip
        height, width, channels = image_shape
        stages = len(mults)
        if height % 2**stages or width % 2**stages:
            raise ValueError(f"ConvEncoder: image {image_shape} is not divisible by 2^{stages} for {stages} stages")
        depths = [depth * m for m in mults]
        keys = jax.random.split(key, stages)
        ins = [channels] + depths[:-1]
        self.convs = tuple(Conv2d(i, o, kernel, key=k) for i, o, k in zip(ins, depths, keys))
        self.norms = tuple(RMSNorm(o) for o in depths)
        self.act = act
        self.out_size = (height // 2**stages) * (width // 2**stages) * depths[-1]

    def __call__(self, image: Array) -> Float[Array, "*b n"]:
        x = image.astype(jnp.float32) / 255.0 - 0.5
        for index, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            # The first stage (3 input channels) always runs at half resolution with the pooling fused in;
            # on CPU the later stages do where that measured faster (`pool_stage`). Elsewhere they stay
            # plain: not measured on GPUs, where the 1.44x multiply-adds may cost more than they save.
            fused = (index == 0 or pool_stage(conv.weight.shape[-1])) and not _PLAIN_STAGES.get()
            x = normed_activation(norm, self.act, conv.pooled(x) if fused else max_pool_2x2(conv(x)))
        return x.reshape(*x.shape[:-3], -1)


class ConvDecoder(eqx.Module):
    """(wide, narrow) latent parts (*B, W), (*B, N) -> images (*B, H, W, C) in [0, 1] (upstream `simple`).

    The wide part (deter) goes through a block-linear map into a (minres, minres, C) map whose channels are
    laid out block by block; the narrow part (stoch) through Linear(2 units) -> RMSNorm -> act -> Linear to
    the same map; their SUM is normalised and activated, act(RMSNorm(wide + narrow)), as upstream's `spnorm`.
    Then per stage: 2x nearest upsample, conv, RMSNorm, act; the last stage's conv outputs the image
    channels, followed by a sigmoid.
    """

    wide_proj: BlockLinear
    spatial_norm: RMSNorm
    narrow_hidden: NormedLinear | None
    narrow_proj: Linear | None
    convs: tuple[Conv2d, ...]
    norms: tuple[RMSNorm, ...]
    minres: tuple[int, int] = eqx.field(static=True)
    blocks: int = eqx.field(static=True)
    act: str = eqx.field(static=True)

    def __init__(self, wide_size: int, narrow_size: int, image_shape: tuple[int, int, int], depth: int,
                 mults: tuple[int, ...], kernel: int, units: int, blocks: int = 8, act: str = "silu",
                 outscale: float = 1.0, *, key):  # fmt: skip
        height, width, channels = image_shape
        stages = len(mults)
        if height % 2**stages or width % 2**stages:
            raise ValueError(f"ConvDecoder: image {image_shape} is not divisible by 2^{stages}")
        self.minres = (height // 2**stages, width // 2**stages)
        depths = [depth * m for m in mults]
        map_size = self.minres[0] * self.minres[1] * depths[-1]
        if depths[-1] % blocks:
            raise ValueError(f"ConvDecoder: {depths[-1]} channels are not divisible by {blocks} blocks")
        keys = jax.random.split(key, 3 + stages)
        self.wide_proj = BlockLinear(wide_size, map_size, blocks, key=keys[0])
        self.spatial_norm = RMSNorm(depths[-1])
        if narrow_size:
            self.narrow_hidden = NormedLinear(narrow_size, 2 * units, act, key=keys[1])
            self.narrow_proj = Linear(2 * units, map_size, key=keys[2])
        else:
            self.narrow_hidden = self.narrow_proj = None
        # Stage i upsamples from depths[-1 - i] channels; the last one outputs the image channels.
        ins = depths[::-1]
        outs = depths[::-1][1:] + [channels]
        scales = [1.0] * (stages - 1) + [outscale]
        self.convs = tuple(
            Conv2d(i, o, kernel, outscale=s, key=k) for i, o, s, k in zip(ins, outs, scales, keys[3:])
        )
        self.norms = tuple(RMSNorm(o) for o in outs[:-1])
        self.blocks = blocks
        self.act = act

    def __call__(self, wide: Float[Array, "*b w"], narrow: Float[Array, "*b n"]) -> Float[Array, "*b h w c"]:
        height, width = self.minres
        lead = wide.shape[:-1]
        x = self.wide_proj(wide)
        # Upstream layout '(g h w c) -> h w (g c)': each block owns a slice of channels at every position.
        x = x.reshape(*lead, self.blocks, height, width, -1)
        x = jnp.moveaxis(x, -4, -2).reshape(*lead, height, width, -1)
        if self.narrow_hidden is not None:
            x = x + self.narrow_proj(self.narrow_hidden(narrow)).reshape(x.shape)
        # One norm over the sum of both projections (upstream `spnorm`), not a norm of the wide part alone.
        x = normed_activation(self.spatial_norm, self.act, x)
        for conv, norm in zip(self.convs[:-1], self.norms):
            x = normed_activation(norm, self.act, conv.upsampled(x))
        return jax.nn.sigmoid(self.convs[-1].upsampled(x))
