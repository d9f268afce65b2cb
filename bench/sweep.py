"""Sweeps: agent x task x seed grids as independent jobs.

Each job is one `bench run --task T --seed S ...` command, so a crashing job never takes the sweep down and
the run itself decides whether to start, resume or skip (finished). The executor interface is small
(`run_all` jobs, get each one's exit code back in job order) so cluster engines can be added next to the
local process pool.

A sweep owns its child runs, so that running the same command again never meets a second writer:

* each child runs in its own process group (with its env workers); a SIGINT, SIGTERM or SIGHUP sent to the
  sweep is forwarded to every running child's group (the runner saves a checkpoint and stops, the env
  workers ignore it), queued jobs are cancelled, and the sweep exits 128 + the signal's number;
* a child dies with the sweep even when the sweep is SIGKILLed: it asks the kernel for a SIGTERM when its
  parent exits (Linux `prctl(PR_SET_PDEATHSIG)`, elsewhere a thread that watches the parent's pid);
* a child runs the same `bench` code as the sweep, never a same-named folder in the current directory
  (`python -P`: the cwd is not put on `sys.path`).
"""

from __future__ import annotations

import abc
import collections
import concurrent.futures
import ctypes
import dataclasses
import os
import signal
import site
import subprocess
import sys
import threading
import time
from pathlib import Path

PARENT_ENV = "BENCH_SWEEP_PARENT"  # set in a child's environment: the sweep's pid, the child dies with it
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
SEED_LIMIT = 2**32  # jax.random.PRNGKey(2**32) wraps around to seed 0's key


@dataclasses.dataclass(frozen=True)
class Job:
    agent: str
    suite: str
    task: str
    seed: int
    configs: tuple[str, ...] = ()
    overrides: tuple[tuple[str, str], ...] = ()
    root: str | None = None

    def argv(self) -> list[str]:
        # -P: the child's sys.path starts with the sweep's code (PYTHONPATH, see child_env), not the cwd
        args = [sys.executable, "-P", "-m", "bench.cli", "run", "--agent", self.agent, "--suite", self.suite,
                "--task", self.task, "--seed", str(self.seed), "--quiet"]  # fmt: skip
        if self.configs:
            args += ["--configs", *self.configs]
        if self.root:
            args += ["--logdir", self.root]
        for key, value in self.overrides:
            args += [f"--{key}", value]
        return args

    @property
    def name(self) -> str:
        return f"{self.suite}/{self.task}/{self.agent}/seed{self.seed}"


@dataclasses.dataclass
class SweepResult:
    codes: list[int | None]  # exit code of each job in job order; None = cancelled before it started
    stopped_by: int | None = None  # the signal that stopped the sweep, if any


def child_env() -> dict[str, str]:
    """The sweep's environment plus the location of the code it runs and its pid (see `die_with_parent`)."""
    env = dict(os.environ, **{PARENT_ENV: str(os.getpid())})
    code_root = str(Path(__file__).resolve().parent.parent)
    installed = {str(Path(p).resolve()) for p in [*site.getsitepackages(), site.getusersitepackages()]}
    if code_root not in installed:  # a source checkout: put it first, as the sweep itself imported it
        env["PYTHONPATH"] = os.pathsep.join(p for p in (code_root, os.environ.get("PYTHONPATH")) if p)
    return env


def die_with_parent(parent_pid: int) -> None:
    """Make this process receive SIGTERM when its parent (the sweep, pid `parent_pid`) exits."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:  # no death signal: watch the parent's pid instead

        def watch():
            while os.getppid() == parent_pid:
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
    if os.getppid() != parent_pid:  # the sweep died before the death signal was armed
        os.kill(os.getpid(), signal.SIGTERM)


class AbstractExecutor(abc.ABC):
    @abc.abstractmethod
    def run_all(self, jobs: list[Job]) -> SweepResult:
        """Run every job; return each job's exit code in job order."""


