"""The convolution weight gradient as it is against XLA's per-chunk form (`conv._weight_gradient_by_xla`) used
also for the wide layers: those with a side over `conv.XLA_GRADIENT_MAX_CHANNELS` channels, at 16x16 and
larger, in chunks of at most WIDE_KIB of input (default 1024) holding 4 images or more (tried at `size12m` on
2026-12-05, not adopted). For scripts/update_ab.py."""

import os

from agents.common import conv

present = conv._weight_gradient
CHUNK_BYTES = int(float(os.environ.get("WIDE_KIB", "1024")) * 1024)


def with_wide_layers(x, grad, kernel):
    batch, height, width, channels = x.shape
    if max(channels, grad.shape[-1]) > conv.XLA_GRADIENT_MAX_CHANNELS and height * width >= 256:
        chunk = conv._chunk_size(batch, height * width * channels * x.dtype.itemsize, CHUNK_BYTES)
        if chunk >= 4:
            return conv._weight_gradient_by_xla(x, grad, kernel, chunk)
    return present(x, grad, kernel)


def use_present():
    conv._weight_gradient = present


def use_wide_layers():
    conv._weight_gradient = with_wide_layers


VARIANTS = {"present": use_present, f"wide layers too, {CHUNK_BYTES // 1024} KiB chunks": use_wide_layers}
