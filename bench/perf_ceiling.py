"""`bench perf agent --ceiling`: the utilisation an update could reach if it did nothing but its products.

`product_calls` walks an update's jaxpr and lists every matrix product and convolution with how many times it
runs per update (a `lax.scan` body counts once per step; a `shard_map` body once per device; of a `cond`, the
costlier branch; dead code, which XLA drops, not at all). `ceiling` compiles each distinct product alone
(same operand shapes, dtypes and parameters), times it, and sums the times over the calls. That products-only
time is what this backend's own kernels need for the update's products and nothing else: no elementwise work,
no layout changes, no loop overhead. From it:

* ceiling utilisation = the update's product FLOPs / products-only time / matmul peak: the best the update
  can reach without faster kernels for its shapes, however its other work is trimmed;
* products-only time / the measured update time: the part of the update that the products' kernels account
  for; the rest is everything else.

Each product is timed as the best of at least five calls (more while they take under a quarter second),
less the cost of calling a compiled function (measured on a trivial one with the same operands), so tiny
products inside loops are not charged for dispatch they do not pay in the update. Both choices make the
products-only time low and the ceiling an upper bound.
"""

from __future__ import annotations

import dataclasses
import math
import time

PRODUCTS = ("dot_general", "conv_general_dilated")


def product_flops(eqn) -> float:
    """FLOPs of one dot_general or conv_general_dilated equation (2 per multiply-add); 0 for anything else."""
    name = eqn.primitive.name
    if name == "dot_general":
        (contract, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        out = eqn.outvars[0].aval.shape
        return 2.0 * math.prod(out) * math.prod(lhs[d] for d in contract)
    if name == "conv_general_dilated":
        rhs = eqn.invars[1].aval.shape
        out = eqn.outvars[0].aval.shape
        spec = eqn.params["dimension_numbers"].rhs_spec  # (out feature, in feature, spatial...)
        return 2.0 * math.prod(out) * math.prod(rhs[d] for d in spec[1:])
    return 0.0


def live_equations(jaxpr) -> list:
    """The equations whose results reach the jaxpr's outputs (or that have effects), in order.

    A jaxpr can hold work XLA drops as dead code: e.g. the gradient of the input images, which nothing uses (the
    first encoder stage's input gradient). Counting it would credit the update with products it never runs.
    """
    from jax.extend import core

    used = {v for v in jaxpr.outvars if isinstance(v, core.Var)}
    live = []
    for eqn in reversed(jaxpr.eqns):
        if eqn.effects or any(v in used for v in eqn.outvars):
            live.append(eqn)
            used.update(v for v in eqn.invars if isinstance(v, core.Var))
    return live[::-1]


def product_calls(closed_jaxpr) -> list[tuple[object, int]]:
    """(equation, calls per update) of every live product in the jaxpr, nested jaxprs included."""
    from jax.extend import core

    def walk(jaxpr) -> list[tuple[object, int]]:
        calls = []
        for eqn in live_equations(jaxpr):
            if eqn.primitive.name in PRODUCTS:
                calls.append((eqn, 1))
            subs = []
            for value in eqn.params.values():
                for item in value if isinstance(value, (list, tuple)) else (value,):
                    if isinstance(item, core.ClosedJaxpr):
                        subs.append(walk(item.jaxpr))
                    elif isinstance(item, core.Jaxpr):
                        subs.append(walk(item))
            if eqn.primitive.name == "cond":
                subs = [max(subs, key=lambda c: sum(product_flops(e) * n for e, n in c))] if subs else []
            repeat = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
            if eqn.primitive.name == "shard_map":  # its body runs once per device, at one part's shapes
                repeat = eqn.params["mesh"].size
            calls += [(e, n * repeat) for sub in subs for e, n in sub]
        return calls

    return walk(closed_jaxpr.jaxpr)


def jaxpr_flops(closed_jaxpr) -> float:
    """FLOPs of the matrix products and convolutions in a jaxpr, with loop bodies counted per iteration.

    XLA's cost analysis counts the body of a `while` (every `lax.scan`) once; recurrent models spend much of
    their work in such loops. Elementwise work is not counted (it is small next to the products here).
    """
    return sum(product_flops(eqn) * calls for eqn, calls in product_calls(closed_jaxpr))


@dataclasses.dataclass
class Product:
    """One distinct product of an update: what it is, how often it runs, and its time alone."""

    label: str  # e.g. "conv float32[128, 32, 32, 12] * float32[3, 3, 12, 32]"
    calls: int
    gflop_per_call: float
    seconds_per_call: float = float("nan")

    @property
    def seconds(self) -> float:
        return self.calls * self.seconds_per_call


def distinct_products(closed_jaxpr) -> list[tuple[Product, object]]:
    """The jaxpr's products grouped by (primitive, operand shapes and dtypes, parameters), calls summed."""
    groups: dict[str, list] = {}
    for eqn, calls in product_calls(closed_jaxpr):
        operands = " * ".join(f"{v.aval.dtype.name}{list(v.aval.shape)}" for v in eqn.invars)
        label = f"{'conv' if eqn.primitive.name == 'conv_general_dilated' else 'dot'} {operands}"
        key = f"{label} {sorted((k, repr(v)) for k, v in eqn.params.items())}"
        if key in groups:
            groups[key][0].calls += calls
        else:
            groups[key] = [Product(label, calls, product_flops(eqn) / 1e9), eqn]
    return [(product, eqn) for product, eqn in groups.values()]


def _best_seconds(function, operands, repeats: int, budget_s=0.25, most=50) -> float:
    """Best of `repeats` calls after a warm-up, or of more while they fit in `budget_s` (up to `most`)."""
    import jax

    jax.block_until_ready(function(*operands))
    best, spent, calls = float("inf"), 0.0, 0
    while calls < repeats or (spent < budget_s and calls < most):
        start = time.perf_counter()
        jax.block_until_ready(function(*operands))
        elapsed = time.perf_counter() - start
        best, spent, calls = min(best, elapsed), spent + elapsed, calls + 1
    return best


def _operands(eqn, seed: int) -> list:
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.key(seed), len(eqn.invars))
    values = []
    for key, var in zip(keys, eqn.invars):
        aval = var.aval
        if jnp.issubdtype(aval.dtype, jnp.inexact):
            values.append(jax.random.normal(key, aval.shape, jnp.float32).astype(aval.dtype))
        else:
            values.append(jnp.ones(aval.shape, aval.dtype))
    return values


