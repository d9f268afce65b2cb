"""IRIS's world model: a GPT over discrete tokens with a fixed-size key/value cache.

Reference: /work/shared/reference/transformer_wm.md (IRIS section). Every environment step is a block of
`tokens_per_step = frame_tokens + 1` tokens: the frame's codebook indices, then the action. The GPT (pre-norm
blocks, causal self-attention, dropout on embeddings, attention weights and residuals) reads up to
`max_steps` blocks. Three heads read the hidden state of a position:

* next-frame tokens (`obs_logits`, codebook-way): frame position k predicts frame token k + 1 and the
  action position predicts token 0 of the next frame (the last frame position predicts nothing);
* reward sign (`reward_logits`, 3 classes: -1, 0, +1) and termination (`end_logits`, 2 classes), both read
  at the action position, i.e. they follow (frame, action).

One attention code path serves training and generation: new tokens are written into the cache at
positions `length .. length + n - 1` and attend to every cached position up to their own. A full causal
forward pass is that path on an empty cache with all tokens at once; generation calls it with one token at
a time. The tests check the two agree token for token. Imagination samples through
`distributions.categorical_sample` (as `jax.random.categorical`), whose draws over the batch are batch-shards
draws (agents/common/shards.py).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from agents.common import distributions as dists


def dropout(x: Array, rate: float, key: PRNGKeyArray | None) -> Array:
    """Inverted dropout; `key=None` is inference (identity)."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


class KVCache(eqx.Module):
    """Keys and values of one sequence for every layer: (layers, heads, max_tokens, head_dim).

    The number of filled positions is not stored here: it is one scalar shared by a batch of sequences
    (imagination advances all of them in lockstep), passed next to the cache, so `vmap` over the batch
    keeps control flow on it (cache refresh) a real branch.
    """

    keys: Float[Array, "L H N D"]
    values: Float[Array, "L H N D"]


class Block(eqx.Module):
    norm1: eqx.nn.LayerNorm
    qkv: eqx.nn.Linear
    proj: eqx.nn.Linear
    norm2: eqx.nn.LayerNorm
    fc1: eqx.nn.Linear
    fc2: eqx.nn.Linear
    heads: int = eqx.field(static=True)
    rate: float = eqx.field(static=True)

    def __init__(self, embed: int, heads: int, rate: float, *, key: PRNGKeyArray):
        if embed % heads:
            raise ValueError(f"embed {embed} is not divisible by heads {heads}")
        k1, k2, k3, k4 = jax.random.split(key, 4)
        self.norm1 = eqx.nn.LayerNorm(embed)
        self.qkv = eqx.nn.Linear(embed, 3 * embed, key=k1)
        self.proj = eqx.nn.Linear(embed, embed, key=k2)
        self.norm2 = eqx.nn.LayerNorm(embed)
        self.fc1 = eqx.nn.Linear(embed, 4 * embed, key=k3)
        self.fc2 = eqx.nn.Linear(4 * embed, embed, key=k4)
        self.heads = heads
        self.rate = rate

    def __call__(self, x: Float[Array, "n E"], keys: Float[Array, "H N D"], values: Float[Array, "H N D"],
                 length: Int[Array, ""], *, key: PRNGKeyArray | None):  # fmt: skip
        """Attend the n new tokens at positions length.. to the cache; returns outputs and the new cache."""
        n, embed = x.shape
        heads, max_tokens, head_dim = keys.shape
        k_attn, k_res1, k_res2 = jax.random.split(key, 3) if key is not None else (None, None, None)
        q, k, v = jnp.split(jax.vmap(self.qkv)(jax.vmap(self.norm1)(x)), 3, axis=-1)
        split = lambda t: t.reshape(n, heads, head_dim).transpose(1, 0, 2)  # noqa: E731  (H, n, D)
        q, k, v = split(q), split(k), split(v)
        keys = jax.lax.dynamic_update_slice(keys, k.astype(keys.dtype), (0, length, 0))
        values = jax.lax.dynamic_update_slice(values, v.astype(values.dtype), (0, length, 0))
        scores = jnp.einsum("hqd,hkd->hqk", q, keys) / jnp.sqrt(head_dim).astype(q.dtype)
        query_pos = length + jnp.arange(n)
        visible = jnp.arange(max_tokens)[None, :] <= query_pos[:, None]  # causal, and only filled positions
        scores = jnp.where(visible[None], scores, -jnp.inf)
        weights = dropout(jax.nn.softmax(scores, axis=-1), self.rate, k_attn)
        attended = jnp.einsum("hqk,hkd->hqd", weights, values).transpose(1, 0, 2).reshape(n, embed)
        x = x + dropout(jax.vmap(self.proj)(attended), self.rate, k_res1)
        hidden = jax.nn.gelu(jax.vmap(self.fc1)(jax.vmap(self.norm2)(x)), approximate=False)
        hidden = jax.vmap(self.fc2)(hidden)
        x = x + dropout(hidden, self.rate, k_res2)
        return x, keys, values


