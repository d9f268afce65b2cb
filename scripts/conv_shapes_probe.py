"""Time XLA's plain convolution (stride 1, 'SAME', NHWC/HWIO, float32) alone at given shapes: best of 7 calls
after one warm-up, and GFLOP/s. For comparing XLA's CPU convolution paths (set XLA_FLAGS) and channel counts.

    python scripts/conv_shapes_probe.py          # the encoder's costly shapes at size1m
    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution \
        python scripts/conv_shapes_probe.py      # Eigen's convolutions instead of YNNPACK's
    python scripts/conv_shapes_probe.py 1024x32x32x12:3:8 1024x32x32x12:3:16   # NxHxWxC_IN:KERNEL:C_OUT
"""

import sys
import time

import jax
import jax.numpy as jnp

DEFAULT_SHAPES = ["1024x32x32x12:5:8", "1024x32x32x8:5:12", "1024x32x32x12:3:32", "1024x32x32x12:3:8",
                  "1024x32x32x12:3:16"]  # fmt: skip


def main(specs: list[str]) -> None:
    convolve = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))  # fmt: skip
    for spec in specs:
        image, kernel, out = spec.split(":")
        n, h, w, c = (int(v) for v in image.split("x"))
        k, o = int(kernel), int(out)
        x = jax.random.normal(jax.random.key(0), (n, h, w, c))
        weight = jax.random.normal(jax.random.key(1), (k, k, c, o))
        jax.block_until_ready(convolve(x, weight))
        best = float("inf")
        for _ in range(7):
            start = time.perf_counter()
            jax.block_until_ready(convolve(x, weight))
            best = min(best, time.perf_counter() - start)
        flops = 2 * n * h * w * k * k * c * o
        rate = flops / best / 1e9
        print(f"{n}x{h}x{w}x{c} kernel {k} -> {o} channels: {best * 1e3:.1f} ms, {rate:.0f} GFLOP/s")


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT_SHAPES)
