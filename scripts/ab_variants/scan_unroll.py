"""DreamerV3's loops over time as they are (`lax.scan`, one step per iteration) against the same loops
unrolled (tried on 2026-12-05, not adopted): the RSSM's filtering, the imagination and the lambda-returns.
UNROLL in the environment sets how many steps an iteration runs (`full`, the default: the whole loop unrolled;
or a number).
Only the scans called from those modules change: the convolutions' chunk loops stay as they are (their own
unrolling was tried before, docs/cpu_runs.md). For scripts/update_ab.py."""

import os
import sys

import jax

_present_scan = jax.lax.scan
UNROLL = os.environ.get("UNROLL", "full")
STEPS = True if UNROLL == "full" else int(UNROLL)
TIME_LOOPS = {"agents.dreamerv3.rssm", "agents.common.behaviour", "agents.common.returns"}


def _scan_unrolled_in_time_loops(*args, **kwargs):
    if sys._getframe(1).f_globals.get("__name__") in TIME_LOOPS:
        kwargs.setdefault("unroll", STEPS)
    return _present_scan(*args, **kwargs)


def use_present():
    jax.lax.scan = _present_scan


def use_unrolled():
    jax.lax.scan = _scan_unrolled_in_time_loops


VARIANTS = {"one step per iteration": use_present, f"unrolled ({UNROLL})": use_unrolled}
