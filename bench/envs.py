"""Vectorised environments: one subprocess worker per environment, stepping while the learner trains.

The runner talks to workers with non-blocking requests and a blocking `collect`:

    envs.request(index, "reset", seed) / envs.request(index, "step", action) / envs.request(index, "restore",
    (seed, actions))  ...  results = envs.collect()

`restore` re-creates an episode's state by resetting with its seed and replaying its actions (episodes are
determined by seed and actions), which is how a resumed run continues exactly where it was killed.

A worker whose process dies, or whose environment raises, or that gives no answer within `timeout` seconds
(`run.worker_timeout`; a hung or SIGSTOPped worker), is restarted; its result is returned with `crashed=True`
so the runner marks the episode as broken and starts a new one. An action the environment rejects
(ValueError from `check_action`) is not a crash but a bug in the agent: it raises `InvalidActionError`.

Workers ignore SIGINT, SIGTERM and SIGHUP: Ctrl-C in a terminal signals the whole process group, and the
parent decides what a stop means (save a checkpoint, then close the workers). Workers end when the parent
closes them or its end of the pipe goes away.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import traceback
from typing import Any

import numpy as np

from bench import config as config_lib
from bench import registry
from bench.api import Env


PARENT_MANAGED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
START_TIMEOUT = 120.0  # seconds a new worker gets at least to start an interpreter and create its env


class InvalidActionError(ValueError):
    pass


class WorkerError(RuntimeError):
    pass


@dataclasses.dataclass
class Result:
    obs: dict[str, Any] | None
    stats: dict[str, float] | None = None  # episode stats when obs["is_last"]
    crashed: bool = False
    error: str = ""


def make_env(suite_name: str, task: str, protocol_dict: dict, index: int) -> Env:
    suite = registry.get_suite(suite_name)
    protocol = config_lib.from_dict(suite.protocol_cls, protocol_dict)
    return suite.make_env(task, protocol, index)


def _serve(env: Env, kind: str, payload):
    if kind == "reset":
        obs = env.reset(seed=int(payload))
    elif kind == "step":
        obs = env.step(payload)
    elif kind == "restore":
        seed, actions = payload
        obs = env.reset(seed=int(seed))
        for action in actions:
            obs = env.step(action)
    else:
        raise WorkerError(f"unknown request {kind!r}")
    stats = env.episode_stats() if obs["is_last"] else None
    return obs, stats


def _worker_main(conn, suite_name: str, task: str, protocol_dict: dict, index: int) -> None:
    # the parent started us with these signals blocked (see VecEnv._start), so one sent to the process
    # group while this interpreter was starting is still pending: ignore them, then unblock (discarding it)
    for sig in PARENT_MANAGED_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, PARENT_MANAGED_SIGNALS)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # workers never need an accelerator
    try:
        env = make_env(suite_name, task, protocol_dict, index)
        conn.send(("ready", (env.obs_space, env.act_space)))
    except Exception:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("failed", traceback.format_exc()))
        return
    while True:
        try:
            kind, payload = conn.recv()
        except (EOFError, KeyboardInterrupt):
            break
        if kind == "close":
            break
        try:
            conn.send(("ok", _serve(env, kind, payload)))
        except ValueError as error:
            conn.send(("invalid", str(error)))
        except Exception:  # noqa: BLE001 - an environment crash is reported and the worker restarted
            conn.send(("error", traceback.format_exc()))
    env.close()


class VecEnv:
    """`num_envs` environments of one task, in subprocesses (`parallel=True`) or in this process."""

    def __init__(
        self,
        suite_name: str,
        task: str,
        protocol,
        num_envs: int,
        *,
        parallel: bool = True,
        max_restarts: int = 10,
        timeout: float = 600.0,
    ):
        self.suite_name = suite_name
        self.task = task
        self.protocol_dict = config_lib.to_plain(protocol)
        self.num_envs = num_envs
        self.parallel = parallel
        self.max_restarts = max_restarts
        self.timeout = timeout
        self.restarts = 0
        self._pending: dict[int, tuple[str, Any]] = {}
        self._context = multiprocessing.get_context("spawn")
        self._local: list[Env | None] = [None] * num_envs
        self._procs: list[Any] = [None] * num_envs
        self._conns: list[Any] = [None] * num_envs
        for index in range(num_envs):
            self._start(index)
        self.obs_space, self.act_space = self._spaces

    # ---------------------------------------------------------------------------------- worker control

    def _start(self, index: int) -> None:
        if not self.parallel:
            env = make_env(self.suite_name, self.task, self.protocol_dict, index)
            self._local[index] = env
            self._spaces = (env.obs_space, env.act_space)
            return
        parent, child = self._context.Pipe()
        proc = self._context.Process(
            target=_worker_main,
            args=(child, self.suite_name, self.task, self.protocol_dict, index),
            daemon=True,
        )
        # the child inherits the blocked mask across fork and exec, so it never sees a Ctrl-C before it
        # can ignore it; here a signal that arrives meanwhile is delivered when the mask is restored
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, PARENT_MANAGED_SIGNALS)
        try:
            proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        child.close()
        start_timeout = max(self.timeout, START_TIMEOUT)
        if not parent.poll(start_timeout):
            proc.kill()
            raise WorkerError(
                f"env worker {index} (pid {proc.pid}, {self.suite_name}/{self.task}) did not start within "
                f"{start_timeout:g} s (run.worker_timeout, at least {START_TIMEOUT:g} s); raise run.worker_timeout "
                "if the environment is this slow to create"
            )
        status, payload = parent.recv()
        if status != "ready":
            proc.join(timeout=5)
            lines = str(payload).strip().splitlines()
            cause = lines[-1] if lines else "no reason given"  # a traceback's last line is the exception
            raise WorkerError(f"env worker {index} ({self.suite_name}/{self.task}) failed to start: {cause}\n{payload}")  # fmt: skip
        self._procs[index], self._conns[index] = proc, parent
        self._spaces = payload

    def _restart(self, index: int, reason: str) -> None:
        self.restarts += 1
        if self.restarts > self.max_restarts:
            raise WorkerError(
                f"env workers crashed {self.restarts} times (limit run.max_worker_restarts={self.max_restarts});"
                f" last crash of worker {index}: {reason.strip().splitlines()[-1] if reason.strip() else reason}"
            )
        if self.parallel:
            proc = self._procs[index]
            if proc is not None and proc.is_alive():
                proc.kill()
            if proc is not None:
                proc.join(timeout=5)
        self._start(index)

    def worker_pid(self, index: int) -> int | None:
        return self._procs[index].pid if self.parallel else None

    # ---------------------------------------------------------------------------------------- requests

    def request(self, index: int, kind: str, payload) -> None:
        if index in self._pending:
            raise WorkerError(f"env worker {index} already has a request in flight")
        self._pending[index] = (kind, payload)
        if self.parallel:
            try:
                self._conns[index].send((kind, payload))
            except (BrokenPipeError, OSError):
                pass  # noticed in collect() as a crash

    def collect(self) -> dict[int, Result]:
        """Wait for every pending request; crashed workers are restarted and reported."""
        results = {}
        for index, (kind, payload) in sorted(self._pending.items()):
            results[index] = self._receive(index, kind, payload)
        self._pending.clear()
        return results

    def _receive(self, index: int, kind: str, payload) -> Result:
        if not self.parallel:
            try:
                obs, stats = _serve(self._local[index], kind, payload)
                return Result(obs, stats)
            except ValueError as error:
                raise InvalidActionError(f"env {index} ({self.suite_name}/{self.task}): {error}") from None
            except Exception:  # noqa: BLE001 - same crash semantics as a subprocess worker
                reason = traceback.format_exc()
                self._restart(index, reason)
                return Result(None, crashed=True, error=reason)
        conn = self._conns[index]
        try:
            if not conn.poll(self.timeout):
                return self._timed_out(index, kind)
            status, answer = conn.recv()
        except (EOFError, OSError) as error:
            reason = f"worker process died ({type(error).__name__}: {error})"
            self._restart(index, reason)
            return Result(None, crashed=True, error=reason)
        if status == "ok":
            obs, stats = answer
            return Result(obs, stats)
        if status == "invalid":
            raise InvalidActionError(f"env {index} ({self.suite_name}/{self.task}) rejected a {kind}: {answer}")
        self._restart(index, answer)
        return Result(None, crashed=True, error=answer)

    def _timed_out(self, index: int, kind: str) -> Result:
        pid = self.worker_pid(index)
        reason = (
            f"env worker {index} (pid {pid}, {self.suite_name}/{self.task}) gave no answer to a {kind} request "
            f"within {self.timeout:g} s (run.worker_timeout): it is hung or stopped (e.g. SIGSTOP); restarting it "
            f"and marking its episode broken. Raise run.worker_timeout if this environment is that slow"
        )
        print(f"warning: {reason}", file=sys.stderr, flush=True)  # the run would otherwise stall silently
        self._restart(index, reason)
        return Result(None, crashed=True, error=reason)

    # --------------------------------------------------------------------------------------- shortcuts

    def reset_all(self, seeds) -> dict[int, Result]:
        for index, seed in enumerate(seeds):
            self.request(index, "reset", seed)
        return self.collect()

    def close(self) -> None:
        for index in range(self.num_envs):
            if self.parallel and self._conns[index] is not None:
                try:
                    self._conns[index].send(("close", None))
                except (BrokenPipeError, OSError):
                    pass
            elif self._local[index] is not None:
                self._local[index].close()
        for proc in self._procs:
            if proc is not None:
                proc.join(timeout=5)
                if proc.is_alive():
                    proc.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def stack(observations: list[dict]) -> dict[str, np.ndarray]:
    """List of per-env observation dicts -> dict of (B, ...) arrays."""
    return {key: np.stack([np.asarray(obs[key]) for obs in observations]) for key in observations[0]}


def episode_seed(run_seed: int, stream: str, worker: int, episode: int) -> int:
    """Deterministic 31-bit seed of one episode, from the run seed and the episode's coordinates."""
    stream_id = {"train": 0, "eval": 1}.get(stream, 2)
    entropy = [int(run_seed), stream_id, int(worker), int(episode)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] & 0x7FFFFFFF)
