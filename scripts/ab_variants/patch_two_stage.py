"""The convolutions' patch matrices (`agents.common.conv._patches`) as the present k*k shifted slices joined
at once, against two stages: the k horizontal shifts joined first, then k vertical shifts of that (tried on
2026-12-04, not adopted). Same matrix, same tap order. For scripts/update_ab.py."""

import jax.numpy as jnp

from agents.common import conv

present = conv._patches


def two_stages(x, kernel):
    _, height, width, channels = x.shape
    radius = kernel // 2
    padded = jnp.pad(x, ((0, 0), (radius, radius), (radius, radius), (0, 0)))
    rows = jnp.concatenate([padded[:, :, dx : dx + width] for dx in range(kernel)], -1)
    taps = jnp.concatenate([rows[:, dy : dy + height] for dy in range(kernel)], -1)
    return taps.reshape(-1, kernel * kernel * channels)


def use_present():
    conv._patches = present


def use_two_stages():
    conv._patches = two_stages


VARIANTS = {"k*k slices": use_present, "two stages": use_two_stages}
