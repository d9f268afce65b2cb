"""Encoders and decoders over observation dicts: images through the CNNs, everything else through MLPs.

Image keys are uint8 (H, W, C) sensors (concatenated along channels, all the same size); vector keys are
the other sensors (flattened; discrete ones one-hot), symlog-squashed and concatenated. Only the keys from
`bench.spaces.sensor_keys` are used, so agents never read step keys or `priv_` keys.
Losses: images MSE summed over pixels on [0, 1] targets, vectors symlog-MSE summed over dimensions.

Both take observations with any leading batch shape (*B) directly, so that the convolutions see the whole
batch (see conv.py); they also work on a single example and under `jax.vmap`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from agents.common.conv import ConvDecoder, ConvEncoder
from agents.common.distributions import symlog
from agents.common.nets import MLP, Linear
from bench.spaces import Space, sensor_keys


def is_image(space: Space) -> bool:
    return np.dtype(space.dtype) == np.uint8 and len(space.shape) == 3


def split_keys(obs_space: Mapping[str, Space]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(image keys, vector keys) among the sensors, sorted."""
    keys = sorted(sensor_keys(obs_space))
    images = tuple(k for k in keys if is_image(obs_space[k]))
    vectors = tuple(k for k in keys if not is_image(obs_space[k]))
    if not images and not vectors:
        raise ValueError(f"the observation space {sorted(obs_space)} has no sensor keys to learn from")
    shapes = {obs_space[k].shape[:2] for k in images}
    if len(shapes) > 1:
        raise ValueError(f"image observations differ in size: { {k: obs_space[k].shape for k in images} }")
    return images, vectors


def vector_size(space: Space) -> int:
    if space.is_discrete:
        return space.num_classes * max(1, math.prod(space.shape))
    return max(1, math.prod(space.shape))


def stages_for(image_shape: tuple[int, ...], minres: int, max_stages: int) -> int:
    """CNN stages that take the image down to `minres`: log2(size / minres), at most len(mults)."""
    size = image_shape[0]
    stages = int(round(math.log2(size / minres))) if size > minres else 0
    if stages < 1 or size != minres * 2**stages:
        raise ValueError(f"image size {size} is not minres ({minres}) times a power of two")
    return min(stages, max_stages)


class ObservationEncoder(eqx.Module):
    """One observation dict (unbatched) -> flat tokens (E,)."""

    cnn: ConvEncoder | None
    mlp: MLP | None
    image_keys: tuple[str, ...] = eqx.field(static=True)
    vector_keys: tuple[str, ...] = eqx.field(static=True)
    vector_spaces: tuple[Space, ...] = eqx.field(static=True)
    symlog_inputs: bool = eqx.field(static=True)
    out_size: int = eqx.field(static=True)

    def __init__(self, obs_space: Mapping[str, Space], *, depth: int, mults: tuple[int, ...], kernel: int,
                 minres: int, layers: int, units: int, symlog_inputs: bool = True, act: str = "silu",
                 key: PRNGKeyArray):  # fmt: skip
        self.image_keys, self.vector_keys = split_keys(obs_space)
        self.vector_spaces = tuple(obs_space[k] for k in self.vector_keys)
        self.symlog_inputs = symlog_inputs
        cnn_key, mlp_key = jax.random.split(key)
        size = 0
        if self.image_keys:
            first = obs_space[self.image_keys[0]].shape
            channels = sum(obs_space[k].shape[2] for k in self.image_keys)
            stages = stages_for(first, minres, len(mults))
            self.cnn = ConvEncoder((*first[:2], channels), depth, tuple(mults[:stages]), kernel, act, key=cnn_key)
            size += self.cnn.out_size
        else:
            self.cnn = None
        if self.vector_keys:
            in_size = sum(vector_size(s) for s in self.vector_spaces)
            self.mlp = MLP(in_size, units, layers, act, key=mlp_key)
            size += self.mlp.out_size
        else:
            self.mlp = None
        self.out_size = size

    def __call__(self, obs: Mapping[str, Array]) -> Float[Array, "*b E"]:
        parts = []
        if self.cnn is not None:
            parts.append(self.cnn(jnp.concatenate([obs[k] for k in self.image_keys], -1)))
        if self.mlp is not None:
            vectors = []
            for key, space in zip(self.vector_keys, self.vector_spaces):
                value = jnp.asarray(obs[key])
                lead = value.shape[: value.ndim - len(space.shape)]
                if space.is_discrete:
                    value = jax.nn.one_hot(value.astype(jnp.int32), space.num_classes, dtype=jnp.float32)
                else:
                    value = value.astype(jnp.float32)
                    value = symlog(value) if self.symlog_inputs else value
                vectors.append(value.reshape(*lead, -1))
            parts.append(self.mlp(jnp.concatenate(vectors, -1)))
        return jnp.concatenate(parts, -1)


