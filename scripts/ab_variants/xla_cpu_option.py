"""XLA's default CPU compilation of the update against one XLA option (tried on 2026-12-04, none adopted).
OPTION=name=value in the environment picks the option (default: xla_cpu_enable_concurrency_optimized_scheduler
=true); values true/false are booleans, digits integers. For scripts/update_ab.py."""

import os

NAME, _, TEXT = os.environ.get("OPTION", "xla_cpu_enable_concurrency_optimized_scheduler=true").partition("=")
VALUE = {"true": True, "false": False}.get(TEXT, int(TEXT) if TEXT.lstrip("-").isdigit() else TEXT)


def unchanged():
    pass


VARIANTS = {"XLA defaults": unchanged, f"{NAME}={TEXT}": unchanged}
COMPILER_OPTIONS = {f"{NAME}={TEXT}": {NAME: VALUE}}
