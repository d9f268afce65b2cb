"""Network layers of the DreamerV3 family (2024 version): linear, block-linear, RMSNorm, MLP, CNN encoder and
decoder, the block-diagonal GRU core.

Every network takes ONE example (Equinox style); batch with `jax.vmap` or `batched` below. Initialisation
follows the upstream `trunc_normal_in`: a normal truncated at two standard deviations, rescaled by 1.1368 so
its standard deviation is sqrt(1 / fan_in), times `outscale` (0 gives zero weights); biases start at zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

ACTIVATIONS: dict[str, Callable] = {
    "silu": jax.nn.silu,
    "gelu": jax.nn.gelu,
    "relu": jax.nn.relu,
    "elu": jax.nn.elu,
    "tanh": jnp.tanh,
    "none": lambda x: x,
}


def activation(name: str) -> Callable:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def trunc_normal_in(key: PRNGKeyArray, shape: tuple[int, ...], fan_in: int, scale: float = 1.0) -> Array:
    """Truncated normal (+-2 std) with standard deviation sqrt(scale / fan_in) (upstream's 1.1368 factor)."""
    if scale == 0.0:
        return jnp.zeros(shape, jnp.float32)
    values = jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32)
    return values * (1.1368 * math.sqrt(1.0 / fan_in) * scale)


def batched(fn: Callable, *args, dims: int = 2):
    """Apply a one-example network `fn(*args)` over the first `dims` axes of every leaf with one vmap."""
    leaves = jax.tree.leaves(args)
    if not leaves:
        raise ValueError("batched: no array arguments")
    lead = leaves[0].shape[:dims]
    for leaf in leaves:
        if leaf.shape[:dims] != lead:
            raise ValueError(f"batched: leading shapes differ: {lead} vs {leaf.shape[:dims]}")
    flat = jax.tree.map(lambda x: x.reshape((math.prod(lead), *x.shape[dims:])), args)
    out = jax.vmap(fn)(*flat)
    return jax.tree.map(lambda y: y.reshape((*lead, *y.shape[1:])), out)


class Linear(eqx.Module):
    """y = x W + b on one example (in,) -> (out,)."""

    weight: Float[Array, "i o"]
    bias: Float[Array, " o"] | None

    def __init__(self, in_size: int, out_size: int, *, outscale: float = 1.0, bias: bool = True, key):
        self.weight = trunc_normal_in(key, (in_size, out_size), in_size, outscale)
        self.bias = jnp.zeros((out_size,), jnp.float32) if bias else None

    def __call__(self, x: Float[Array, " i"]) -> Float[Array, " o"]:
        y = x @ self.weight
        return y if self.bias is None else y + self.bias


