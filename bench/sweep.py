"""Sweeps: agent x task x seed grids as independent jobs.

Each job is one `bench run --task T --seed S ...` command, so a crashing job never takes the sweep down and
the run itself decides whether to start, resume or skip (finished). The executor interface is small
(`submit` jobs, `wait` for their exit codes) so cluster engines can be added next to the local process
pool: a Ray executor runs the same commands as Ray tasks.
"""

from __future__ import annotations

import abc
import concurrent.futures
import dataclasses
import os
import subprocess
import sys


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
        args = [sys.executable, "-m", "bench.cli", "run", "--agent", self.agent, "--suite", self.suite,
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


class AbstractExecutor(abc.ABC):
    @abc.abstractmethod
    def run_all(self, jobs: list[Job]) -> dict[Job, int]:
        """Run every job; return each job's exit code."""


def _run_job(job: Job) -> int:
    env = dict(os.environ)
    return subprocess.run(job.argv(), env=env, check=False).returncode


class LocalExecutor(AbstractExecutor):
    """A local process pool: `parallel` runs at a time, each in its own process."""

    def __init__(self, parallel: int = 1):
        self.parallel = max(1, parallel)

    def run_all(self, jobs: list[Job]) -> dict[Job, int]:
        codes = {}
        with concurrent.futures.ThreadPoolExecutor(self.parallel) as pool:
            futures = {pool.submit(_run_job, job): job for job in jobs}
            for future in concurrent.futures.as_completed(futures):
                job = futures[future]
                codes[job] = future.result()
                status = "ok" if codes[job] == 0 else f"failed (exit {codes[job]})"
                print(f"[{len(codes)}/{len(jobs)}] {job.name}: {status}", file=sys.stderr, flush=True)
        return codes


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
    return seeds


EXECUTORS = {"local": LocalExecutor}
