"""Sweeps: agent x task x seed grids as independent jobs.

Each job is one `bench run --task T --seed S ...` command, so a crashing job never takes the sweep down and
the run itself decides whether to start, resume or skip (finished). The executor interface is small
(`run_all` jobs, get each one's exit code back in job order): the local process pool (the default) and a Ray
cluster (`RayExecutor`, whose tasks run `run_job`) start and stop a run the same way (`start_job`, `stop_job`),
so a run behaves the same on both.

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

from bench import allocator, stop_signals

PARENT_ENV = "BENCH_SWEEP_PARENT"  # set in a child's environment: the sweep's pid, the child dies with it
FORWARDED_SIGNALS = stop_signals.STOP_SIGNALS
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
    vmap_seeds: tuple[int, ...] = ()  # several seeds: one process runs them all vmapped (bench/vmap_run.py)

    def argv(self) -> list[str]:
        # -P: the child's sys.path starts with the sweep's code (PYTHONPATH, see child_env), not the cwd
        seeds = ["--seeds", ",".join(map(str, self.vmap_seeds)), "--vmap"] if self.vmap_seeds else ["--seed", str(self.seed)]
        args = [sys.executable, "-P", "-m", "bench.cli", "run", "--agent", self.agent, "--suite", self.suite,
                "--task", self.task, *seeds, "--quiet"]  # fmt: skip
        if self.configs:
            args += ["--configs", *self.configs]
        if self.root:
            args += ["--logdir", self.root]
        for key, value in self.overrides:
            args += [f"--{key}", value]
        return args

    @property
    def name(self) -> str:
        if self.vmap_seeds:
            return f"{self.suite}/{self.task}/{self.agent}/seeds{','.join(map(str, self.vmap_seeds))} (vmap)"
        return f"{self.suite}/{self.task}/{self.agent}/seed{self.seed}"


def group_for_vmap(jobs: list[Job]) -> list[Job]:
    """One job per (agent, suite, task, configs, overrides, root) for its seeds, run vmapped in one process;
    a group of one seed stays a plain job. Groups keep the order of their first job."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault(dataclasses.replace(job, seed=0), []).append(job)
    return [members[0] if len(members) == 1 else
            dataclasses.replace(members[0], vmap_seeds=tuple(job.seed for job in members))
            for members in groups.values()]  # fmt: skip


@dataclasses.dataclass
class SweepResult:
    codes: list[int | None]  # exit code of each job in job order; None = cancelled before it started
    stopped_by: int | None = None  # the signal that stopped the sweep, if any
    lost: dict[int, str] = dataclasses.field(default_factory=dict)  # job index -> why it has no exit code (code 1)


def child_env() -> dict[str, str]:
    """The sweep's environment plus the location of the code it runs, its pid (see `die_with_parent`) and the host
    allocator (bench/allocator.py)."""
    env = allocator.environment(dict(os.environ, **{PARENT_ENV: str(os.getpid())}))
    code_root = str(Path(__file__).resolve().parent.parent)
    installed = {str(Path(p).resolve()) for p in [*site.getsitepackages(), site.getusersitepackages()]}
    if code_root not in installed:  # a source checkout: put it first, as the sweep itself imported it
        env["PYTHONPATH"] = os.pathsep.join(p for p in (code_root, os.environ.get("PYTHONPATH")) if p)
    return env


