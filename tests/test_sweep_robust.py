"""Sweeps own their child runs: failures are counted, signals are forwarded, children die with the sweep,
and a child never imports a same-named folder from the working directory."""

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench import cli
from bench.sweep import LocalExecutor, summarize
from tests.runs import ROOT


@dataclasses.dataclass(frozen=True)
class FakeJob:
    """A job that runs a Python snippet; jobs compare by name only, like two Jobs of one seed given twice."""

    name: str
    code: str = dataclasses.field(compare=False)

    def argv(self):
        return [sys.executable, "-c", self.code]


def test_one_failed_run_of_two_equal_jobs_fails_the_sweep(capsys):
    # the failing copy ends first; a result keyed by job would be overwritten by the later success
    jobs = [FakeJob("toy/reach/random/seed0", "raise SystemExit(3)"),
            FakeJob("toy/reach/random/seed0", "import time; time.sleep(1.5)")]  # fmt: skip
    result = LocalExecutor(2).run_all(jobs)
    assert sorted(result.codes) == [0, 3]
    assert summarize(jobs, result) == 1
    assert "1 of 2 runs failed: toy/reach/random/seed0 (failed (exit 3))" in capsys.readouterr().err


@pytest.mark.parametrize("seeds,message", [("0,0", "seed 0 given more than once"), ("1,2,1", "seed 1 given more")])
def test_a_seed_given_twice_is_an_error(seeds, message, capsys, tmp_path):
    code = cli.main(["run", "--agent", "random", "--suite", "toy", "--task", "reach", "--seeds", seeds,
                     "--logdir", str(tmp_path)])  # fmt: skip
    assert code == 2 and message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("flag,value", [("--seed", str(2**32)), ("--seed", "-1"), ("--seeds", f"{2**32 - 1},{2**32}")])
def test_seed_outside_the_prng_key_range_is_an_error(flag, value, capsys, tmp_path):
    code = cli.main(["run", "--agent", "random", "--suite", "toy", "--task", "reach", flag, value,
                     "--logdir", str(tmp_path)])  # fmt: skip
    assert code == 2 and "outside [0, 2**32)" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_ctrl_c_stops_running_jobs_and_cancels_queued_ones(capsys):
    sleeper = "import time; time.sleep(60)"
    jobs = [FakeJob(f"job{i}", sleeper) for i in range(3)]
    # SIGINT to the sweep's pid only: the running child is in its own process group and hears it by forwarding
    timer = threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    start = time.monotonic()
    result = LocalExecutor(1).run_all(jobs)
    timer.join()
    assert time.monotonic() - start < 30, "the running child did not hear the forwarded SIGINT"
    assert result.stopped_by == signal.SIGINT
    assert result.codes[0] not in (None, 0) and result.codes[1:] == [None, None]
    assert summarize(jobs, result) == 130
    assert "2 of 3 runs cancelled (not started): job1, job2" in capsys.readouterr().err


def test_runs_stopped_by_the_sweeps_signal_are_reported_as_stopped_not_failed(capsys):
    """A run that hears the forwarded SIGINT saves a checkpoint and exits 130 (bench.cli): the sweep says it
    stopped, not that it failed; one that exits otherwise meanwhile still failed."""
    stops = "import signal, sys, time; signal.signal(signal.SIGINT, lambda *_: sys.exit(130)); time.sleep(60)"
    breaks = "import signal, sys, time; signal.signal(signal.SIGINT, lambda *_: sys.exit(3)); time.sleep(60)"
    jobs = [FakeJob("job0", stops), FakeJob("job1", breaks), FakeJob("job2", stops)]
    timer = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    result = LocalExecutor(2).run_all(jobs)
    timer.join()
    assert result.codes == [130, 3, None]
    assert summarize(jobs, result) == 130
    err = capsys.readouterr().err
    assert "job0: stopped (checkpoint saved)" in err and "job1: failed (exit 3)" in err
    assert "1 of 3 runs failed: job1 (failed (exit 3))" in err
    assert "sweep: 1 of 3 runs stopped with a checkpoint (the same command resumes them): job0" in err
    assert "1 of 3 runs cancelled (not started): job2" in err


def _descendants(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found |= {child} | _descendants(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _sweep_command(root, *extra):
    # -P and PYTHONPATH: the sweep itself runs our code wherever the test's cwd is, like the `bench` script
    return [sys.executable, "-P", "-m", "bench.cli", "run", "--agent", "random", "--suite", "toy", "--task", "reach",
            "--logdir", str(root), *extra]  # fmt: skip


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads the process tree from Linux /proc")
def test_child_runs_die_when_the_sweep_is_sigkilled(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    sweep = subprocess.Popen(_sweep_command(tmp_path, "--seeds", "0,1", "--parallel", "2", "--steps", "10000000"),
                             env=env, cwd=ROOT, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.rglob("manifest.json"))) < 2:  # both runs are past the CLI's start
            assert time.monotonic() < deadline and sweep.poll() is None, "the sweep's runs did not start"
            time.sleep(0.5)
        family = _descendants(sweep.pid)
        assert len(family) >= 4  # two runs, each with an env worker
    finally:
        sweep.kill()
        sweep.wait()
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in family) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = [pid for pid in family if _alive(pid)]
    for pid in left:  # do not leave them behind if the test fails
        os.kill(pid, signal.SIGKILL)
    assert not left, "child runs outlived their SIGKILLed sweep"


def test_sweep_children_ignore_a_tasks_folder_in_the_working_directory(tmp_path):
    decoy = tmp_path / "cwd" / "tasks"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise ImportError('the decoy tasks/ folder was imported')\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(_sweep_command(tmp_path / "runs", "--seeds", "0,1", "--steps", "40",
                                         "--run.final_eval", "false", "--parallel", "2"),
                          env=env, cwd=decoy.parent, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "decoy" not in proc.stderr
    assert len(list((tmp_path / "runs").rglob("manifest.json"))) == 2


def test_help_says_that_a_module_path_runs_its_code(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "package.module:SPEC (imports that module, running its code: name only code you trust)" in text
