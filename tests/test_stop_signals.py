"""A stop signal that arrives while `bench` is still starting (before a run listens for it) stops the run as
soon as it can, also where the process started with SIGINT ignored (a shell script's background job)."""

import json
import os
import signal
import subprocess
import sys
import time

from bench import stop_signals
from tests.runs import ROOT


def test_a_signal_recorded_before_install_is_handed_to_the_handler():
    previous = {sig: signal.getsignal(sig) for sig in stop_signals.STOP_SIGNALS}
    try:
        stop_signals.hold()
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        heard = []
        stop_signals.install(lambda signum, _frame: heard.append(signum))
        assert heard == [signal.SIGTERM]  # the first one, once
        os.kill(os.getpid(), signal.SIGHUP)  # from now on straight to the handler
        assert heard == [signal.SIGTERM, signal.SIGHUP]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_a_signal_repeated_at_once_is_heard_once_and_a_later_one_again():
    """`timeout -s INT` signals the process and then its process group, which holds the process too: that echo
    must not count as the second Ctrl-C that stops a run at once (it killed a run in a sweep under CI load)."""
    previous = {sig: signal.getsignal(sig) for sig in stop_signals.STOP_SIGNALS}
    try:
        heard = []
        stop_signals.install(lambda signum, _frame: heard.append(signum))
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        assert heard == [signal.SIGINT]
        time.sleep(stop_signals.REPEAT_S + 0.1)
        os.kill(os.getpid(), signal.SIGINT)
        assert heard == [signal.SIGINT, signal.SIGINT]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_a_run_interrupted_while_starting_stops_with_its_status_saved(tmp_path):
    """SIGINT 0.5 s after the start, while `bench run` imports (SIGINT ignored at the start, as for `cmd &` in
    a script): before, the signal was lost and the run trained on; now it stops, status 'stopped', exit 130."""
    command = [sys.executable, "-m", "bench.cli", "run", "--agent", "tests.helpers:TINY", "--suite", "toy",
               "--task", "reach", "--steps", "100000", "--quiet", "--logdir", str(tmp_path)]  # fmt: skip
    ignoring = ["bash", "-c", 'trap "" INT; exec "$@"', "bash", *command]  # SIGINT ignored, kept across exec
    proc = subprocess.Popen(ignoring, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    manifests = list(tmp_path.glob("**/manifest.json"))
    assert len(manifests) == 1 and json.loads(manifests[0].read_text())["status"] == "stopped"
