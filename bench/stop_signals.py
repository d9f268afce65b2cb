"""The signals that stop a run or a sweep, and the ones that arrive before it listens for them.

A run stops on SIGINT, SIGTERM or SIGHUP by saving a checkpoint (bench.runner), and a sweep passes them on to
its runs (bench.sweep). Until a run has installed those handlers (imports, env workers starting: seconds), such
a signal would end the process at once, or be lost where the process started with SIGINT ignored, as a shell
script's background jobs do: the run then trained on past its `timeout -s INT` (seen in scripts/gpu_check.sh).
The `bench` command calls `hold()` first thing, which records them; `install(handler)` installs the real
handler and hands it what was recorded, so a run stopped while starting stops as soon as it can.
"""

from __future__ import annotations

import math
import signal
import time

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# `timeout -s INT` sends its signal to the process and then to the process's group, which holds it too: a repeat
# within this many seconds is that echo, not a second Ctrl-C ("stop at once"), and is dropped.
REPEAT_S = 1.0
_pending: list[int] = []


def _record(signum, _frame) -> None:
    _pending.append(signum)


def hold() -> None:
    """Record the stop signals from now on, until `install` hands them to a handler (the `bench` command)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _record)


def install(handler) -> dict:
    """Install `handler` for the stop signals (a repeat of one within REPEAT_S seconds dropped); if one was
    recorded by `hold`, call it with that signal now. Returns the previous handlers, for the caller to put
    back."""
    last = {}

    def once(signum, frame):
        now = time.monotonic()
        if now - last.get(signum, -math.inf) >= REPEAT_S:
            last[signum] = now
            handler(signum, frame)

    previous = {sig: signal.signal(sig, once) for sig in STOP_SIGNALS}
    if _pending:
        signum = _pending[0]
        _pending.clear()
        once(signum, None)
    return previous
