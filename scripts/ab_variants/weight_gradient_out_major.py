"""The patch products of the convolution weight gradient accumulated as (taps x channels in, out), as before
2026-12-05, against the present (out, taps x channels in), transposed once at the end
(agents.common.conv._weight_gradient_by_patches). CHUNK_MIB in the environment sets the patch chunk of the
present form (default: `conv.PATCH_CHUNK_BYTES`). For scripts/update_ab.py."""

import os

import jax
import jax.numpy as jnp

from agents.common import conv

CHUNK_MIB = os.environ.get("CHUNK_MIB")
PRESENT_FORM, PRESENT_CHUNK = conv._weight_gradient_by_patches, conv.PATCH_CHUNK_BYTES


def _taps_major(x, grad, kernel):
    batch, height, width, channels = x.shape
    chunk = conv._chunk_size(batch, height * width * kernel * kernel * channels * 4)
    xs = x.reshape(batch // chunk, chunk, height, width, channels)
    grads = grad.reshape(batch // chunk, chunk, height, width, grad.shape[-1])

    def accumulate(total, inputs):
        x_chunk, grad_chunk = inputs
        flat = conv._patches(x_chunk, kernel)
        grad_flat = grad_chunk.reshape(flat.shape[0], -1).astype(flat.dtype)
        return total + jnp.einsum("pk,po->ko", flat, grad_flat).astype(jnp.float32), None

    total = jnp.zeros((kernel * kernel * channels, grad.shape[-1]), jnp.float32)
    total, _ = jax.lax.scan(accumulate, total, (xs, grads))
    return total.reshape(kernel, kernel, channels, grad.shape[-1])


def taps_major():
    conv._weight_gradient_by_patches, conv.PATCH_CHUNK_BYTES = _taps_major, PRESENT_CHUNK


def present():
    conv._weight_gradient_by_patches = PRESENT_FORM
    conv.PATCH_CHUNK_BYTES = int(float(CHUNK_MIB) * 2**20) if CHUNK_MIB else PRESENT_CHUNK


VARIANTS = {"(k, o) products": taps_major, "(o, k) products": present}
