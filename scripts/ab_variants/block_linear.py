"""`BlockLinear` as the present batched einsum against one product per block placed side by side (tried on
2026-12-04 and not adopted: 2.4-2.6x faster alone at the imagination's shapes, no faster in the whole update).
For scripts/update_ab.py."""

import jax.numpy as jnp

from agents.common import nets

present = nets.BlockLinear.__call__


def per_block(self, x):
    groups, weight = nets.product_operands(x.reshape(*x.shape[:-1], self.blocks, -1), self.weight)
    y = jnp.concatenate([groups[..., g, :] @ weight[g] for g in range(self.blocks)], axis=-1)
    return y.astype(jnp.float32) + self.bias


def use_einsum():
    nets.BlockLinear.__call__ = present


def use_per_block():
    nets.BlockLinear.__call__ = per_block


VARIANTS = {"batched einsum": use_einsum, "per-block products": use_per_block}
