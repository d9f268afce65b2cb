"""IRIS's discrete autoencoder: frames <-> grids of codebook indices (reference: transformer_wm.md, IRIS).

Encoder: conv in -> per resolution level `res_blocks` residual blocks (+ self-attention at the resolutions in
`attn_resolutions`) and a stride-2 downsampling between levels -> middle (res, attention, res) -> GroupNorm,
swish, conv to `z_channels` -> 1x1 conv to the codebook dimension. With 5 levels a 64x64 frame becomes a 4x4
grid: 16 tokens. The decoder mirrors it (nearest-neighbour upsampling + conv). Images enter in [-1, 1].

Vector quantisation: each grid vector z takes its nearest codebook entry e; the decoder reads the
straight-through value z + sg(e - z) (forward = e, gradient flows to the encoder as if the quantiser were the
identity). Loss (upstream `Tokenizer.compute_loss`):

    codebook + commitment:  mean (sg(z) - e)^2 + beta mean (z - sg(e))^2        (beta = 1)
    reconstruction:          mean |x - x_hat|                                     (L1, in [-1, 1])
                             (ours, optional: foreground pixels weighted up, see `reconstruction_l1`)
    perceptual:              LPIPS upstream; here `perceptual` chooses a substitute (see `perceptual_loss`).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from agents.common import shards
from agents.common.conv import conv2d, general_conv

sg = jax.lax.stop_gradient

PERCEPTUAL = ("gradient", "none")


# The networks run on channel-last batches (N, H, W, C) with Equinox's layers as parameter containers (their
# own calls take one channel-first image). XLA's CPU backend runs a channel-first convolution, or one with an
# OIHW kernel, about ten times slower inside a loop (IRIS decodes every imagined frame in a scan) than a
# channel-last one with an HWIO kernel (docs/iris.md, "Channel-last convolutions"); the math is the same.


def conv(layer: eqx.nn.Conv2d, x: Float[Array, "N H W C"], *,
         trained_in_loop: bool = False) -> Float[Array, "N h w O"]:  # fmt: skip
    """`layer` (zero padding) applied to a channel-last batch.

    `trained_in_loop`: the layer is differentiated inside a scan (the policy's convs over the imagination);
    XLA's own weight gradient is slow there, `agents.common.conv.conv2d`'s (stride 1, 'SAME') is not. Outside
    loops XLA's is the faster one (the tokenizer's update); `general_conv` keeps it plain under `jax.vmap`."""
    kernel = jnp.transpose(layer.weight, (2, 3, 1, 0))  # OIHW -> HWIO
    size = kernel.shape[0]
    if trained_in_loop:
        if layer.stride != (1, 1) or layer.padding != ((size // 2, size // 2),) * 2 or layer.groups != 1:
            raise ValueError(f"conv: trained_in_loop needs a stride-1 'SAME' convolution, got {layer}")
        y = conv2d(x, kernel)
    else:
        y = general_conv(layer.stride, layer.padding, layer.dilation, layer.groups)(x, kernel)
    return y if layer.bias is None else y + layer.bias.reshape(-1)


def group_norm(layer: eqx.nn.GroupNorm, x: Float[Array, "N H W C"]) -> Float[Array, "N H W C"]:
    """`layer` applied to a channel-last batch: each image's channel groups normalised over (H, W, group)."""
    *lead, channels = x.shape
    grouped = x.reshape(*lead, layer.groups, channels // layer.groups)
    axes = (-4, -3, -1)
    mean = grouped.mean(axis=axes, keepdims=True)
    variance = jnp.maximum(0.0, grouped.var(axis=axes, keepdims=True))
    out = ((grouped - mean) * jax.lax.rsqrt(variance + layer.eps)).reshape(x.shape)
    return out * layer.weight + layer.bias if layer.channelwise_affine else out


def _norm(channels: int) -> eqx.nn.GroupNorm:
    # Upstream uses 32 groups; tiny test models have fewer channels, so take the largest divisor <= 32.
    return eqx.nn.GroupNorm(math.gcd(32, channels), channels)


class ResBlock(eqx.Module):
    norm1: eqx.nn.GroupNorm
    conv1: eqx.nn.Conv2d
    norm2: eqx.nn.GroupNorm
    conv2: eqx.nn.Conv2d
    skip: eqx.nn.Conv2d | None

    def __init__(self, cin: int, cout: int, *, key: PRNGKeyArray):
        k1, k2, k3 = jax.random.split(key, 3)
        self.norm1 = _norm(cin)
        self.conv1 = eqx.nn.Conv2d(cin, cout, 3, padding=1, key=k1)
        self.norm2 = _norm(cout)
        self.conv2 = eqx.nn.Conv2d(cout, cout, 3, padding=1, key=k2)
        self.skip = eqx.nn.Conv2d(cin, cout, 1, key=k3) if cin != cout else None

    def __call__(self, x: Float[Array, "N H W C"]) -> Float[Array, "N H W D"]:
        h = conv(self.conv1, jax.nn.swish(group_norm(self.norm1, x)))
        h = conv(self.conv2, jax.nn.swish(group_norm(self.norm2, h)))  # upstream tokenizer dropout is 0.0
        return (x if self.skip is None else conv(self.skip, x)) + h


class AttnBlock(eqx.Module):
    """Single-head self-attention over the spatial positions of a feature map (residual)."""

    norm: eqx.nn.GroupNorm
    qkv: eqx.nn.Conv2d
    proj: eqx.nn.Conv2d

    def __init__(self, channels: int, *, key: PRNGKeyArray):
        k1, k2 = jax.random.split(key)
        self.norm = _norm(channels)
        self.qkv = eqx.nn.Conv2d(channels, 3 * channels, 1, key=k1)
        self.proj = eqx.nn.Conv2d(channels, channels, 1, key=k2)

    def __call__(self, x: Float[Array, "N H W C"]) -> Float[Array, "N H W C"]:
        n, h, w, c = x.shape
        q, k, v = jnp.split(conv(self.qkv, group_norm(self.norm, x)).reshape(n, h * w, 3 * c), 3, axis=-1)
        # (N, HW queries, HW keys)
        weights = jax.nn.softmax(q @ jnp.swapaxes(k, -1, -2) / jnp.sqrt(c), axis=-1)
        return x + conv(self.proj, (weights @ v).reshape(n, h, w, c))


class Encoder(eqx.Module):
    conv_in: eqx.nn.Conv2d
    levels: tuple
    mid: tuple
    norm_out: eqx.nn.GroupNorm
    conv_out: eqx.nn.Conv2d
    pre_quant: eqx.nn.Conv2d

    def __init__(self, resolution: int, channels: int, mults: tuple[int, ...], res_blocks: int,
                 attn_resolutions: tuple[int, ...], z_channels: int, embed_dim: int, *,
                 key: PRNGKeyArray):  # fmt: skip
        keys = iter(jax.random.split(key, 8 + len(mults) * (2 * res_blocks + 2)))
        self.conv_in = eqx.nn.Conv2d(3, channels, 3, padding=1, key=next(keys))
        levels, cin, res = [], channels, resolution
        for i, mult in enumerate(mults):
            blocks = []
            for _ in range(res_blocks):
                blocks.append(ResBlock(cin, channels * mult, key=next(keys)))
                cin = channels * mult
                if res in attn_resolutions:
                    blocks.append(AttnBlock(cin, key=next(keys)))
            if i != len(mults) - 1:  # stride-2 conv, padding right/bottom only (upstream Downsample)
                blocks.append(Downsample(cin, key=next(keys)))
                res //= 2
            levels.append(tuple(blocks))
        self.levels = tuple(levels)
        self.mid = (ResBlock(cin, cin, key=next(keys)), AttnBlock(cin, key=next(keys)),
                    ResBlock(cin, cin, key=next(keys)))  # fmt: skip
        self.norm_out = _norm(cin)
        self.conv_out = eqx.nn.Conv2d(cin, z_channels, 3, padding=1, key=next(keys))
        self.pre_quant = eqx.nn.Conv2d(z_channels, embed_dim, 1, key=next(keys))

    def __call__(self, x: Float[Array, "N H W 3"]) -> Float[Array, "N h w E"]:
        x = conv(self.conv_in, x)
        for blocks in self.levels:
            for block in blocks:
                x = block(x)
        for block in self.mid:
            x = block(x)
        return conv(self.pre_quant, conv(self.conv_out, jax.nn.swish(group_norm(self.norm_out, x))))


class Downsample(eqx.Module):
    conv: eqx.nn.Conv2d

    def __init__(self, channels: int, *, key: PRNGKeyArray):
        self.conv = eqx.nn.Conv2d(channels, channels, 3, stride=2, padding=((0, 1), (0, 1)), key=key)

    def __call__(self, x: Float[Array, "N H W C"]) -> Float[Array, "N H/2 W/2 C"]:
        return conv(self.conv, x)


class Upsample(eqx.Module):
    conv: eqx.nn.Conv2d

    def __init__(self, channels: int, *, key: PRNGKeyArray):
        self.conv = eqx.nn.Conv2d(channels, channels, 3, padding=1, key=key)

    def __call__(self, x: Float[Array, "N H W C"]) -> Float[Array, "N 2H 2W C"]:
        return conv(self.conv, jnp.repeat(jnp.repeat(x, 2, axis=-3), 2, axis=-2))


class Decoder(eqx.Module):
    post_quant: eqx.nn.Conv2d
    conv_in: eqx.nn.Conv2d
    mid: tuple
    levels: tuple
    norm_out: eqx.nn.GroupNorm
    conv_out: eqx.nn.Conv2d

    def __init__(self, resolution: int, channels: int, mults: tuple[int, ...], res_blocks: int,
                 attn_resolutions: tuple[int, ...], z_channels: int, embed_dim: int, *,
                 key: PRNGKeyArray):  # fmt: skip
        keys = iter(jax.random.split(key, 8 + len(mults) * (2 * res_blocks + 4)))
        self.post_quant = eqx.nn.Conv2d(embed_dim, z_channels, 1, key=next(keys))
        cin = channels * mults[-1]
        res = resolution // 2 ** (len(mults) - 1)
        self.conv_in = eqx.nn.Conv2d(z_channels, cin, 3, padding=1, key=next(keys))
        self.mid = (ResBlock(cin, cin, key=next(keys)), AttnBlock(cin, key=next(keys)),
                    ResBlock(cin, cin, key=next(keys)))  # fmt: skip
        levels = []
        for i in reversed(range(len(mults))):
            blocks = []
            for _ in range(res_blocks + 1):  # upstream decoders have one more block per level
                blocks.append(ResBlock(cin, channels * mults[i], key=next(keys)))
                cin = channels * mults[i]
                if res in attn_resolutions:
                    blocks.append(AttnBlock(cin, key=next(keys)))
            if i != 0:
                blocks.append(Upsample(cin, key=next(keys)))
                res *= 2
            levels.append(tuple(blocks))
        self.levels = tuple(levels)
        self.norm_out = _norm(cin)
        self.conv_out = eqx.nn.Conv2d(cin, 3, 3, padding=1, key=next(keys))

    def __call__(self, z: Float[Array, "N h w E"]) -> Float[Array, "N H W 3"]:
        x = conv(self.conv_in, conv(self.post_quant, z))
        for block in self.mid:
            x = block(x)
        for blocks in self.levels:
            for block in blocks:
                x = block(x)
        return conv(self.conv_out, jax.nn.swish(group_norm(self.norm_out, x)))


def quantize(z: Float[Array, "N E"],
             codebook: Float[Array, "V E"]) -> tuple[Int[Array, " N"], Float[Array, "N E"]]:  # fmt: skip
    """Nearest codebook entry (squared Euclidean distance) of each vector: indices and entries."""
    distances = (z**2).sum(-1, keepdims=True) + (codebook**2).sum(-1)[None] - 2.0 * z @ codebook.T
    tokens = jnp.argmin(distances, axis=-1)
    return tokens, codebook[tokens]


def vq_losses(z: Array, z_q: Array, beta: float) -> Array:
    """Codebook term (moves entries to the encodings) + beta x commitment term (encodings to entries)."""
    return jnp.mean((sg(z) - z_q) ** 2) + beta * jnp.mean((z - sg(z_q)) ** 2)


def straight_through(z: Array, z_q: Array) -> Array:
    """Forward value z_q, gradient to z as the identity (and none to the codebook)."""
    return z + sg(z_q - z)


def perceptual_loss(x: Float[Array, "N H W 3"], x_hat: Float[Array, "N H W 3"],
                    kind: str) -> Float[Array, ""]:  # fmt: skip
    """Substitute for upstream's LPIPS, whose pretrained VGG weights cannot be downloaded here.

    "gradient": L1 between the horizontal and vertical finite differences of the two images. LPIPS's role in
    IRIS is to keep edges and small sprites sharp where a pixel L1 alone blurs; image gradients target
    exactly that, need no weights, and are deterministic. "none": L1 only (an ablation).
    """
    if kind == "none":
        return jnp.zeros((), x.dtype)
    if kind != "gradient":
        raise ValueError(f"tokenizer.perceptual must be one of {PERCEPTUAL}, got {kind!r}")
    dx = lambda im: im[..., :, 1:, :] - im[..., :, :-1, :]  # noqa: E731
    dy = lambda im: im[..., 1:, :, :] - im[..., :-1, :, :]  # noqa: E731
    return jnp.mean(jnp.abs(dx(x) - dx(x_hat))) + jnp.mean(jnp.abs(dy(x) - dy(x_hat)))


def reconstruction_l1(x: Float[Array, "N H W 3"], x_hat: Float[Array, "N H W 3"],
                      foreground_weight: float) -> Float[Array, ""]:  # fmt: skip
    """Mean |x - x_hat| (IRIS's L1 term) when `foreground_weight` is 0. Otherwise (ours,
    `tokenizer.foreground_weight`) a weighted mean: a pixel that differs (by more than 0.05 in some channel,
    images in [-1, 1]) from the batch's per-pixel median frame, the static background, weighs 1 + weight;
    every other pixel weighs 1. Small sprites, a few pixels of the frame, then count as much as the background
    around them: on toy frames plain L1 draws reach's green goal black (docs/iris.md).
    """
    error = jnp.abs(x - x_hat)
    if foreground_weight == 0:
        return jnp.mean(error)
    # under batch shards the whole batch's median frame and weighted mean (agents/common/shards.py)
    background = sg(jnp.median(shards.gather(x), axis=0, keepdims=True))
    foreground = (jnp.abs(x - background).max(axis=-1, keepdims=True) > 0.05).astype(error.dtype)
    weights = jnp.broadcast_to(1.0 + foreground_weight * foreground, error.shape)
    return shards.masked_means({"l1": error}, weights)["l1"]  # sum(w |x - x_hat|) / sum(w), every w >= 1


class Tokenizer(eqx.Module):
    encoder: Encoder
    decoder: Decoder
    codebook: Float[Array, "V E"]
    beta: float = eqx.field(static=True)
    perceptual: str = eqx.field(static=True)
    perceptual_scale: float = eqx.field(static=True)
    foreground_weight: float = eqx.field(static=True)

    def __init__(self, *, resolution: int, channels: int, mults: tuple[int, ...], res_blocks: int,
                 attn_resolutions: tuple[int, ...], z_channels: int, embed_dim: int, vocab: int, beta: float,
                 perceptual: str, perceptual_scale: float, key: PRNGKeyArray,
                 foreground_weight: float = 0.0):  # fmt: skip
        if perceptual not in PERCEPTUAL:
            raise ValueError(f"tokenizer.perceptual must be one of {PERCEPTUAL}, got {perceptual!r}")
        if resolution % 2 ** (len(mults) - 1):
            levels = len(mults) - 1
            raise ValueError(f"image size {resolution} is not divisible by 2^{levels} (mults {mults})")
        k1, k2, k3 = jax.random.split(key, 3)
        sizes = (tuple(mults), res_blocks, tuple(attn_resolutions), z_channels, embed_dim)
        args = (resolution, channels, *sizes)
        self.encoder = Encoder(*args, key=k1)
        self.decoder = Decoder(*args, key=k2)
        self.codebook = jax.random.uniform(k3, (vocab, embed_dim), minval=-1.0 / vocab, maxval=1.0 / vocab)
        self.beta = beta
        self.perceptual = perceptual
        self.perceptual_scale = perceptual_scale
        self.foreground_weight = foreground_weight

    @property
    def vocab(self) -> int:
        return self.codebook.shape[0]

    # Public functions take (N, H, W, 3) uint8 frames or (N, K) tokens.

    def _encode(self, images: Array) -> tuple[Float[Array, "N h w E"], Float[Array, "N H W 3"]]:
        x = jnp.asarray(images, jnp.float32) / 255.0 * 2.0 - 1.0
        return self.encoder(x), x

    def encode(self, images: Array) -> Int[Array, "N K"]:
        """Token indices of each frame, row-major over the grid."""
        z, _ = self._encode(images)
        tokens, _ = quantize(z.reshape(-1, z.shape[-1]), self.codebook)
        return tokens.reshape(z.shape[0], -1).astype(jnp.int32)

    def decode(self, tokens: Int[Array, "N K"]) -> Float[Array, "N H W 3"]:
        """Frames in [0, 1] (clipped, as upstream's `encode_decode` + clamp)."""
        side = math.isqrt(tokens.shape[-1])
        z_q = self.codebook[tokens].reshape(tokens.shape[0], side, side, -1)
        return jnp.clip((self.decoder(z_q) + 1.0) / 2.0, 0.0, 1.0)

    def loss(self, images: Array, warmup: Array | bool = False) -> tuple[dict[str, Array], Float[Array, "N H W 3"]]:
        """Loss terms (scalars) and reconstructions in [0, 1] of (N, H, W, 3) uint8 frames.

        `warmup` (ours, `tokenizer.warmup_updates`): the decoder reads the encoder's output itself, not its
        quantisation, and only the L1 term counts (the others are zero).
        """
        z, x = self._encode(images)
        flat = z.reshape(-1, z.shape[-1])
        _, z_q = quantize(flat, self.codebook)
        decoder_in = jnp.where(warmup, flat, straight_through(flat, z_q)).reshape(z.shape)
        x_hat = self.decoder(decoder_in)
        vq_on = 1.0 - jnp.asarray(warmup, jnp.float32)
        terms = {
            "vq": vq_on * vq_losses(flat, z_q, self.beta),
            "rec_l1": reconstruction_l1(x, x_hat, self.foreground_weight),
            "perceptual": vq_on * self.perceptual_scale * perceptual_loss(x, x_hat, self.perceptual),
        }
        return terms, jnp.clip((x_hat + 1.0) / 2.0, 0.0, 1.0)

    def codebook_from(self, images: Array, key: PRNGKeyArray) -> Float[Array, "V E"]:
        """`vocab` distinct encodings of (N, H, W, 3) frames, drawn at random: the codebook at the end of the
        warm-up (needs N x tokens-per-frame >= vocab)."""
        z, _ = self._encode(images)
        flat = shards.gather(jax.lax.stop_gradient(z.reshape(-1, z.shape[-1])))  # the whole batch's, under shards
        return flat[jax.random.choice(key, flat.shape[0], (self.vocab,), replace=False)]
