"""The encoder with only its first stage in the space-to-depth form (`Conv2d.pooled`: as before 2026-12-04,
and as now off CPU) against every stage in it (the present code on CPU). For scripts/update_ab.py."""

from agents.common import conv

present = conv.pool_every_stage


def use_first_stage_only():
    conv.pool_every_stage = lambda: False


def use_every_stage():
    conv.pool_every_stage = present


VARIANTS = {"first stage pooled": use_first_stage_only, "every stage pooled": use_every_stage}
