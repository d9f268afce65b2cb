"""Time a convolution's weight gradient alone, in the forms agents/common/conv.py chooses between on CPU, at
given shapes (3x3 kernel, stride 1, 'SAME', float32, random inputs):

* the chunked patch products (`_weight_gradient_by_patches`);
* XLA's weight-gradient convolution over the whole batch;
* XLA's, one call per batch chunk of at most KIB of input (`_weight_gradient_by_xla`), for each
  `--chunk-kib`;
* with `--scan`, XLA's per chunk of the first `--chunk-kib` inside a `lax.scan` (slow: seconds per call).

    python scripts/weight_gradient_probe.py --images 1024 --shapes 32x32:12:32 16x16:32:48 \
        --chunk-kib 64 256 1024

Each form is jitted alone; the forms are called in turn, `--rounds` times, and each line gives the patch
products' median time and every other form's speed relative to it (above 1: faster). Run it under TCMalloc as
`bench` runs (LD_PRELOAD=libtcmalloc_minimal.so.4).
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

KERNEL = 3


def parse_shape(text: str) -> tuple[int, int, int, int]:
    """'HxW:IN:OUT' -> (height, width, in channels, out channels)."""
    try:
        size, channels_in, channels_out = text.split(":")
        height, width = size.split("x")
        return int(height), int(width), int(channels_in), int(channels_out)
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape {text!r}: expected HxW:IN:OUT, e.g. 32x32:12:32") from None


def forms(chunk_kibs: list[float], scan: bool) -> dict:
    import jax
    import jax.numpy as jnp

    from agents.common import conv

    def chunk_of(x, kib):
        return conv._chunk_size(x.shape[0], x[0].size * x.dtype.itemsize, int(kib * 1024))

    def xla_in_scan(x, grad, kib):
        chunk = chunk_of(x, kib)
        pieces = lambda a: a.reshape(a.shape[0] // chunk, chunk, *a.shape[1:])
        step = lambda total, xs: (total + conv._weight_gradient_by_xla(*xs, KERNEL, chunk), None)
        start = jnp.zeros((KERNEL, KERNEL, x.shape[-1], grad.shape[-1]), jnp.float32)
        return jax.lax.scan(step, start, (pieces(x), pieces(grad)))[0]

    out = {
        "patch products": lambda x, grad: conv._weight_gradient_by_patches(x, grad, KERNEL),
        "XLA, whole batch": lambda x, grad: conv._weight_gradient_by_xla(x, grad, KERNEL, x.shape[0]),
    }
    for kib in chunk_kibs:
        out[f"XLA, {kib:g} KiB chunks"] = (
            lambda x, grad, kib=kib: conv._weight_gradient_by_xla(x, grad, KERNEL, chunk_of(x, kib)))
    if scan:
        in_scan = lambda x, grad: xla_in_scan(x, grad, chunk_kibs[0])
        out[f"XLA, {chunk_kibs[0]:g} KiB chunks in a scan"] = in_scan
    return out


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--images", type=int, default=1024, help="batch of images (default 1024, size1m's)")
    parser.add_argument("--shapes", type=parse_shape, nargs="+", required=True, help="HxW:IN:OUT ...")
    parser.add_argument("--chunk-kib", type=float, nargs="+", default=[256.0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--scan", action="store_true", help="also XLA's per chunk inside a lax.scan")
    args = parser.parse_args()

    import jax
    import numpy as np

    rng = np.random.default_rng(0)
    candidates = forms(args.chunk_kib, args.scan)
    for height, width, channels_in, channels_out in args.shapes:
        x = jax.numpy.asarray(rng.standard_normal((args.images, height, width, channels_in), np.float32))
        grad = jax.numpy.asarray(rng.standard_normal((args.images, height, width, channels_out), np.float32))
        compiled = {name: jax.jit(fn).lower(x, grad).compile() for name, fn in candidates.items()}
        times = {name: [] for name in compiled}
        for round_index in range(args.rounds + 1):
            for name, fn in compiled.items():
                start = time.perf_counter()
                fn(x, grad).block_until_ready()
                if round_index:  # the first round warms up
                    times[name].append(time.perf_counter() - start)
        base = statistics.median(times["patch products"])
        relative = ", ".join(f"{name} {base / statistics.median(values):.2f}x"
                             for name, values in times.items() if name != "patch products")  # fmt: skip
        print(f"{args.images} images {height}x{width}, {channels_in} -> {channels_out}: patch products "
              f"{base * 1e3:.1f} ms; {relative}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
