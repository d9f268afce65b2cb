"""JAX's Threefry lowering on a CPU (its 20 rounds as a `while` loop of 5 iterations, one per random draw)
against the same rounds written out in a row, as JAX lowers them on other platforms. Both give the same bits;
only the compiled form differs. Tried on 2026-12-06, not adopted (docs/cpu_runs.md). For scripts/update_ab.py.

Uses JAX's private modules (jax._src), so it may need changing with another jax version. The second variant's
registration is global: it must be the second entry, compiled after the first."""

from functools import partial


def rolled():
    pass


def unrolled():
    from jax._src.random import threefry2x32
    from jax.interpreters import mlir

    rule = mlir.lower_fun(partial(threefry2x32._threefry2x32_lowering, use_rolled_loops=False), multiple_results=True)
    mlir.register_lowering(threefry2x32.threefry2x32_p, rule, platform="cpu")


VARIANTS = {"rolled (JAX's CPU default)": rolled, "unrolled": unrolled}
