"""Dense network layers of the DreamerV3 family (2024 version): linear, block-linear, RMSNorm, MLP, heads, and
the block-diagonal GRU core (the convolutional encoder and decoder are in `conv.py`).

Every network takes ONE example (Equinox style); batch with `jax.vmap` or `batched` below. (The dense layers
also accept leading batch dimensions directly, since `x @ W` broadcasts.) Initialisation
follows the upstream `trunc_normal_in`: a normal truncated at two standard deviations, rescaled by 1.1368 so
its standard deviation is sqrt(1 / fan_in), times `outscale` (0 gives zero weights); biases start at zero.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
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


# ------------------------------------------------------------------------------------------ compute dtype
#
# Mixed precision (the DreamerV3 family's `compute_dtype`): while `compute_dtype("bfloat16")` is active where a
# function is traced, the matrix products of Linear, BlockLinear and the convolutions (conv.py) take bfloat16
# operands (parameters cast from their float32 master copy, activations cast on entry) and their results are
# cast back to float32 (XLA's CPU backend has no bfloat16 x bfloat16 -> float32 product; GPUs accumulate bfloat16
# products in float32 anyway). Parameters, optimizer state, norms, recurrent states and losses stay float32.
# Outside the context nothing changes (float32 throughout, the same computation).

COMPUTE_DTYPES = ("float32", "bfloat16")
_COMPUTE_DTYPE: contextvars.ContextVar = contextvars.ContextVar("compute_dtype", default=None)


def check_compute_dtype(name: str) -> str:
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype {name!r}: choose one of {', '.join(COMPUTE_DTYPES)}")
    return name


@contextlib.contextmanager
def compute_dtype(name: str):
    """Trace the products inside in dtype `name` ("float32": unchanged)."""
    token = _COMPUTE_DTYPE.set(None if check_compute_dtype(name) == "float32" else jnp.dtype(name))
    try:
        yield
    finally:
        _COMPUTE_DTYPE.reset(token)


def product_operands(x: Array, weight: Array) -> tuple[Array, Array]:
    """(x, weight) in the active compute dtype (unchanged without one)."""
    dtype = _COMPUTE_DTYPE.get()
    return (x, weight) if dtype is None else (x.astype(dtype), weight.astype(dtype))


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
        y = jnp.matmul(*product_operands(x, self.weight)).astype(jnp.float32)
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

    def __call__(self, x: Float[Array, "*b i"]) -> Float[Array, "*b o"]:
        groups = x.reshape(*x.shape[:-1], self.blocks, -1)
        y = jnp.einsum("...gi,gio->...go", *product_operands(groups, self.weight)).astype(jnp.float32)
        return y.reshape(*x.shape[:-1], -1) + self.bias

    def with_shared(self, own: Float[Array, "*b j"], shared: Float[Array, "*b s"]) -> Float[Array, "*b o"]:
        """The map of every block's input [its slice of `own`; `shared`] (what the block GRUs feed), without
        copying `shared` into every block: the slices go through the block products and `shared` through one
        dense product with the blocks' weights side by side. The same multiply-adds as building the inputs and
        calling the layer, 2-3% less time for a `size12m` update on a CPU (docs/cpu_runs.md)."""
        own_size = own.shape[-1] // self.blocks
        if own_size + shared.shape[-1] != self.weight.shape[1]:
            raise ValueError(f"BlockLinear.with_shared: {own_size} + {shared.shape[-1]} inputs per block, "
                             f"the layer takes {self.weight.shape[1]}")  # fmt: skip
        groups, weight = product_operands(own.reshape(*own.shape[:-1], self.blocks, -1), self.weight)
        shared, _ = product_operands(shared, weight)
        side_by_side = weight[:, own_size:].transpose(1, 0, 2).reshape(shared.shape[-1], -1)
        y = jnp.einsum("...gi,gio->...go", groups, weight[:, :own_size]).astype(jnp.float32)
        return y.reshape(*own.shape[:-1], -1) + (shared @ side_by_side).astype(jnp.float32) + self.bias


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
        # Each block's input is [its slice of deter; shared]. The norm runs over all of deter (upstream
        # normalises the flat vector, not per block).
        x = act(self.hidden_norms[0](self.hidden_layers[0].with_shared(deter, shared)))
        for layer, norm in zip(self.hidden_layers[1:], self.hidden_norms[1:]):
            x = act(norm(layer(x)))
        gates = self.gates(x).reshape(blocks, 3, -1)
        reset, candidate, update = gates[:, 0].reshape(-1), gates[:, 1].reshape(-1), gates[:, 2].reshape(-1)
        candidate = jnp.tanh(jax.nn.sigmoid(reset) * candidate)
        update = jax.nn.sigmoid(update - 1.0)
        return update * candidate + (1.0 - update) * deter
