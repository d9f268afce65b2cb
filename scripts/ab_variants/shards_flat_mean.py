"""`shards.mean` as before 2026-12-05: one `pmean` of the tree of leaves (one XLA all-reduce of a tuple),
against the present form: one `pmean` of a single vector per dtype holding every leaf, split
back afterwards. Adopted: `debug` 1.051, `size1m` 1.012, `size12m` 0.995 (docs/cpu_runs.md). For
scripts/update_ab.py with --batch-shards 2."""

import jax

from agents.common import shards

present = shards.mean


def per_leaf(tree):
    return tree if shards.parts() == 1 else jax.lax.pmean(tree, shards.AXIS)


def use_per_leaf():
    shards.mean = per_leaf


def use_flat():
    shards.mean = present


VARIANTS = {"pmean per leaf": use_per_leaf, "one pmean per dtype": use_flat}
