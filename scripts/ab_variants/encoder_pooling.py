"""The encoder with only its first stage in the space-to-depth form (`Conv2d.pooled`: as before 2026-12-04,
and as now off CPU) against every stage in it (on CPU as of 2026-12-04; since 2026-12-05 `conv.pool_stage`
keeps stages of over 16 channels plain). For scripts/update_ab.py."""

from agents.common import conv


def use_first_stage_only():
    conv.pool_stage = lambda channels: False


def use_every_stage():
    conv.pool_stage = lambda channels: conv.cpu_forms()


VARIANTS = {"first stage pooled": use_first_stage_only, "every stage pooled": use_every_stage}