class BlockLinear(eqx.Module):
    """Block-diagonal linear map: the input splits into `blocks` groups, each mapped by its own matrix.

    The init fan-in is the full input size, as upstream (its fan computation multiplies the block count back
    in), which makes the blocks' initial weights sqrt(blocks) smaller than a per-block fan-in would.
    """

    weight: Float[Array, "g i o"]
    bias: Float[Array, " o"]
    blocks: int = eqx.field(static=True)

    def __init__(self, in_size: int, out_size: int, blocks: int, *, outscale: float = 1.0, key):
        if in_size % blocks or out_size % blocks:
            raise ValueError(f"BlockLinear: sizes {in_size} -> {out_size} are not divisible by {blocks} blocks")
        self.blocks = blocks
        shape = (blocks, in_size // blocks, out_size // blocks)
        self.weight = trunc_normal_in(key, shape, in_size, outscale)
        self.bias = jnp.zeros((out_size,), jnp.float32)

    def __call__(self, x: Float[Array, " i"]) -> Float[Array, " o"]:
        groups = x.reshape(self.blocks, -1)
        y = jnp.einsum("gi,gio->go", groups, self.weight)
        return y.reshape(-1) + self.bias


class RMSNorm(eqx.Module):
    """x / sqrt(mean(x^2) + eps) * scale over the last axis (no shift, as upstream's `rms` norm)."""

    scale: Float[Array, " d"]
    eps: float = eqx.field(static=True)

    def __init__(self, size: int, eps: float = 1e-4):
        self.scale = jnp.ones((size,), jnp.float32)
        self.eps = eps

    def __call__(self, x: Float[Array, "*s d"]) -> Float[Array, "*s d"]:
        mean_square = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
        return x * jax.lax.rsqrt(mean_square + self.eps) * self.scale


class NormedLinear(eqx.Module):
    """Linear -> RMSNorm -> activation: the hidden layer used everywhere upstream."""

    linear: Linear
    norm: RMSNorm
    act: str = eqx.field(static=True)

    def __init__(self, in_size: int, out_size: int, act: str = "silu", *, key):
        activation(act)
        self.linear = Linear(in_size, out_size, key=key)
        self.norm = RMSNorm(out_size)
        self.act = act

    def __call__(self, x: Float[Array, " i"]) -> Float[Array, " o"]:
        return activation(self.act)(self.norm(self.linear(x)))


class MLP(eqx.Module):
    """`layers` NormedLinear layers of `units`; with zero layers it is the identity."""

    layers: tuple[NormedLinear, ...]
    out_size: int = eqx.field(static=True)

    def __init__(self, in_size: int, units: int, layers: int, act: str = "silu", *, key):
        keys = jax.random.split(key, max(layers, 1))
        sizes = [in_size] + [units] * layers
        self.layers = tuple(NormedLinear(sizes[i], sizes[i + 1], act, key=keys[i]) for i in range(layers))
        self.out_size = sizes[-1]

    def __call__(self, x: Float[Array, " i"]) -> Float[Array, " o"]:
        for layer in self.layers:
            x = layer(x)
        return x


class MLPHead(eqx.Module):
    """MLP trunk plus a linear output layer (reward, continue and critic heads)."""

    mlp: MLP
    out: Linear

    def __init__(self, in_size: int, out_size: int, units: int, layers: int, *, act: str = "silu",
                 outscale: float = 1.0, key: PRNGKeyArray):  # fmt: skip
        keys = jax.random.split(key)
        self.mlp = MLP(in_size, units, layers, act, key=keys[0])
        self.out = Linear(self.mlp.out_size, out_size, outscale=outscale, key=keys[1])

    def __call__(self, x: Float[Array, " i"]) -> Float[Array, " o"]:
        return self.out(self.mlp(x))


# ------------------------------------------------------------------------------------------ convolution


class Conv2d(eqx.Module):
    """Stride-1 'SAME' convolution on one (H, W, C) image, kernel HWIO (XLA's fast layout on CPU)."""

    weight: Float[Array, "k k i o"]
    bias: Float[Array, " o"]

    def __init__(self, in_channels: int, out_channels: int, kernel: int, *, outscale: float = 1.0, key):
        shape = (kernel, kernel, in_channels, out_channels)
        self.weight = trunc_normal_in(key, shape, kernel * kernel * in_channels, outscale)
        self.bias = jnp.zeros((out_channels,), jnp.float32)

    def __call__(self, x: Float[Array, "h w i"]) -> Float[Array, "h w o"]:
        y = jax.lax.conv_general_dilated(
            x[None], self.weight, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )[0]
        return y + self.bias

    def pooled(self, x: Float[Array, "h w i"]) -> Float[Array, "h/2 w/2 o"]:
        """Exactly max_pool_2x2(self(x)), computed at half resolution (space-to-depth).

        Each 2x2 block of input pixels becomes one pixel with 4x the channels; the k x k kernel becomes one
        3 x 3 kernel (for k = 5) per output phase, and the pooling is the maximum over the 4 phases. For the
        first encoder stage (3 input channels at full resolution) this turns a convolution that XLA runs at a
        few GFLOP/s into one with 4x the channels on each side, at the price of 9 * 16 / (25 * 4) = 1.44x the
        multiply-adds.
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
        height, width = x.shape[:2]
        blocks = x.reshape(height // 2, 2, width // 2, 2, in_channels).transpose(0, 2, 1, 3, 4)
        blocks = blocks.reshape(height // 2, width // 2, 4 * in_channels)
        y = jax.lax.conv_general_dilated(
            blocks[None], weight, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )[0]
        return max_over_phases(y.reshape(height // 2, width // 2, 4, out_channels)) + self.bias

    def upsampled(self, x: Float[Array, "h w i"]) -> Float[Array, "2h 2w o"]:
        """Exactly this convolution applied to the 2x nearest-neighbour upsampled `x`, computed cheaply.

        Each output pixel of conv(upsample(x)) sees a k x k window of the upsampled image, which covers
        only a 3 x 3 window of `x` (for k = 5). Summing the taps that hit the same input pixel gives one
        small kernel per output phase (2 x 2 phases), so the work runs at the low resolution with
        9 / 25 * 4 / 4 of the multiply-adds of the naive form. Zero padding maps to zero padding, so the
        result is identical (tested against the naive form).
        """
        kernel = self.weight.shape[0]
        radius = kernel // 2
        reach = (radius + 1) // 2  # low-resolution pixels each side that a tap can reach
        # taps[p, j, d] = 1 where high-resolution tap offset d - radius of output phase p reads low-res
        # offset j - reach.
        taps = np.zeros((2, 2 * reach + 1, kernel), np.float32)
        for phase in range(2):
            for d in range(kernel):
                taps[phase, (phase + d - radius) // 2 + reach, d] = 1.0
        phase_kernels = jnp.einsum("pjd,qie,deco->jicpqo", taps, taps, self.weight)
        size = 2 * reach + 1
        phase_kernels = phase_kernels.reshape(size, size, x.shape[-1], -1)
        y = jax.lax.conv_general_dilated(
            x[None], phase_kernels, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )[0]
        height, width = x.shape[:2]
        out = self.weight.shape[-1]
        y = y.reshape(height, width, 2, 2, out).transpose(0, 2, 1, 3, 4).reshape(2 * height, 2 * width, out)
        return y + self.bias


def upsample_nearest(x: Float[Array, "h w c"]) -> Float[Array, "2h 2w c"]:
    return jnp.repeat(jnp.repeat(x, 2, axis=0), 2, axis=1)


def _max_pool_2x2(x: Array) -> Array:
    *lead, height, width, channels = x.shape
    return x.reshape(*lead, height // 2, 2, width // 2, 2, channels).max(axis=(-4, -2))


@jax.custom_vjp
def max_pool_2x2(x: Float[Array, "h w c"]) -> Float[Array, "h/2 w/2 c"]:
    """2x2 max-pooling. Its gradient is one fused pass: the incoming gradient goes to the input(s) equal to
    the maximum (XLA's generic gradient of a max reduction takes several passes over the large pre-pool
    activation, which dominated the encoder's backward pass). Exact ties, which do not occur for continuous
    conv outputs in practice, each receive the full gradient instead of a share of it."""
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
def max_over_phases(x: Float[Array, "h w p c"]) -> Float[Array, "h w c"]:
    """Maximum over axis -2 with the same one-pass gradient as `max_pool_2x2`."""
    return x.max(axis=-2)


def _max_phases_forward(x):
    pooled = x.max(axis=-2)
    return pooled, (x, pooled)


def _max_phases_backward(residuals, grad):
    x, pooled = residuals
    return (jnp.where(x == pooled[..., None, :], grad[..., None, :], 0.0),)


max_over_phases.defvjp(_max_phases_forward, _max_phases_backward)


class ConvEncoder(eqx.Module):
    """Image (H, W, C) uint8 -> flat tokens. Stages: stride-1 conv, 2x2 max-pool, RMSNorm, SiLU.

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

    def __call__(self, image: Array) -> Float[Array, " n"]:
        x = image.astype(jnp.float32) / 255.0 - 0.5
        for index, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            # The first stage (few input channels, full resolution) runs at half resolution with the pooling
            # fused in; the later ones are fast as plain convolutions.
            x = conv.pooled(x) if index == 0 else max_pool_2x2(conv(x))
            x = activation(self.act)(norm(x))
        return x.reshape(-1)


class ConvDecoder(eqx.Module):
    """(wide, narrow) latent parts -> image (H, W, C) in [0, 1] (sigmoid), as upstream's `simple` decoder.

    The wide part (deter) goes through a block-linear map into a (minres, minres, C) map whose channels are
    laid out block by block, then RMSNorm; the narrow part (stoch) through Linear(2 units) -> RMSNorm -> act
    -> Linear to the same map; their sum goes through the activation. Then per stage: 2x nearest upsample,
    conv, RMSNorm, act; the last stage's conv outputs the image channels.
    """

    wide_proj: BlockLinear
    wide_norm: RMSNorm
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
        # Upstream pads nothing: the wide size must split into the blocks.
        self.wide_proj = BlockLinear(wide_size, map_size, blocks, key=keys[0])
        self.wide_norm = RMSNorm(depths[-1])
        if narrow_size:
            self.narrow_hidden = NormedLinear(narrow_size, 2 * units, act, key=keys[1])
            self.narrow_proj = Linear(2 * units, map_size, key=keys[2])
        else:
            self.narrow_hidden = self.narrow_proj = None
        # Stage i upsamples from depths[i+1] to depths[i]; the last one outputs the image channels.
        ins = depths[::-1]
        outs = depths[::-1][1:] + [channels]
        scales = [1.0] * (stages - 1) + [outscale]
        self.convs = tuple(
            Conv2d(i, o, kernel, outscale=s, key=k) for i, o, s, k in zip(ins, outs, scales, keys[3:])
        )
        self.norms = tuple(RMSNorm(o) for o in outs[:-1])
        self.blocks = blocks
        self.act = act

    def __call__(self, wide: Float[Array, " w"], narrow: Float[Array, " n"]) -> Float[Array, "h w c"]:
        act = activation(self.act)
        height, width = self.minres
        x = self.wide_proj(wide)
        # Upstream layout '(g h w c) -> h w (g c)': each block owns a slice of channels at every position.
        x = x.reshape(self.blocks, height, width, -1).transpose(1, 2, 0, 3).reshape(height, width, -1)
        x = self.wide_norm(x)
        if self.narrow_hidden is not None:
            x = x + self.narrow_proj(self.narrow_hidden(narrow)).reshape(x.shape)
        x = act(x)
        for conv, norm in zip(self.convs[:-1], self.norms):
            x = act(norm(conv.upsampled(x)))
        return jax.nn.sigmoid(self.convs[-1].upsampled(x))


# ---------------------------------------------------------------------------------------------- block GRU


class BlockGRU(eqx.Module):
    """The 2024 RSSM recurrent core: a GRU whose hidden-to-hidden maps are block-diagonal.

    deter, stoch and action are each projected to `hidden` (Linear -> RMSNorm -> act) and concatenated;
    every block sees that vector plus its own slice of deter, through one block-linear hidden layer
    (-> RMSNorm -> act) and a block-linear map to 3 * deter split per block into reset, candidate and
    update. candidate = tanh(sigmoid(reset) * candidate); update = sigmoid(update - 1) (biased towards
    keeping the state); deter' = update * candidate + (1 - update) * deter.
    """

    deter_in: NormedLinear
    stoch_in: NormedLinear
    action_in: NormedLinear
    hidden_layers: tuple[BlockLinear, ...]
    hidden_norms: tuple[RMSNorm, ...]
    gates: BlockLinear
    blocks: int = eqx.field(static=True)
    act: str = eqx.field(static=True)

    def __init__(self, deter: int, stoch_size: int, action_size: int, hidden: int, blocks: int,
                 layers: int = 1, act: str = "silu", *, key):  # fmt: skip
        if deter % blocks:
            raise ValueError(f"BlockGRU: deter {deter} is not divisible by {blocks} blocks")
        keys = jax.random.split(key, 4 + layers)
        self.deter_in = NormedLinear(deter, hidden, act, key=keys[0])
        self.stoch_in = NormedLinear(stoch_size, hidden, act, key=keys[1])
        self.action_in = NormedLinear(action_size, hidden, act, key=keys[2])
        in_size = deter + blocks * 3 * hidden
        sizes = [in_size] + [deter] * layers
        self.hidden_layers = tuple(BlockLinear(sizes[i], deter, blocks, key=keys[4 + i]) for i in range(layers))
        self.hidden_norms = tuple(RMSNorm(deter) for _ in range(layers))
        self.gates = BlockLinear(deter, 3 * deter, blocks, key=keys[3])
        self.blocks = blocks
        self.act = act

    def __call__(self, deter: Float[Array, " d"], stoch: Float[Array, " s"], action: Float[Array, " a"]) -> Float[Array, " d"]:  # fmt: skip
        act = activation(self.act)
        blocks = self.blocks
        # Actions are rescaled so none exceeds magnitude 1 (upstream: a / max(1, |a|), no gradient).
        action = action / jax.lax.stop_gradient(jnp.maximum(1.0, jnp.abs(action)))
        shared = jnp.concatenate([self.deter_in(deter), self.stoch_in(stoch), self.action_in(action)])
        x = jnp.concatenate([deter.reshape(blocks, -1), jnp.broadcast_to(shared, (blocks, shared.size))], -1)
        x = x.reshape(-1)
        for layer, norm in zip(self.hidden_layers, self.hidden_norms):
            # The norm runs over all of deter (upstream normalises the flat vector, not per block).
            x = act(norm(layer(x)))
        gates = self.gates(x).reshape(blocks, 3, -1)
        reset, candidate, update = gates[:, 0].reshape(-1), gates[:, 1].reshape(-1), gates[:, 2].reshape(-1)
        candidate = jnp.tanh(jax.nn.sigmoid(reset) * candidate)
        update = jax.nn.sigmoid(update - 1.0)
        return update * candidate + (1.0 - update) * deter