class LocalExecutor(AbstractExecutor):
    """A local process pool: `parallel` runs at a time, each in its own process (group)."""

    def __init__(self, parallel: int = 1):
        if parallel < 1:
            raise ValueError(f"--parallel: expected a positive number of runs at a time, got {parallel}")
        self.parallel = parallel
        self._lock = threading.RLock()  # RLock: a second signal may arrive inside the first one's handler
        self._running: dict[int, subprocess.Popen] = {}  # job index -> its process
        self._stopped_by: int | None = None

    def _run_job(self, index: int, job: Job) -> int | None:
        with self._lock:
            if self._stopped_by is not None:
                return None  # cancelled: the sweep was stopped before this job started
            # its own process group: signals reach the run and its env workers only through the sweep
            proc = subprocess.Popen(job.argv(), env=child_env(), start_new_session=True)
            self._running[index] = proc
        try:
            return proc.wait()
        finally:
            with self._lock:
                self._running.pop(index, None)

    def _forward(self, signum, _frame) -> None:
        with self._lock:
            first = self._stopped_by is None
            self._stopped_by = self._stopped_by or signum
            for proc in self._running.values():
                try:
                    os.killpg(proc.pid, signum)
                except ProcessLookupError:
                    pass  # finished meanwhile
        if first:
            print(f"\nsweep: {signal.Signals(signum).name}: stopping the running runs (they save a checkpoint);"
                  " queued runs are cancelled", file=sys.stderr, flush=True)  # fmt: skip

    def run_all(self, jobs: list[Job]) -> SweepResult:
        codes: list[int | None] = [None] * len(jobs)
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            handlers = {sig: signal.signal(sig, self._forward) for sig in FORWARDED_SIGNALS}
        try:
            with concurrent.futures.ThreadPoolExecutor(self.parallel) as pool:
                futures = {pool.submit(self._run_job, index, job): index for index, job in enumerate(jobs)}
                done = 0
                for future in concurrent.futures.as_completed(futures):
                    index = futures[future]
                    codes[index] = future.result()
                    if codes[index] is None:
                        continue
                    done += 1
                    print(f"[{done}/{len(jobs)}] {jobs[index].name}: {describe_exit(codes[index])}",
                          file=sys.stderr, flush=True)  # fmt: skip
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        return SweepResult(codes, self._stopped_by)


def describe_exit(code: int) -> str:
    if code == 0:
        return "ok"
    if code < 0:
        return f"failed (killed by {signal.Signals(-code).name})"
    return f"failed (exit {code})"


def summarize(jobs: list[Job], result: SweepResult) -> int:
    """Print what failed or was cancelled, naming every such run; return the sweep's exit code."""
    failed = [f"{job.name} ({describe_exit(code)})" for job, code in zip(jobs, result.codes) if code]
    cancelled = [job.name for job, code in zip(jobs, result.codes) if code is None]
    if failed:
        print(f"bench: error: {len(failed)} of {len(jobs)} runs failed: {', '.join(failed)}", file=sys.stderr)
    if cancelled:
        print(f"sweep: {len(cancelled)} of {len(jobs)} runs cancelled (not started): {', '.join(cancelled)}",
              file=sys.stderr)  # fmt: skip
    if result.stopped_by is not None:
        return 128 + int(result.stopped_by)
    return 1 if failed else 0


def check_seeds(seeds: list[int], flag: str) -> list[int]:
    """Seeds must be distinct (one seed twice = two writers of one run folder) and fit the PRNG key."""
    for seed in seeds:
        if not 0 <= seed < SEED_LIMIT:
            raise ValueError(f"{flag}: seed {seed} is outside [0, 2**32)")
    duplicates = sorted(seed for seed, count in collections.Counter(seeds).items() if count > 1)
    if duplicates:
        raise ValueError(f"{flag}: seed {', '.join(map(str, duplicates))} given more than once")
    return seeds


def parse_seeds(text: str) -> list[int]:
    """'0:5' -> [0..4]; '3' -> [3]; '0,2,7' -> [0, 2, 7]."""
    try:
        if ":" in text:
            start, stop = text.split(":", 1)
            seeds = list(range(int(start), int(stop)))
        else:
            seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds {text!r}: expected A:B (e.g. 0:5) or a comma list (e.g. 0,1,2)") from None
    if not seeds:
        raise ValueError(f"--seeds {text!r} selects no seed")
    return check_seeds(seeds, f"--seeds {text!r}")


EXECUTORS = {"local": LocalExecutor}