class ObservationDecoder(eqx.Module):
    """Latent parts -> reconstruction of every sensor key; `loss` gives per-key losses for one example."""

    cnn: ConvDecoder | None
    mlp: MLP | None
    vector_heads: tuple[Linear, ...]
    image_keys: tuple[str, ...] = eqx.field(static=True)
    image_channels: tuple[int, ...] = eqx.field(static=True)
    vector_keys: tuple[str, ...] = eqx.field(static=True)
    vector_spaces: tuple[Space, ...] = eqx.field(static=True)

    def __init__(self, obs_space: Mapping[str, Space], feature_size: int, wide_size: int, narrow_size: int, *,
                 depth: int, mults: tuple[int, ...], kernel: int, minres: int, layers: int, units: int,
                 blocks: int, outscale: float = 1.0, act: str = "silu", key: PRNGKeyArray):  # fmt: skip
        self.image_keys, self.vector_keys = split_keys(obs_space)
        self.vector_spaces = tuple(obs_space[k] for k in self.vector_keys)
        self.image_channels = tuple(obs_space[k].shape[2] for k in self.image_keys)
        keys = jax.random.split(key, 2 + len(self.vector_keys))
        if self.image_keys:
            first = obs_space[self.image_keys[0]].shape
            stages = stages_for(first, minres, len(mults))
            shape = (*first[:2], sum(self.image_channels))
            self.cnn = ConvDecoder(wide_size, narrow_size, shape, depth, tuple(mults[:stages]), kernel, units,
                                   blocks, act, outscale, key=keys[0])  # fmt: skip
        else:
            self.cnn = None
        for key_, space in zip(self.vector_keys, self.vector_spaces):
            if space.is_discrete:
                raise ValueError(f"decoding discrete observation {key_!r} is not supported; use a float vector")
        if self.vector_keys:
            self.mlp = MLP(feature_size, units, layers, act, key=keys[1])
            self.vector_heads = tuple(
                Linear(self.mlp.out_size, vector_size(s), outscale=outscale, key=k)
                for s, k in zip(self.vector_spaces, keys[2:])
            )
        else:
            self.mlp, self.vector_heads = None, ()

    def __call__(self, features: Float[Array, "*b F"], wide: Float[Array, "*b W"], narrow: Float[Array, "*b N"]) -> dict[str, Array]:  # fmt: skip
        """Predictions: images in [0, 1] (*B, H, W, C); vectors in symlog space (*B, D) flat."""
        out = {}
        if self.cnn is not None:
            images = self.cnn(wide, narrow)
            start = 0
            for key, channels in zip(self.image_keys, self.image_channels):
                out[key] = images[..., start : start + channels]
                start += channels
        if self.mlp is not None:
            hidden = self.mlp(features)
            for key, head in zip(self.vector_keys, self.vector_heads):
                out[key] = head(hidden)
        return out

    def loss(self, features: Float[Array, "*b F"], wide: Float[Array, "*b W"], narrow: Float[Array, "*b N"],
             obs: Mapping[str, Array]) -> dict[str, Float[Array, "*b"]]:  # fmt: skip
        """Per-key reconstruction losses (*B) (each summed over the key's dimensions)."""
        predictions = self(features, wide, narrow)
        losses = {}
        for key in self.image_keys:
            target = obs[key].astype(jnp.float32) / 255.0
            losses[key] = jnp.sum(jnp.square(predictions[key] - target), (-3, -2, -1))
        for key, space in zip(self.vector_keys, self.vector_spaces):
            value = jnp.asarray(obs[key]).astype(jnp.float32)
            lead = value.shape[: value.ndim - len(space.shape)]
            target = symlog(value.reshape(*lead, -1))
            losses[key] = jnp.sum(jnp.square(predictions[key] - target), -1)
        return losses
