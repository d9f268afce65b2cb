"""Time a Winograd (Toom-Cook) form of the stride-1 'SAME' convolution against XLA's at one shape, to see whether
the fewer multiplies pay on a CPU (tried 2026-12-05 for `size12m`'s 5x5 encoder stages; not adopted: at 256
images, 32x32, 32 -> 48 channels, F(2x2, 5x5) took 362.1 ms in 8-image chunks against XLA's 143.3 ms, its input
and output transforms bound by memory; docs/cpu_runs.md). Median of 7 calls after one warm-up, the model's
GFLOP/s (the plain convolution's multiply-adds) and the largest error relative to XLA's largest output.

    python scripts/winograd_probe.py                    # 256 images, 32x32, 32 -> 48, 5x5, 2x2 outputs per tile
    python scripts/winograd_probe.py 1024 16 48 64 5 2  # IMAGES SIDE C_IN C_OUT KERNEL OUTPUTS_PER_TILE
"""

import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

POINTS = (0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 3.0)  # interpolation points, then infinity


def toom_cook(m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A^T, G, B^T) of F(m, r): y = A^T [(G g) * (B^T d)] is the correlation y_i = sum_k d_{i+k} g_k."""
    n = m + r - 1
    points = POINTS[: n - 1]
    a_t, g = np.zeros((m, n)), np.zeros((n, r))
    for j, p in enumerate(points):
        a_t[:, j] = [p**i for i in range(m)]
        g[j] = [p**k / np.prod([p - q for q in points if q != p]) for k in range(r)]
    a_t[m - 1, n - 1] = g[n - 1, r - 1] = 1.0  # the point at infinity
    # B^T solves sum_j A^T[i, j] G[j, k] B^T[j, l] = [l == i + k] for every (i, k), one column l at a time.
    products = np.stack([a_t[i] * g[:, k] for i in range(m) for k in range(r)])
    b_t = np.stack([np.linalg.lstsq(products, [float(l == i + k) for i in range(m) for k in range(r)],
                                    rcond=None)[0] for l in range(n)], 1)  # fmt: skip
    d, w = np.random.default_rng(0).normal(size=n), np.random.default_rng(1).normal(size=r)
    assert np.allclose(a_t @ ((g @ w) * (b_t @ d)), [d[i:i + r] @ w for i in range(m)]), "bad transforms"
    return a_t, g, b_t


def winograd_conv(x, weight, m: int):
    r = weight.shape[0]
    n, radius = m + r - 1, r // 2
    a_t, g, b_t = (jnp.asarray(t, jnp.float32) for t in toom_cook(m, r))
    count, height, width, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (radius, radius + n), (radius, radius + n), (0, 0)))
    rows = jnp.einsum("xa,a...->x...", b_t, jnp.stack([padded[:, a:a + height:m] for a in range(n)]))
    tiles = jnp.stack([rows[:, :, :, b:b + width:m] for b in range(n)], 1)  # (n, n, N, H/m, W/m, C)
    v = jnp.einsum("yb,xb...->xy...", b_t, tiles).reshape(n * n, -1, x.shape[-1])
    u = jnp.einsum("xk,kl...,yl->xy...", g, weight, g).reshape(n * n, x.shape[-1], -1)
    products = jnp.einsum("ztc,zco->zto", v, u).reshape(n, n, count, height // m, width // m, -1)
    y = jnp.einsum("ix,jy,xy...->ij...", a_t, a_t, products)  # (m, m, N, H/m, W/m, O)
    return y.transpose(2, 3, 0, 4, 1, 5).reshape(count, height, width, -1)


def xla_conv(x, weight):
    return jax.lax.conv_general_dilated(x, weight, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def main() -> None:
    images, side, c_in, c_out, kernel, m = (int(v) for v in (sys.argv[1:] or [256, 32, 32, 48, 5, 2]))
    x = jax.random.normal(jax.random.key(0), (images, side, side, c_in))
    weight = jax.random.normal(jax.random.key(1), (kernel, kernel, c_in, c_out)) / np.sqrt(kernel * kernel * c_in)
    reference = np.asarray(xla_conv(x, weight), np.float64)
    forms = {"XLA": jax.jit(xla_conv)}
    for chunk in (8, 32, 128):
        if images % chunk == 0:
            def chunked(x, weight, chunk=chunk):
                parts = x.reshape(images // chunk, chunk, *x.shape[1:])
                return jax.lax.map(lambda part: winograd_conv(part, weight, m), parts).reshape(*x.shape[:3], -1)
            forms[f"Winograd F({m}x{m}, {kernel}x{kernel}), {chunk}-image chunks"] = jax.jit(chunked)
    flops = 2 * images * side * side * kernel * kernel * c_in * c_out
    for name, form in forms.items():
        error = np.abs(np.asarray(form(x, weight)) - reference).max() / np.abs(reference).max()
        times = []
        for _ in range(7):
            start = time.perf_counter()
            jax.block_until_ready(form(x, weight))
            times.append(time.perf_counter() - start)
        median = float(np.median(times))
        print(f"{name}: {median * 1e3:.1f} ms, {flops / median / 1e9:.1f} GFLOP/s, relative error {error:.1e}")


if __name__ == "__main__":
    main()
