"""`BlockLinear` as the present batched einsum against one product per block placed side by side, for both
`__call__` and the own-slice part of `with_shared` (not adopted: 2.4-2.6x faster alone at the imagination's
shapes in 2026-12-04's probe, but 1.001 at `size1m` and 1.032 at `size12m` in the whole update then, and 0.970 at
`size12m` in two batch shards on 2026-12-05; docs/cpu_runs.md). For scripts/update_ab.py."""

import jax.numpy as jnp

from agents.common import nets

present_call = nets.BlockLinear.__call__
present_with_shared = nets.BlockLinear.with_shared


def _per_block(groups, weight):
    return jnp.concatenate([groups[..., g, :] @ weight[g] for g in range(weight.shape[0])], axis=-1)


def per_block_call(self, x):
    groups, weight = nets.product_operands(x.reshape(*x.shape[:-1], self.blocks, -1), self.weight)
    return _per_block(groups, weight).astype(jnp.float32) + self.bias


def per_block_with_shared(self, own, shared):
    own_size = own.shape[-1] // self.blocks
    groups, weight = nets.product_operands(own.reshape(*own.shape[:-1], self.blocks, -1), self.weight)
    shared, _ = nets.product_operands(shared, weight)
    side_by_side = weight[:, own_size:].transpose(1, 0, 2).reshape(shared.shape[-1], -1)
    y = _per_block(groups, weight[:, :own_size]).astype(jnp.float32)
    return y + (shared @ side_by_side).astype(jnp.float32) + self.bias


def use_einsum():
    nets.BlockLinear.__call__ = present_call
    nets.BlockLinear.with_shared = present_with_shared


def use_per_block():
    nets.BlockLinear.__call__ = per_block_call
    nets.BlockLinear.with_shared = per_block_with_shared


VARIANTS = {"batched einsum": use_einsum, "per-block products": use_per_block}
