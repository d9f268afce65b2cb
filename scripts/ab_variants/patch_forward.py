"""Forward and input-gradient convolutions as XLA's convolution everywhere (before 2026-12-04) against chunked
patch products where they have enough channels (`agents.common.conv.PATCH_CONV`). For scripts/update_ab.py."""

from agents.common import conv


def xla_convolutions():
    conv.PATCH_CONV = False


def patch_products():
    conv.PATCH_CONV = True


VARIANTS = {"XLA convolutions": xla_convolutions, "patch products": patch_products}