class Head(eqx.Module):
    """IRIS's heads: Linear(E, E) -> ReLU -> Linear(E, out)."""

    hidden: eqx.nn.Linear
    out: eqx.nn.Linear

    def __init__(self, embed: int, out: int, *, key: PRNGKeyArray):
        k1, k2 = jax.random.split(key)
        self.hidden = eqx.nn.Linear(embed, embed, key=k1)
        self.out = eqx.nn.Linear(embed, out, key=k2)

    def __call__(self, x: Float[Array, " E"]) -> Float[Array, " o"]:
        return self.out(jax.nn.relu(self.hidden(x)))


class WorldModelGPT(eqx.Module):
    """The GPT for one sequence; batch with `jax.vmap(..., in_axes=(0, 0, None))` (length shared)."""

    frame_embed: eqx.nn.Embedding
    action_embed: eqx.nn.Embedding
    pos_embed: Float[Array, "N E"]
    blocks: tuple[Block, ...]
    norm: eqx.nn.LayerNorm
    obs_head: Head
    reward_head: Head
    end_head: Head
    frame_tokens: int = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    heads: int = eqx.field(static=True)
    rate: float = eqx.field(static=True)

    def __init__(self, *, vocab: int, actions: int, frame_tokens: int, max_steps: int, embed: int,
                 layers: int, heads: int, dropout: float, key: PRNGKeyArray):  # fmt: skip
        keys = jax.random.split(key, layers + 7)
        # IRIS's init (minGPT `_init_weights`): Linear and Embedding weights N(0, 0.02), biases 0.
        normal = lambda k, shape: 0.02 * jax.random.normal(k, shape)  # noqa: E731
        self.frame_embed = eqx.nn.Embedding(weight=normal(keys[0], (vocab, embed)))
        self.action_embed = eqx.nn.Embedding(weight=normal(keys[1], (actions, embed)))
        max_tokens = max_steps * (frame_tokens + 1)
        self.pos_embed = 0.02 * jax.random.normal(keys[2], (max_tokens, embed))
        self.blocks = tuple(Block(embed, heads, dropout, key=k) for k in keys[6:-1])
        self.norm = eqx.nn.LayerNorm(embed)
        self.obs_head = Head(embed, vocab, key=keys[3])
        self.reward_head = Head(embed, 3, key=keys[4])
        self.end_head = Head(embed, 2, key=keys[5])
        self.frame_tokens = frame_tokens
        self.max_steps = max_steps
        self.heads = heads
        self.rate = dropout
        count = len(_linears(self))
        init_keys = jax.random.split(keys[-1], count)
        weights = [normal(k, x.weight.shape) for k, x in zip(init_keys, _linears(self))]
        new = eqx.tree_at(lambda m: [x.weight for x in _linears(m)], self, weights)
        new = eqx.tree_at(lambda m: [x.bias for x in _linears(m)], new, replace_fn=jnp.zeros_like)
        self.blocks, self.obs_head, self.reward_head, self.end_head = (
            new.blocks, new.obs_head, new.reward_head, new.end_head
        )

    @property
    def tokens_per_step(self) -> int:
        return self.frame_tokens + 1

    @property
    def max_tokens(self) -> int:
        return self.max_steps * self.tokens_per_step

    def empty_cache(self, dtype=jnp.float32) -> KVCache:
        embed = self.pos_embed.shape[-1]
        shape = (len(self.blocks), self.heads, self.max_tokens, embed // self.heads)
        return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))

    def __call__(self, tokens: Int[Array, " n"], cache: KVCache, length: Int[Array, ""], *,
                 key: PRNGKeyArray | None = None) -> tuple[Float[Array, "n E"], KVCache]:  # fmt: skip
        """Hidden states of `tokens` placed at positions length .. length + n - 1, and the updated cache.

        The position within its step decides whether a token is a frame token or the action; the caller
        keeps `length + n <= max_tokens` (checked only where shapes are static).
        """
        n = tokens.shape[0]
        if n > self.max_tokens:
            raise ValueError(f"{n} tokens do not fit the context of {self.max_tokens} tokens")
        pos = length + jnp.arange(n)
        is_action = (pos % self.tokens_per_step) == self.frame_tokens
        # Both tables are looked up with clipped indices; the position picks which one applies.
        frame = jax.vmap(self.frame_embed)(jnp.clip(tokens, 0, self.frame_embed.num_embeddings - 1))
        action = jax.vmap(self.action_embed)(jnp.clip(tokens, 0, self.action_embed.num_embeddings - 1))
        x = jnp.where(is_action[:, None], action, frame) + self.pos_embed[pos]
        count = len(self.blocks) + 1
        keys = jax.random.split(key, count) if key is not None else [None] * count
        x = dropout(x, self.rate, keys[-1])
        new_keys, new_values = [], []
        for i, block in enumerate(self.blocks):
            x, k, v = block(x, cache.keys[i], cache.values[i], length, key=keys[i])
            new_keys.append(k)
            new_values.append(v)
        x = jax.vmap(self.norm)(x)
        return x, KVCache(jnp.stack(new_keys), jnp.stack(new_values))

    def obs_logits(self, hidden: Float[Array, "*n E"]) -> Float[Array, "*n V"]:
        return _apply(self.obs_head, hidden)

    def reward_logits(self, hidden: Float[Array, "*n E"]) -> Float[Array, "*n 3"]:
        return _apply(self.reward_head, hidden)

    def end_logits(self, hidden: Float[Array, "*n E"]) -> Float[Array, "*n 2"]:
        return _apply(self.end_head, hidden)


