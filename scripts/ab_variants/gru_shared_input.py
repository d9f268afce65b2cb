"""The block GRUs' first block-linear layer fed as before 2026-12-05 (every block's input is its slice of the
state concatenated with a copy of the shared projections, then one batched block product) against the
present `BlockLinear.with_shared` (the slices through the block products, the shared part through one dense
product with the blocks' weights side by side: the same multiply-adds). Adopted: `size12m` 1.025 and 1.023 in
batch shards, `size1m` 1.012 (docs/cpu_runs.md). For scripts/update_ab.py."""

import jax.numpy as jnp

from agents.common import nets

present = nets.BlockLinear.with_shared


def concatenated(self, own, shared):
    lead = own.shape[:-1]
    copies = jnp.broadcast_to(shared[..., None, :], (*lead, self.blocks, shared.shape[-1]))
    per_block = jnp.concatenate([own.reshape(*lead, self.blocks, -1), copies], -1)
    return self(per_block.reshape(*lead, -1))


def use_concatenated():
    nets.BlockLinear.with_shared = concatenated


def use_with_shared():
    nets.BlockLinear.with_shared = present


VARIANTS = {"concatenated blocks": use_concatenated, "shared part as one product": use_with_shared}
