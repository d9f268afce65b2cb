"""The convolution weight gradient's patch chunks of 8 MiB (before 2026-12-04) against the present 2 MiB
(`agents.common.conv.PATCH_CHUNK_BYTES`; CHUNK_MIB in the environment picks another size). For
scripts/update_ab.py."""

import os

from agents.common import conv

SIZE_MIB = float(os.environ.get("CHUNK_MIB", "2"))


def use_8_mib():
    conv.PATCH_CHUNK_BYTES = 8 * 2**20


def use_size():
    conv.PATCH_CHUNK_BYTES = int(SIZE_MIB * 2**20)


VARIANTS = {"8 MiB chunks": use_8_mib, f"{SIZE_MIB:g} MiB chunks": use_size}