def _is_linear(x) -> bool:
    return isinstance(x, eqx.nn.Linear)


def _linears(module) -> list[eqx.nn.Linear]:
    return [x for x in jax.tree_util.tree_leaves(module, is_leaf=_is_linear) if _is_linear(x)]


def _apply(head: Head, x: Array) -> Array:
    flat = x.reshape(-1, x.shape[-1])
    return jax.vmap(head)(flat).reshape(*x.shape[:-1], -1)


def interleave(frame_tokens: Int[Array, "T K"], actions: Int[Array, " T"]) -> Int[Array, " TK1"]:
    """[frame_0 tokens, a_0, frame_1 tokens, a_1, ...] for one sequence."""
    return jnp.concatenate([frame_tokens, actions[:, None]], axis=1).reshape(-1)


def sequence_logits(gpt: WorldModelGPT, frame_tokens: Int[Array, "T K"], actions: Int[Array, " T"], *,
                    key: PRNGKeyArray | None = None) -> dict[str, Array]:  # fmt: skip
    """Full causal pass over T steps of one sequence (T <= max_steps).

    Returns `obs` (T, K, V): logits of frame t's token k predicted from the previous position (for t = 0,
    k = 0 there is no previous position: the entry is the prediction from the last action instead and the
    caller masks it), `reward` (T, 3) and `end` (T, 2) read at the action positions.
    """
    steps, k = frame_tokens.shape
    if steps > gpt.max_steps or k != gpt.frame_tokens:
        raise ValueError(
            f"frame tokens {frame_tokens.shape} do not fit the GPT's {gpt.max_steps} steps x "
            f"{gpt.frame_tokens} tokens"
        )
    tokens = interleave(frame_tokens, actions)
    hidden, _ = gpt(tokens, gpt.empty_cache(), jnp.zeros((), jnp.int32), key=key)
    hidden = hidden.reshape(steps, k + 1, -1)
    # Position j predicts the token at j + 1: frame token k of step t comes from position (t, k - 1), token 0
    # from the previous step's action position. Roll the predictors forward by one position.
    predictors = jnp.roll(hidden.reshape(steps * (k + 1), -1), 1, axis=0).reshape(steps, k + 1, -1)[:, :k]
    return {
        "obs": gpt.obs_logits(predictors),
        "reward": gpt.reward_logits(hidden[:, k]),
        "end": gpt.end_logits(hidden[:, k]),
    }


# ------------------------------------------------------------------------------------ generation (batched)


def _batched(gpt: WorldModelGPT, tokens: Int[Array, "B n"], cache: KVCache, length: Int[Array, ""]):
    return jax.vmap(lambda t, c: gpt(t, c, length))(tokens, cache)


