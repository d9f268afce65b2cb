"""The convolution weight gradient as chunked patch products at every layer (before 2026-12-05) against the
present rule (`agents.common.conv._weight_gradient`): layers of at most 64 channels in and out take XLA's own
weight-gradient convolution over batch chunks of at most XLA_GRADIENT_CHUNK_BYTES of input, one call per
chunk. CHUNK_KIB and MAX_CHANNELS in the environment set that chunk and the channel bound for the second
variant (default: the constants as they are). For scripts/update_ab.py."""

import os

from agents.common import conv

PRESENT_CHANNELS, PRESENT_CHUNK = conv.XLA_GRADIENT_MAX_CHANNELS, conv.XLA_GRADIENT_CHUNK_BYTES
CHUNK = int(float(os.environ["CHUNK_KIB"]) * 1024) if "CHUNK_KIB" in os.environ else PRESENT_CHUNK
CHANNELS = int(os.environ.get("MAX_CHANNELS", PRESENT_CHANNELS))


def use_patch_products():
    conv.XLA_GRADIENT_MAX_CHANNELS = 0


def use_xla_chunks():
    conv.XLA_GRADIENT_MAX_CHANNELS, conv.XLA_GRADIENT_CHUNK_BYTES = CHANNELS, CHUNK


VARIANTS = {"patch products": use_patch_products, f"XLA's, {CHUNK // 1024} KiB chunks": use_xla_chunks}
