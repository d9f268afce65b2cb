"""Env workers: signals meant for the run leave them alone, and a silent worker is named, not waited on forever."""

import os
import signal
import time

import numpy as np
import pytest

from bench.envs import VecEnv
from tasks.toy import SUITE as TOY


def _step(envs: VecEnv):
    action = {key: np.asarray(space.sample(np.random.default_rng(0))) for key, space in envs.act_space.items()}
    envs.request(0, "step", action)
    return envs.collect()[0]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signals_sent_to_the_process_group_do_not_reach_the_workers(sig):
    with VecEnv("toy", "reach", TOY.protocol_cls(), 1) as envs:
        envs.reset_all([1])
        pid = envs.worker_pid(0)
        os.kill(pid, sig)  # what Ctrl-C (or a hangup) in a terminal does to every process of the group
        time.sleep(0.5)
        result = _step(envs)
        assert not result.crashed, result.error
        assert envs.worker_pid(0) == pid and envs.restarts == 0


def test_a_stopped_worker_is_named_and_restarted_after_the_timeout(capsys):
    with VecEnv("toy", "reach", TOY.protocol_cls(), 1, timeout=2.0) as envs:
        envs.reset_all([1])
        pid = envs.worker_pid(0)
        os.kill(pid, signal.SIGSTOP)
        try:
            start = time.monotonic()
            result = _step(envs)
            waited = time.monotonic() - start
        finally:
            if envs.worker_pid(0) == pid:  # not restarted: do not leave it stopped
                os.kill(pid, signal.SIGCONT)
        assert result.crashed and 2.0 <= waited < 20
        for part in ("env worker 0", f"pid {pid}", "within 2 s", "run.worker_timeout", "stopped"):
            assert part in result.error
        assert f"warning: env worker 0 (pid {pid}" in capsys.readouterr().err
        assert envs.worker_pid(0) != pid
        envs.request(0, "reset", 2)
        assert not envs.collect()[0].crashed  # the restarted worker answers