def start_from_frame(gpt: WorldModelGPT, frame_tokens: Int[Array, "B K"]) -> tuple[KVCache, Int[Array, ""]]:
    """A fresh cache holding one frame (IRIS `refresh_keys_values_with_initial_obs_tokens`); length K."""
    batch = frame_tokens.shape[0]
    empty = jax.tree.map(lambda x: jnp.broadcast_to(x, (batch, *x.shape)), gpt.empty_cache())
    _, cache = _batched(gpt, frame_tokens, empty, jnp.zeros((), jnp.int32))
    return cache, jnp.asarray(gpt.frame_tokens, jnp.int32)


def generate_step(gpt: WorldModelGPT, cache: KVCache, length: Int[Array, ""], frame_tokens: Int[Array, "B K"],
                  action: Int[Array, " B"], *, key: PRNGKeyArray) -> tuple[dict[str, Array], KVCache, Array]:
    """One imagined step, token by token (IRIS `WorldModelEnv.step`): feed the action, sample reward sign and
    termination from the action position, then sample the next frame's K tokens one at a time, each fed back.

    When the next K + 1 tokens would overflow the context, the cache restarts from the current frame
    `frame_tokens` (IRIS does the same). Returns reward in {-1, 0, 1} (B,), end (B,) bool, the next frame's
    tokens (B, K), the cache and its new length. Samples at temperature 1 (IRIS imagination).
    """

    def feed(cache, length, token):
        hidden, cache = _batched(gpt, token[:, None], cache, length)
        return hidden[:, 0], cache

    return _sample_step(gpt, feed, start_from_frame, cache, length, frame_tokens, action, key)


def start_recompute(gpt: WorldModelGPT, frame_tokens: Int[Array, "B K"]) -> tuple[Array, Array]:
    """`start_from_frame` without a cache: the context is a (B, max_tokens) token buffer holding one frame."""
    buffer = jnp.zeros((frame_tokens.shape[0], gpt.max_tokens), jnp.int32)
    return buffer.at[:, : gpt.frame_tokens].set(frame_tokens), jnp.asarray(gpt.frame_tokens, jnp.int32)


def generate_step_recompute(gpt: WorldModelGPT, buffer: Int[Array, "B N"], length: Int[Array, ""],
                            frame_tokens: Int[Array, "B K"], action: Int[Array, " B"], *,
                            key: PRNGKeyArray) -> tuple[dict[str, Array], Array, Array]:  # fmt: skip
    """`generate_step` without a KV cache, the baseline `bench perf agent` times it against: every new token
    reruns the full causal pass over the whole fixed-size context buffer (static shapes: max_tokens tokens;
    positions past the new token are padding the causal mask hides). Same samples as `generate_step` for the
    same key (the tests check it)."""
    zero = jnp.zeros((), jnp.int32)

    def feed(buffer, length, token):
        buffer = jax.lax.dynamic_update_slice(buffer, token[:, None], (0, length))
        hidden = jax.vmap(lambda tokens: gpt(tokens, gpt.empty_cache(), zero)[0])(buffer)  # (B, N, E)
        return jax.lax.dynamic_index_in_dim(hidden, length, axis=1, keepdims=False), buffer

    return _sample_step(gpt, feed, start_recompute, buffer, length, frame_tokens, action, key)


def _sample_step(gpt: WorldModelGPT, feed, restart, context, length, frame_tokens, action, key):
    """The sampling of one imagined step, shared by the cached and the recomputing generators.

    `feed(context, length, token (B,)) -> (hidden (B, E) of that token placed at `length`, context)`;
    `restart(frame_tokens) -> (context, length)` holding only the current frame.
    """
    k = gpt.frame_tokens
    context, length = jax.lax.cond(
        length + k + 1 > gpt.max_tokens, lambda: restart(gpt, frame_tokens), lambda: (context, length)
    )
    reward_key, end_key, frame_key = jax.random.split(key, 3)
    hidden, context = feed(context, length, action)
    reward = dists.categorical_sample(reward_key, gpt.reward_logits(hidden)) - 1
    end = dists.categorical_sample(end_key, gpt.end_logits(hidden)) == 1
    length = length + 1

    def next_token(carry, token_key):
        hidden, context, length = carry
        token = dists.categorical_sample(token_key, gpt.obs_logits(hidden)).astype(jnp.int32)
        hidden, context = feed(context, length, token)
        return (hidden, context, length + 1), token

    keys = jax.random.split(frame_key, k)
    (_, context, length), tokens = jax.lax.scan(next_token, (hidden, context, length), keys)
    out = {"reward": reward.astype(jnp.float32), "end": end, "frame_tokens": jnp.swapaxes(tokens, 0, 1)}
    return out, context, length
