"""TSSM's causal transformer: pre-LN blocks with relative position logits and a fixed-size key/value window.

Reference: /work/shared/reference/transformer_wm.md (TSSM section). Attention logits of query i and key j are

    a_ij = q_i . k_j / sqrt(d) + q_i . E_r[i - j]          (Shaw et al. logit term only; no absolute positions)

with one table E_r (heads, window, d) per layer indexed by the distance i - j in 0 .. window - 1 (the
reference writes E_r[j - i] for the same offset). A token sees itself and the `cache` = window - 1 tokens
before it, and only tokens of its own episode segment.

One code path (`Transformer.__call__`) serves training and imagination: it takes n new tokens and a cache of
C = window - 1 earlier keys/values per layer with a validity mask, attends every new token to the visible
cache slots and new tokens, and returns the outputs plus the keys/values of the new tokens. Training runs all
3T tokens of a sequence at once; imagination runs one or two tokens per call and shifts the cache, keeping
its last C entries. Because there are no absolute positions, the shifted window gives the same logits as the
full pass (tests/test_tssm.py checks the two against each other). Upstream's cached generation passed no mask,
so its training and generation attention disagreed; ours must not.

Networks take one sequence; batch with `jax.vmap`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from agents.common.nets import Linear


class LayerNorm(eqx.Module):
    """(x - mean) / sqrt(var + eps) * scale + shift over the last axis."""

    scale: Float[Array, " e"]
    shift: Float[Array, " e"]
    eps: float = eqx.field(static=True)

    def __init__(self, size: int, eps: float = 1e-5):
        self.scale = jnp.ones((size,), jnp.float32)
        self.shift = jnp.zeros((size,), jnp.float32)
        self.eps = eps

    def __call__(self, x: Float[Array, "*s e"]) -> Float[Array, "*s e"]:
        mean = x.mean(-1, keepdims=True)
        var = jnp.square(x - mean).mean(-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * self.scale + self.shift


def visibility(
    cache_valid: Bool[Array, " C"], cache_segment: Int[Array, " C"], segment: Int[Array, " n"]
) -> Bool[Array, "n C+n"]:
    """Which of the C cache slots and n new tokens each new token attends to.

    Keys are laid out [cache slots, new tokens]; new token q sits at index C + q. It sees key j iff j is at
    most C positions before it (itself plus the C previous tokens: the window), j is not after it (causal),
    j is valid (cache slots may be empty) and j belongs to the same episode segment.
    """
    slots = cache_valid.shape[0]
    n = segment.shape[0]
    query = slots + jnp.arange(n)[:, None]
    key = jnp.arange(slots + n)[None, :]
    valid = jnp.concatenate([cache_valid, jnp.ones((n,), bool)])
    key_segment = jnp.concatenate([cache_segment, segment])
    return (key <= query) & (query - key <= slots) & valid[None, :] & (key_segment[None, :] == segment[:, None])


class Block(eqx.Module):
    """Pre-LN block: x + Attn(LN(x)), then x + MLP(LN(x)) with a GELU MLP of 4x width."""

    norm1: LayerNorm
    qkv: Linear
    proj: Linear
    norm2: LayerNorm
    fc1: Linear
    fc2: Linear
    rel: Float[Array, "H W D"]  # relative position table E_r per head, indexed by distance
    heads: int = eqx.field(static=True)

    def __init__(self, embed: int, heads: int, window: int, *, key: PRNGKeyArray):
        if embed % heads:
            raise ValueError(f"TSSM: embed {embed} is not divisible by heads {heads}")
        keys = jax.random.split(key, 5)
        self.norm1 = LayerNorm(embed)
        self.qkv = Linear(embed, 3 * embed, key=keys[0])
        self.proj = Linear(embed, embed, key=keys[1])
        self.norm2 = LayerNorm(embed)
        self.fc1 = Linear(embed, 4 * embed, key=keys[2])
        self.fc2 = Linear(4 * embed, embed, key=keys[3])
        head_dim = embed // heads
        self.rel = jax.random.normal(keys[4], (heads, window, head_dim)) / jnp.sqrt(head_dim)
        self.heads = heads

    def __call__(self, x: Float[Array, "n E"], cache_k: Float[Array, "C H D"], cache_v: Float[Array, "C H D"],
                 visible: Bool[Array, "n C+n"]) -> tuple[Float[Array, "n E"], Array, Array]:  # fmt: skip
        n, embed = x.shape
        slots = cache_k.shape[0]
        head_dim = embed // self.heads
        q, k, v = jnp.split(self.qkv(self.norm1(x)), 3, axis=-1)
        q, k, v = (t.reshape(n, self.heads, head_dim) for t in (q, k, v))
        keys = jnp.concatenate([cache_k, k], 0)
        values = jnp.concatenate([cache_v, v], 0)
        content = jnp.einsum("qhd,khd->hqk", q, keys) / jnp.sqrt(head_dim)
        # q_i . E_r[d] for every distance d, then pick d = i - j for each key (clipped where invisible).
        by_distance = jnp.einsum("qhd,hwd->hqw", q, self.rel)
        distance = slots + jnp.arange(n)[:, None] - jnp.arange(slots + n)[None, :]
        distance = jnp.clip(distance, 0, self.rel.shape[1] - 1)
        position = jnp.take_along_axis(by_distance, jnp.broadcast_to(distance, (self.heads, *distance.shape)), -1)
        logits = jnp.where(visible[None], content + position, -jnp.inf)
        weights = jax.nn.softmax(logits, -1)
        attended = jnp.einsum("hqk,khd->qhd", weights, values).reshape(n, embed)
        x = x + self.proj(attended)
        x = x + self.fc2(jax.nn.gelu(self.fc1(self.norm2(x)), approximate=False))
        return x, k, v


class Transformer(eqx.Module):
    """A stack of blocks and a final LayerNorm over n new tokens given a cache of C = window - 1 tokens."""

    blocks: tuple[Block, ...]
    norm: LayerNorm
    heads: int = eqx.field(static=True)
    window: int = eqx.field(static=True)

    def __init__(self, embed: int, layers: int, heads: int, window: int, *, key: PRNGKeyArray):
        if window < 2:
            raise ValueError(f"TSSM: the attention window must hold at least 2 tokens, got {window}")
        self.blocks = tuple(Block(embed, heads, window, key=k) for k in jax.random.split(key, layers))
        self.norm = LayerNorm(embed)
        self.heads = heads
        self.window = window

    @property
    def slots(self) -> int:
        return self.window - 1

    def __call__(self, x: Float[Array, "n E"], cache_k: Float[Array, "L C H D"], cache_v: Float[Array, "L C H D"],
                 visible: Bool[Array, "n C+n"]) -> tuple[Float[Array, "n E"], Array, Array]:  # fmt: skip
        """Outputs (n, E) and the new tokens' keys and values per layer (L, n, H, D)."""
        new_k, new_v = [], []
        for block, ck, cv in zip(self.blocks, cache_k, cache_v):
            x, k, v = block(x, ck, cv, visible)
            new_k.append(k)
            new_v.append(v)
        return self.norm(x), jnp.stack(new_k), jnp.stack(new_v)