def die_with_parent(parent_pid: int) -> None:
    """Make this process receive SIGTERM when its parent (the sweep, pid `parent_pid`) exits, and hear the signals
    the sweep forwards even if the parent's thread blocked them (a Ray worker blocks SIGINT; children inherit it)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
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


def start_job(job: Job) -> subprocess.Popen:
    """Start one run as a child of this process, in its own process group (signals reach it only through us)."""
    return subprocess.Popen(job.argv(), env=child_env(), start_new_session=True)


def stop_job(proc: subprocess.Popen, signum: int) -> None:
    """Send `signum` to a run and its env workers (the run saves a checkpoint and stops; the workers ignore it)."""
    try:
        os.killpg(proc.pid, signum)
    except ProcessLookupError:
        pass  # finished meanwhile


def run_job(job: Job) -> int:
    """Run one job here and return its exit code: the body of a Ray task.

    Ray cancels a running task by raising KeyboardInterrupt between Python instructions (hence the polling wait),
    perhaps more than once: the first one sends the run a SIGINT, as Ctrl-C would; it saves a checkpoint and exits.
    """
    proc = start_job(job)
    stopping = False
    while True:
        try:
            while proc.poll() is None:
                time.sleep(0.2)
            return proc.returncode
        except KeyboardInterrupt:
            if not stopping:
                stop_job(proc, signal.SIGINT)
                stopping = True


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
            proc = start_job(job)
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
                stop_job(proc, signum)
        if first:
            print(f"\nsweep: {signal.Signals(signum).name}: stopping the running runs (they save a checkpoint);"
                  " queued runs are cancelled", file=sys.stderr, flush=True)  # fmt: skip

    def run_all(self, jobs: list[Job]) -> SweepResult:
        codes: list[int | None] = [None] * len(jobs)
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            handlers = stop_signals.install(self._forward)
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
                    print(f"[{done}/{len(jobs)}] {jobs[index].name}: "
                          f"{describe_exit(codes[index], self._stopped_by is not None)}",
                          file=sys.stderr, flush=True)  # fmt: skip
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        return SweepResult(codes, self._stopped_by)


class RayExecutor(AbstractExecutor):
    """A Ray cluster: one Ray task per run, holding `cpus` CPUs and `gpus` GPUs while its run lasts.

    The cluster runs as many runs at a time as its resources allow. A run that fails (a nonzero exit, or its worker
    or node lost, e.g. a preempted machine) is started again, at most `retries` more times, after a pause that
    doubles each time; like the same command run by hand, it resumes from its last checkpoint. Every node must
    import the same `bench` code (installed, or this checkout at the same path on shared storage) and see the
    results root at the same path. `address`: a cluster's address ("auto": the one started on this machine by
    `ray start`); None: $RAY_ADDRESS, else a new single-machine cluster for this sweep.
    """

    def __init__(self, address: str | None = None, cpus: float = 1.0, gpus: float = 0.0, retries: int = 2,
                 retry_delay: float = 5.0):  # fmt: skip
        if cpus <= 0 or gpus < 0:
            raise ValueError(f"--ray.cpus must be > 0 and --ray.gpus >= 0 per run, got {cpus} and {gpus}")
        if retries < 0:
            raise ValueError(f"--ray.retries: expected 0 or more retries of a failed run, got {retries}")
        self.address, self.cpus, self.gpus, self.retries, self.retry_delay = address, cpus, gpus, retries, retry_delay
        self._stopped_by: int | None = None

    def _connect(self):
        import ray

        if ray.is_initialized():
            return ray, False  # the caller's own connection (a script, the tests): leave it open
        kwargs, env_vars = {}, {}
        pythonpath = child_env().get("PYTHONPATH")
        if pythonpath:  # a source checkout: the workers import this `bench` (from the same path on every node)
            env_vars["PYTHONPATH"] = pythonpath
        if 0 < self.gpus < 1 and "XLA_PYTHON_CLIENT_MEM_FRACTION" not in os.environ:
            # runs sharing a GPU: JAX would preallocate 75% of it in each; give each its share
            env_vars["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 * self.gpus:.3f}"
        if env_vars:
            kwargs["runtime_env"] = {"env_vars": env_vars}
        if self.address is None and not os.environ.get("RAY_ADDRESS"):
            kwargs["include_dashboard"] = False  # a throwaway single-machine cluster
        try:
            ray.init(address=self.address, **kwargs)
        except (ConnectionError, RuntimeError) as error:  # no cluster there, or a version mismatch
            where = f"--ray.address {self.address}" if self.address else "Ray"
            raise ValueError(f"{where}: cannot join the cluster ({str(error).strip().splitlines()[0]})") from None
        return ray, True

    def _describe_cluster(self, ray) -> None:
        total = ray.cluster_resources()
        fits = [node for node in ray.nodes() if node.get("Alive")
                and node["Resources"].get("CPU", 0) >= self.cpus and node["Resources"].get("GPU", 0) >= self.gpus]  # fmt: skip
        print(f"sweep: Ray cluster {ray.get_runtime_context().gcs_address}: {total.get('CPU', 0):g} CPUs, "
              f"{total.get('GPU', 0):g} GPUs; each run holds {self.cpus:g} CPUs and {self.gpus:g} GPUs",
              file=sys.stderr, flush=True)  # fmt: skip
        if not fits:
            print(f"sweep: no node of the cluster has {self.cpus:g} CPUs and {self.gpus:g} GPUs free to give one run;"
                  " the runs wait until such a node joins", file=sys.stderr, flush=True)  # fmt: skip

    def _stop(self, signum, _frame) -> None:
        if self._stopped_by is None:
            print(f"\nsweep: {signal.Signals(signum).name}: stopping the running runs (they save a checkpoint);"
                  " queued runs are cancelled", file=sys.stderr, flush=True)  # fmt: skip
        self._stopped_by = self._stopped_by or signum

    @staticmethod
    def _outcome(ray, ref) -> tuple[int | None, str | None]:
        """(exit code, None), (None, None) for a task cancelled before its run started, or (None, why it was lost)."""
        try:
            return ray.get(ref), None
        except ray.exceptions.TaskCancelledError:
            return None, None
        except ray.exceptions.RayError as error:  # the worker or its node died, the object was lost, ...
            text = str(error).strip().splitlines()
            return None, f"{type(error).__name__}: {text[0] if text else 'no message'}"

    def run_all(self, jobs: list[Job]) -> SweepResult:
        ray, owned = self._connect()
        try:
            self._describe_cluster(ray)
            task = ray.remote(run_job).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0)
            return self._drive(ray, task, jobs)
        finally:
            if owned:
                ray.shutdown()

    def _drive(self, ray, task, jobs: list[Job]) -> SweepResult:
        result = SweepResult([None] * len(jobs))
        attempts = [0] * len(jobs)
        pending: dict = {}  # Ray object ref -> job index
        retry_at: dict[int, float] = {}  # job index -> when to start it again
        done, cancelled, cancel_again = 0, False, 0.0

        def submit(index: int) -> None:
            attempts[index] += 1
            pending[task.remote(jobs[index])] = index

        handlers = {}
        if threading.current_thread() is threading.main_thread():
            handlers = stop_signals.install(self._stop)
        try:
            for index in range(len(jobs)):
                submit(index)
            while pending or retry_at:
                if self._stopped_by is not None and time.monotonic() >= cancel_again:
                    # a running task's run gets a SIGINT (see run_job), a queued task never starts; sent again
                    # while tasks remain, in case a cancel met a task that was just being started
                    cancelled, cancel_again = True, time.monotonic() + 2.0
                    retry_at.clear()
                    for ref in pending:
                        ray.cancel(ref)
                for index, when in list(retry_at.items()):
                    if when <= time.monotonic():
                        del retry_at[index]
                        submit(index)
                if not pending:
                    time.sleep(0.2)
                    continue
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                for ref in ready:
                    index = pending.pop(ref)
                    code, lost = self._outcome(ray, ref)
                    if code is None and lost is None:
                        continue  # cancelled before its run started
                    what = describe_exit(code, cancelled) if lost is None else f"lost ({lost})"
                    if (code or lost) and not cancelled and attempts[index] <= self.retries:
                        delay = self.retry_delay * 2 ** (attempts[index] - 1)
                        retry_at[index] = time.monotonic() + delay
                        print(f"sweep: {jobs[index].name}: {what} on attempt {attempts[index]} of "
                              f"{self.retries + 1}; retrying in {delay:g} s (it resumes from its checkpoint)",
                              file=sys.stderr, flush=True)  # fmt: skip
                        continue
                    result.codes[index] = 1 if lost else code
                    if lost:
                        result.lost[index] = what
                    done += 1
                    tries = f" (attempt {attempts[index]})" if attempts[index] > 1 else ""
                    print(f"[{done}/{len(jobs)}] {jobs[index].name}: {what}{tries}", file=sys.stderr, flush=True)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        result.stopped_by = self._stopped_by
        return result


STOPPED_EXIT = 130  # a run's exit status once a stop signal made it save a checkpoint and stop (bench.cli)


def describe_exit(code: int, sweep_stopped: bool = False) -> str:
    if code == 0:
        return "ok"
    if sweep_stopped and code == STOPPED_EXIT:
        return "stopped (checkpoint saved)"
    if code < 0:
        return f"failed (killed by {signal.Signals(-code).name})"
    return f"failed (exit {code})"


def summarize(jobs: list[Job], result: SweepResult) -> int:
    """Print what failed or was cancelled, naming every such run; return the sweep's exit code."""
    stopped = {index for index, code in enumerate(result.codes)  # by the sweep's stop signal, passed on to them
               if result.stopped_by is not None and code == STOPPED_EXIT and index not in result.lost}  # fmt: skip
    failed = [f"{job.name} ({result.lost.get(index) or describe_exit(code)})"
              for index, (job, code) in enumerate(zip(jobs, result.codes)) if code and index not in stopped]  # fmt: skip
    cancelled = [job.name for job, code in zip(jobs, result.codes) if code is None]
    if failed:
        print(f"bench: error: {len(failed)} of {len(jobs)} runs failed: {', '.join(failed)}", file=sys.stderr)
    if stopped:
        print(f"sweep: {len(stopped)} of {len(jobs)} runs stopped with a checkpoint (the same command resumes them): "
              f"{', '.join(jobs[index].name for index in sorted(stopped))}", file=sys.stderr)  # fmt: skip
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


EXECUTORS = {"local": LocalExecutor, "ray": RayExecutor}