def time_products(closed_jaxpr, repeats: int = 5) -> tuple[list[Product], float]:
    """Every distinct product timed alone (seconds per call, dispatch subtracted), and the dispatch time."""
    import jax

    timed, dispatch = [], []
    for index, (product, eqn) in enumerate(distinct_products(closed_jaxpr)):
        operands = _operands(eqn, index)
        run = jax.jit(lambda *xs, eqn=eqn: eqn.primitive.bind(*xs, **eqn.params))
        trivial = jax.jit(lambda *xs: xs[0].reshape(-1)[:1])
        call_cost = _best_seconds(trivial, operands, repeats)
        product.seconds_per_call = max(0.0, _best_seconds(run, operands, repeats) - call_cost)
        timed.append(product)
        dispatch.append(call_cost)
    return timed, (min(dispatch) if dispatch else 0.0)


def ceiling(closed_jaxpr, update_seconds: float, peak_gflops: float, repeats: int = 5, top: int = 8) -> dict:
    """Products-only time of an update and the utilisation ceiling it implies (JSON-friendly)."""
    products, dispatch = time_products(closed_jaxpr, repeats)
    products_seconds = sum(p.seconds for p in products)
    gflop = sum(p.gflop_per_call * p.calls for p in products)
    products.sort(key=lambda p: p.seconds, reverse=True)
    return {
        "distinct_products": len(products),
        "product_calls": sum(p.calls for p in products),
        "dispatch_s": dispatch,
        "products_only_s": products_seconds,
        "products_gflop": gflop,
        "ceiling_utilisation": gflop / products_seconds / peak_gflops if products_seconds > 0 else None,
        "products_share_of_update": products_seconds / update_seconds,
        "top": [
            {"product": p.label, "calls": p.calls, "ms": 1e3 * p.seconds,
             "share": p.seconds / products_seconds if products_seconds > 0 else 0.0,
             "gflops": p.gflop_per_call / p.seconds_per_call if p.seconds_per_call > 0 else None}
            for p in products[:top]
        ],  # fmt: skip
    }


SHARDS_NOT_BOUNDED = ("not computed for batch shards: their parts' products run side by side, each on part of "
                      "the cores, so products timed alone bound nothing (run --ceiling without --batch-shards)")


def report_lines(stream: str, c: dict) -> list[str]:
    if c.get("skipped"):
        return [f"  ceiling '{stream}': {c['skipped']}"]
    if c["distinct_products"] == 0:
        return [f"  ceiling '{stream}': no matrix products or convolutions in the update"]
    if c["ceiling_utilisation"] is None:
        return [f"  ceiling '{stream}': the update's products are too small to time apart from dispatch"]
    lines = [
        f"  ceiling '{stream}': {c['distinct_products']} distinct products, "
        f"{c['product_calls']} calls per update, "
        f"each timed alone (best of 5-50 calls, less {1e6 * c['dispatch_s']:.0f} us of dispatch)",
        f"           products alone {1e3 * c['products_only_s']:.1f} ms per update = "
        f"{100 * c['products_share_of_update']:.0f}% of the measured update -> ceiling utilisation "
        f"{100 * c['ceiling_utilisation']:.0f}% (the products' own kernels at these shapes)",
        "    share  ms/update  calls  GFLOP/s  product",
    ]
    for p in c["top"]:
        rate = "      -" if p["gflops"] is None else f"{p['gflops']:7.1f}"
        figures = f"{100 * p['share']:5.1f}%  {p['ms']:9.2f}  {p['calls']:5d}  {rate}"
        lines.append(f"    {figures}  {p['product']}")
    return lines
