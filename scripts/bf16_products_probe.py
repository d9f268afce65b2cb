"""Time matrix products alone in float32 and on bfloat16 operands, at the shapes of DreamerV3's update, to see
whether a device runs bfloat16 products faster than float32 (on a CPU: whether XLA uses bfloat16 matrix units
such as Intel's AMX):

* `f32`: float32 x float32 -> float32;
* `bf16`: bfloat16 x bfloat16 -> bfloat16 (what `compute_dtype=bfloat16` asks for, agents/common/nets.py);
* `bf16>f32`: bfloat16 x bfloat16 -> float32 (`preferred_element_type`).

Each shape M:K:N is timed in two layouts: `x @ w`, (M, K) by (K, N), the forward products; and `x.T @ g`,
(M, K) by (M, N) contracted over M, the weight gradients. Figures are GFLOP/s, the best of `--rounds` calls.
A batched product (`bgi,gio->bgo`, BlockLinear's) is also tried in each dtype; XLA's CPU backend (jax 0.10.2)
refuses the bfloat16 -> float32 one when it runs, which the last line reports.

    python scripts/bf16_products_probe.py --shapes 2048:2048:2048 4096:108:32 16384:288:128
"""

from __future__ import annotations

import argparse
import time

FORMS = ("f32", "bf16", "bf16>f32")


def best_seconds(fn, *args, rounds: int) -> float:
    import jax

    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def product(form: str, layout: str):
    import jax
    import jax.numpy as jnp

    result = jnp.float32 if form == "bf16>f32" else None
    if layout == "x @ w":
        return jax.jit(lambda x, w: jnp.matmul(x, w, preferred_element_type=result))
    return jax.jit(lambda x, g: jnp.einsum("mk,mn->kn", x, g, preferred_element_type=result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["2048:2048:2048", "4096:108:32", "1024:432:32",
                                                         "16384:288:128", "16384:512:512"])  # fmt: skip
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    import jax
    import jax.numpy as jnp

    print(f"{jax.default_backend()} ({jax.devices()[0].device_kind}), jax {jax.__version__}; GFLOP/s, best of "
          f"{args.rounds}")  # fmt: skip
    print(f"{'M:K:N':>16}  {'layout':7}  " + "  ".join(f"{form:>9}" for form in FORMS))
    for shape in args.shapes:
        m, k, n = (int(part) for part in shape.split(":"))
        keys = jax.random.split(jax.random.key(0), 3)
        x = jax.random.normal(keys[0], (m, k))
        second = {"x @ w": jax.random.normal(keys[1], (k, n)), "x.T @ g": jax.random.normal(keys[2], (m, n))}
        for layout, other in second.items():
            figures = []
            for form in FORMS:
                dtype = jnp.float32 if form == "f32" else jnp.bfloat16
                seconds = best_seconds(product(form, layout), x.astype(dtype), other.astype(dtype),
                                       rounds=args.rounds)  # fmt: skip
                figures.append(f"{2 * m * k * n / seconds / 1e9:9.0f}")
            print(f"{shape:>16}  {layout:7}  " + "  ".join(figures))
    groups = jax.random.normal(jax.random.key(1), (64, 8, 32))
    weight = jax.random.normal(jax.random.key(2), (8, 32, 16))
    for form in FORMS:
        dtype = jnp.float32 if form == "f32" else jnp.bfloat16
        result = jnp.float32 if form == "bf16>f32" else None
        batched = jax.jit(lambda a, b: jnp.einsum("bgi,gio->bgo", a, b, preferred_element_type=result))
        try:
            jax.block_until_ready(batched(groups.astype(dtype), weight.astype(dtype)))
            outcome = "runs"
        except Exception as error:  # XLA's refusal is a runtime error
            outcome = f"fails: {str(error).splitlines()[0][:100]}"
        print(f"batched product bgi,gio->bgo, {form}: {outcome}")


if __name__ == "__main__":
    main()
