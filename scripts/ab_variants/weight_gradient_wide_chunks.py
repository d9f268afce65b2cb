"""XLA's weight-gradient convolution per chunk (agents/common/conv.py) for layers of 32-64 channels: chunks of
at most 256 KiB of input, as for narrower layers (before 2026-12-05), against the present 1 MiB
(`XLA_GRADIENT_WIDE_CHUNK_BYTES`; KIB in the environment sets another size). Layers of under 32 channels
(`debug`, `size1m`) are the same in both. For scripts/update_ab.py."""

import os

from agents.common import conv

PRESENT = conv.XLA_GRADIENT_WIDE_CHUNK_BYTES
KIB = os.environ.get("KIB")


def narrow_chunks():
    conv.XLA_GRADIENT_WIDE_CHUNK_BYTES = conv.XLA_GRADIENT_CHUNK_BYTES


def wide_chunks():
    conv.XLA_GRADIENT_WIDE_CHUNK_BYTES = int(KIB) * 2**10 if KIB else PRESENT


VARIANTS = {"256 KiB chunks": narrow_chunks, f"{KIB or PRESENT // 2**10} KiB chunks": wide_chunks}
