"""The runner: one (agent, suite, task, seed) run from config to results, resumable at any point.

The loop (`Run.execute`, read it top to bottom) — one iteration is one policy step of every env worker:

    obs --jitted act--> actions --> send them to the env workers (they step in their processes) ...
        ... meanwhile: store the transition in replay; run the due updates of every training stream ...
        --> collect the new observations; record finished episodes in scores.jsonl
    then, when due: an evaluation round, a metrics record, an agent report, a checkpoint.
    After the budget: the final evaluation (once: whether it is done is in the checkpoint), the report, the
    last checkpoint, and the manifest says "finished".

Training streams (`bench.api.StreamSpec`): each has its own ratio of replayed to policy steps (DreamerV3's
`train_ratio` meaning: updates per policy step = ratio / (batch * length), context steps and action repeat
not counted; every policy step of every worker counts, reset steps included, as upstream), its own start
step, sampler, online queue and replay table. The runner keeps one update credit per stream.

Everything that lives across policy steps is one `RunState`, created in `Run.__init__`/`_fresh_start`, saved
in `_save` and restored in `_restore`; nothing else carries counters. Every source of randomness derives from
the run seed: the agent's init/act/update keys are folded from it with counters, each replay table has its own
generator (saved), and every episode is seeded from (seed, train|eval, worker or round, episode). A checkpoint
holds everything else (agent state, policy carry, replay, run state, each worker's current episode seed and
actions, file positions), so a killed run started again with the same command continues exactly: the same
episodes, none lost, none duplicated.

A run may start with the replay of another run (`replay.load`, bench/replay_load.py) and then train on it
alone (`run.offline`): `_offline_step` replaces the policy step, and the run's steps count update rounds.

Several seeds can share one process (`bench.vmap_run`, `--vmap`): it drives their `Run`s through the pieces of
`execute` (`_start`, `_send`/`_due_updates`/`_sample`/`_updated`/`_receive`, `_periodic`, `_finish`) with
their agents stacked and vmapped; each seed's folder is written as here.

One process writes a run folder: `Run` holds an exclusive lock on `<folder>/.lock` for the whole run.
SIGINT (Ctrl-C), SIGTERM and SIGHUP save a checkpoint and stop; the manifest says "stopped" and `run` raises
`RunStopped` (the CLI exits 130); the same command resumes.
"""

from __future__ import annotations

import dataclasses
import fcntl
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from bench import batch_shards as batch_shards_lib
from bench import config as config_lib
from bench import registry, results, spaces, stop_signals
from bench.api import AbstractAgent, AgentSpec, StreamSpec, SuiteSpec
from bench.checkpoint import Checkpointer, CheckpointError
from bench.envs import VecEnv, episode_seed, stack
from bench.logging import Logger, MetricAccumulator, Progress
from bench.replay import Replay, Table, make_sampler
from bench.replay_load import check_spaces, load_into, open_source, spaces_record
from bench.spaces import PRIVATE_PREFIX

KEY_INIT, KEY_ACT, KEY_UPDATE, KEY_EVAL, KEY_REPORT = range(5)
MAIN_TABLE = "main"


class RunError(RuntimeError):
    """A run cannot start or continue; the message says why and what to do."""


class NonFiniteError(RunError):
    pass


class RunStopped(Exception):
    """The run stopped on a signal after saving a checkpoint; the same command resumes it."""

    def __init__(self, folder: Path, step: int):
        super().__init__(f"stopped at step {step}; run the same command again to resume ({folder})")
        self.folder = folder
        self.step = step


# ------------------------------------------------------------------------------------------ resolving


class Resolved(NamedTuple):
    """A run's inputs, resolved once: the registry's specs, the canonical task and the full config."""

    agent_spec: AgentSpec
    suite_spec: SuiteSpec
    task: str
    config: Any
    suite_ref: str  # what env workers resolve in their processes (a registered name or module:NAME)


def resolve(agent: str, suite: str, task: str, configs=(), overrides=None) -> Resolved:
    agent_spec = registry.get_agent(agent)
    suite_spec = registry.get_suite(suite)
    task = suite_spec.resolve_task(task)
    config = registry.build_config(agent_spec, suite_spec, configs, overrides, task)
    if config.run.offline and not config.replay.load:
        raise RunError("run.offline trains only on a replay: give the run folder to train on as --replay.load RUN_DIR")
    if config.run.steps <= 0:
        config = dataclasses.replace(config, run=dataclasses.replace(config.run, steps=suite_spec.budget))
    return Resolved(agent_spec, suite_spec, task, config, suite)


def run(
    agent: str | Resolved,
    suite: str | None = None,
    task: str | None = None,
    *,
    seed: int = 0,
    configs: Sequence[str] = (),
    overrides: dict | None = None,
    root=None,
    quiet: bool = False,
    command: str = "",
    restart: bool = False,
) -> Path:
    """Run (or resume, or skip if finished) one run and return its folder.

    `agent` is an agent name (then `suite`, `task`, `configs` and `overrides` are resolved here) or a
    `Resolved` from `resolve`. `restart` deletes the results of a folder that cannot be resumed and starts over.
    Raises `RunStopped` when a signal stopped the run (checkpoint saved).
    """
    resolved = agent if isinstance(agent, Resolved) else resolve(agent, suite, task, configs, overrides)
    folder = run_folder(resolved, seed, root or results.default_root())
    folder.mkdir(parents=True, exist_ok=True)
    with RunLock(folder, command):
        if results.is_finished(folder):
            if not quiet:
                print(f"already finished: {folder}", file=sys.stderr, flush=True)
            return folder
        header = _check_folder(folder, resolved.config, restart)
        if not (folder / "config.yaml").exists():  # first, so a folder that cannot be written stays empty
            results.atomic_write_text(folder / "config.yaml", config_lib.dump_yaml(resolved.config))
        return Run(resolved, seed, folder, quiet=quiet, command=command).execute(header)


def run_folder(resolved: Resolved, seed: int, root) -> Path:
    """`<root>/<suite>/<task>/<agent>/<config-hash>/seed<N>`, the one place a run's folder is named."""
    spec = resolved
    return results.run_dir(root, spec.suite_spec.name, spec.task, spec.agent_spec.name, spec.config.hash(), seed)


class RunLock:
    """An exclusive lock on a run folder for the lifetime of a run (released by the OS if the process dies)."""

    def __init__(self, folder: Path, command: str):
        self.path = folder / ".lock"
        self.command = command
        self.file = None

    def __enter__(self) -> RunLock:
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise RunError(f"run folder {self.path.parent} is in use by {holder}; one writer per run folder") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"process {os.getpid()} ({self.command or 'bench.runner.run'})\n")
        self.file.flush()
        return self

    def __exit__(self, *exc) -> None:
        if os.listdir(self.path.parent) == [self.path.name]:
            self.path.unlink()  # a run that wrote nothing leaves no folder behind (the CLI removes empty folders)
        self.file.close()  # closing releases the lock


def _check_folder(folder: Path, config, restart: bool) -> dict | None:
    """Validate an existing run folder before touching it; return the checkpoint header if resuming.

    A folder with results (episodes or metrics) that cannot be resumed is refused unless `restart`.
    """
    config_file = folder / "config.yaml"
    if config_file.exists():
        stored = config_lib.load_yaml(config_file)
        differing = [
            k for k in config_lib.diff(config_lib.comparable(stored), config_lib.comparable(config.to_dict()))
            if not k.startswith(config_lib.UNHASHED_SECTIONS)
        ]  # fmt: skip
        if differing:
            raise RunError(
                f"results folder {folder} was written by a different config (differs at "
                f"{', '.join(differing[:5])}); refusing to touch it"
            )
    checkpointer = Checkpointer(folder / "ckpt")
    problem = None
    if not config_file.exists():
        problem = "no config.yaml"
    elif not checkpointer.exists():
        problem = "no checkpoint (ckpt/LATEST)"
    else:
        try:
            header = checkpointer.load_header()  # verifies every checksum first
        except CheckpointError as error:
            problem = str(error)
        else:
            try:
                results.read_manifest(folder)  # `_restore` continues the manifest's segments
                return header
            except FileNotFoundError:
                problem = "a checkpoint but no manifest.json"
            except ValueError as error:
                problem = str(error)
    has_results = any((folder / name).exists() and (folder / name).stat().st_size > 0
                      for name in ("scores.jsonl", "metrics.jsonl"))  # fmt: skip
    if has_results and not restart:
        raise RunError(
            f"run folder {folder} has results but cannot be resumed ({problem}); "
            "rerun with --restart to delete its results and start it over"
        )
    if has_results:
        for name in ("scores.jsonl", "metrics.jsonl", "manifest.json", "config.yaml"):
            (folder / name).unlink(missing_ok=True)
        for name in ("ckpt", "media"):
            shutil.rmtree(folder / name, ignore_errors=True)
    return None


# --------------------------------------------------------------------------------------- run state


@dataclasses.dataclass
class Episode:
    """The running episode of one env worker (enough to re-create it on resume)."""

    index: int = 0
    seed: int = 0
    score: float = 0.0
    length: int = 0
    actions: list = dataclasses.field(default_factory=list)

    def to_json(self) -> dict:
        keys = sorted(self.actions[0]) if self.actions else []
        return {
            "index": self.index,
            "seed": self.seed,
            "score": self.score,
            "length": self.length,
            "actions": {k: [np.asarray(a[k]).tolist() for a in self.actions] for k in keys},
        }

    @classmethod
    def from_json(cls, data: dict, act_space) -> Episode:
        count = len(next(iter(data["actions"].values()))) if data["actions"] else 0
        actions = [
            {k: np.asarray(data["actions"][k][i], dtype=act_space[k].dtype) for k in data["actions"]}
            for i in range(count)
        ]
        return cls(data["index"], data["seed"], data["score"], data["length"], actions)


@dataclasses.dataclass
class RunState:
    """Everything of a run that lives across policy steps (besides the agent, replay and open files)."""

    step: int  # agent steps taken by all train workers together (reset steps not counted)
    updates: dict[str, int]  # updates done, per training stream
    credit: dict[str, float]  # update credit, per training stream
    due: dict[str, float]  # the agent step at which each periodic task is next due: log, save, eval, report
    episodes: list[Episode]  # each train worker's running episode
    eval_round: int = 0  # evaluation rounds done (the final one included)
    final_eval_done: bool = False
    wall_time: float = 0.0  # seconds of training, summed over segments
    recent_scores: list[float] = dataclasses.field(default_factory=list)  # last 100 training returns

    @classmethod
    def fresh(cls, config, streams, workers: int, seed: int) -> RunState:
        every = config.run
        return cls(
            step=0,
            updates={name: 0 for name in streams},
            credit={name: 0.0 for name in streams},
            due={"log": 0, "save": every.save_every, "report": 0,
                 "eval": every.eval_every if every.eval_every > 0 else math.inf},  # fmt: skip
            episodes=[Episode(index=0, seed=episode_seed(seed, "train", w, 0)) for w in range(workers)],
        )

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["due"] = {k: (None if v == math.inf else v) for k, v in self.due.items()}
        data["episodes"] = [e.to_json() for e in self.episodes]
        return data

    @classmethod
    def from_json(cls, data: dict, act_space) -> RunState:
        data = dict(data)
        data["due"] = {k: (math.inf if v is None else v) for k, v in data["due"].items()}
        data["episodes"] = [Episode.from_json(e, act_space) for e in data["episodes"]]
        return cls(**data)


# ------------------------------------------------------------------------------------- compiled agent


class CompiledAgent:
    """The agent's act/update/report compiled with `jax.jit` over the *array* part of the state.

    The non-array part (activation functions, static fields) is split off once and closed over, so a call
    only flattens arrays in C++: for DreamerV3 this cuts a policy step's dispatch from ~5 ms
    (`eqx.filter_jit`, which partitions the whole state in Python on every call) to ~1 ms. Keys are folded
    inside the compiled functions from integer counters (no eager JAX op per step). The base key is an
    argument of the compiled functions, not a constant in them, so every seed runs the same programs (which the
    opt-in compile cache, bench/compile_cache.py, then compiles once for a whole sweep). The update (one
    compilation per stream) donates the state, the policy step donates the carry. `bench perf agent` times
    this same object.

    With `batch_shards` N > 1 the update runs as N batch shards on N CPU devices (bench/batch_shards.py): the
    state is kept replicated on them, and the policy step, report and `state()` read the first device's copy.
    """

    def __init__(self, agent: AbstractAgent, base_key, batch_shards: int = 1):
        self.agent = agent
        self.base_key = base_key
        self.batch_shards = batch_shards
        self._dynamic = None
        self._first = None  # with batch shards: the first device's copy of `dynamic`, made when first needed
        self.static = None
        self.stream_index = {name: i for i, name in enumerate(agent.streams())}

        # The functions of (state arrays, base key, ...): `bench.vmap_run` maps them over a seed axis.
        def fold(key, purpose, counters):
            key = jax.random.fold_in(key, purpose)
            for counter in counters:
                key = jax.random.fold_in(key, counter)
            return key

        def act(dynamic, key, carry, obs, counters, purpose, mode):
            state = eqx.combine(dynamic, self.static)
            return agent.act(state, carry, obs, key=fold(key, purpose, counters), mode=mode)

        def update(dynamic, key, batch, counter, stream):
            state = eqx.combine(dynamic, self.static)
            key = fold(key, KEY_UPDATE, (self.stream_index[stream], counter))
            new_state, metrics, replay_updates = agent.update(state, stream, batch, key=key)
            new_dynamic, new_static = eqx.partition(new_state, eqx.is_array)
            self._check_static(new_static)
            return new_dynamic, metrics, replay_updates

        def report(dynamic, key, batch, counter):
            return agent.report(eqx.combine(dynamic, self.static), batch, key=fold(key, KEY_REPORT, (counter,)))

        def all_finite(dynamic):
            leaves = [x for x in jax.tree.leaves(dynamic) if jnp.issubdtype(x.dtype, jnp.inexact)]
            return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.array(True)

        self.keyed_act, self.keyed_update, self.keyed_report, self.all_finite = act, update, report, all_finite
        self._act = jax.jit(act, static_argnames=("purpose", "mode"), donate_argnums=(2,))
        # (dynamic, key, batch, counter, stream): `bench perf agent` compiles and times this same function
        if batch_shards == 1:
            self.jitted_update = jax.jit(update, static_argnames=("stream",), donate_argnums=(0,))
        else:
            self.jitted_update = batch_shards_lib.shard_update(update, batch_shards)
        self._update = self.jitted_update
        self._report = jax.jit(report)
        self._all_finite = jax.jit(all_finite)

    def _check_static(self, new_static) -> None:
        same_structure = jax.tree_util.tree_structure(new_static) == jax.tree_util.tree_structure(self.static)
        if not same_structure:
            raise RunError(
                f"agent {type(self.agent).__name__}.update changed the non-array part of its state; "
                "keep counters and everything that changes as arrays"
            )

    @property
    def dynamic(self):
        """The state's arrays, as the update takes them (replicated on the devices with batch shards)."""
        return self._dynamic

    @dynamic.setter
    def dynamic(self, arrays) -> None:
        self._dynamic, self._first = arrays, None

    def set_state(self, state) -> None:
        dynamic, self.static = eqx.partition(state, eqx.is_array)
        if self.batch_shards > 1:
            dynamic = batch_shards_lib.replicate(dynamic, self.batch_shards)
        self.dynamic = dynamic

    @property
    def local(self):
        """The state arrays the policy step, report and checkpoints read (one device's)."""
        if self.batch_shards == 1:
            return self.dynamic
        if self._first is None:
            self._first = batch_shards_lib.first_copy(self.dynamic)
        return self._first

    def state(self):
        return eqx.combine(self.local, self.static)

    def initial_carry(self, batch_size: int):
        return self.place_carry(self.agent.initial_carry(self.state(), batch_size))

    def place_carry(self, carry):
        """`carry` (fresh or restored) where the policy step's outputs live: with batch shards, committed to the
        first device like the state's copy, or the policy step would compile again for its own outputs."""
        return carry if self.batch_shards == 1 else jax.device_put(carry, batch_shards_lib.first_device())

    def act(self, carry, obs, counters, purpose: int, mode: str):
        return self._act(self.local, self.base_key, carry, obs, counters, purpose, mode)

    def update(self, stream: str, batch, counter):
        self.dynamic, metrics, replay_updates = self._update(self.dynamic, self.base_key, batch, counter,
                                                             stream)  # fmt: skip
        return metrics, replay_updates

    def report(self, batch, counter):
        return self._report(self.local, self.base_key, batch, counter)

    def state_is_finite(self) -> bool:
        return bool(self._all_finite(self.local))


# --------------------------------------------------------------------------------------- env stepping


Finished = tuple[int, Episode, dict, bool]  # (worker, episode, episode stats, broken)


class Rollout:
    """Env workers plus the running episode of each: one policy step of all of them, for training and evaluation.

    A worker whose observation ended an episode is reset on its next step (the action there is not used, as
    in DreamerV3); `next_episode(worker)` says which episode it starts, or None to leave the worker idle
    (evaluation stops after its episode count). A crashed worker's episode is reported as broken and the
    worker starts its next episode at once. `send` and `receive` are split so the caller can train while the
    workers step.
    """

    def __init__(self, envs: VecEnv, episodes: list[Episode | None], obs: dict,
                 next_episode: Callable[[int], Episode | None]):  # fmt: skip
        self.envs = envs
        self.episodes = episodes
        self.obs = obs
        self.next_episode = next_episode

    def send(self, action: dict) -> int:
        """Request every active worker's step (or reset); return the number of env steps (not resets)."""
        stepped = 0
        for w, episode in enumerate(self.episodes):
            if episode is None:
                continue
            if self.obs["is_last"][w]:
                episode = self.episodes[w] = self.next_episode(w)
                if episode is not None:
                    self.envs.request(w, "reset", episode.seed)
            else:
                single = {k: v[w] for k, v in action.items()}
                episode.actions.append(single)
                self.envs.request(w, "step", single)
                stepped += 1
        return stepped

    def receive(self) -> list[Finished]:
        collected = self.envs.collect()
        finished: list[Finished] = []
        observations: list[dict | None] = [None] * len(self.episodes)
        for w, result in collected.items():
            episode = self.episodes[w]
            if result.crashed:
                finished.append((w, episode, {}, True))
                episode = self.episodes[w] = self.next_episode(w)
                if episode is None:
                    continue
                self.envs.request(w, "reset", episode.seed)
                result = self.envs.collect()[w]
                if result.crashed:
                    raise RunError(f"env worker {w} crashed again right after a restart: {result.error.strip()}")
            elif not result.obs["is_first"]:
                episode.score += float(result.obs["reward"])
                episode.length += 1
                if result.obs["is_last"]:
                    finished.append((w, episode, result.stats or {}, False))
            observations[w] = result.obs
        for w, obs in enumerate(observations):
            if obs is None:  # an idle worker (evaluation done with it) keeps its last observation
                observations[w] = {k: v[w] for k, v in self.obs.items()}
        self.obs = stack(observations)
        return finished


# ---------------------------------------------------------------------------------------------- run


class Run:
    """One run in its (locked, validated) folder. `execute` is the whole loop."""

    def __init__(self, resolved: Resolved, seed: int, folder: Path, *, quiet: bool, command: str):
        cfg = resolved.config
        self.resolved = resolved
        self.config = cfg
        self.seed = seed
        self.folder = folder
        self.quiet = quiet
        self.label = ""  # a prefix of its messages ("seed 3: " where several seeds share the terminal)
        self.command = command
        # An offline run consumes no env frames; its steps count update rounds (see `_offline_step`).
        self.frames_per_step = 0 if cfg.run.offline else resolved.suite_spec.frames_per_step(cfg.env)
        batch_shards_lib.ensure_devices(cfg.run.batch_shards)  # before JAX's first operation
        self.base_key = jax.random.PRNGKey(seed)  # every key is folded from this with counters
        self.stop_requested = False
        self.envs = VecEnv(resolved.suite_ref, resolved.task, cfg.env, cfg.run.envs,
                           max_restarts=cfg.run.max_worker_restarts, timeout=cfg.run.worker_timeout)  # fmt: skip
        self.eval_envs: VecEnv | None = None
        kind = spaces.action_kind(self.envs.act_space)
        if kind not in resolved.agent_spec.action_kinds:
            self.envs.close()
            kinds = " and ".join(resolved.agent_spec.action_kinds)
            raise RunError(f"agent {resolved.agent_spec.name!r} acts in {kinds} action spaces only; "
                           f"task {resolved.task!r} has {kind} actions")  # fmt: skip
        # A fresh start reads the source replay (checked before the agent is built); a resumed run has it in
        # its own replay already.
        self.source = None
        if cfg.replay.load and not Checkpointer(folder / "ckpt").exists():
            self.source = open_source(cfg.replay.load)
            check_spaces(self.source, self.envs.obs_space, self.envs.act_space)
        self.agent = resolved.agent_spec.make(cfg.agent, self.envs.obs_space, self.envs.act_space)
        self.streams: dict[str, StreamSpec] = dict(self.agent.streams())
        try:
            batch_shards_lib.check(resolved.agent_spec, cfg.run.batch_shards,
                                   {name: spec.batch for name, spec in self.streams.items()})  # fmt: skip
        except batch_shards_lib.BatchShardsError:
            self.envs.close()
            raise
        self.compiled = CompiledAgent(self.agent, self.base_key, cfg.run.batch_shards)
        self.samplers = {
            name: make_sampler(spec.sampler or "mixture", cfg.replay) for name, spec in self.streams.items()
        }
        tables = [MAIN_TABLE] + sorted({spec.table for spec in self.streams.values()} - {MAIN_TABLE})
        self.replay = Replay({
            name: Table(name, workers=cfg.run.envs, capacity=cfg.replay.capacity, chunk=cfg.replay.chunk,
                        seed=int(np.random.SeedSequence([seed, 7, *([i] if i else [])]).generate_state(1)[0]))
            for i, name in enumerate(tables)
        })  # fmt: skip
        self.checkpointer = Checkpointer(folder / "ckpt")
        self.scores = results.JsonlWriter(folder / "scores.jsonl")
        self.logger = Logger(
            folder, cfg.logger.outputs, config_dict=cfg.to_dict(),
            run_name=f"{resolved.suite_spec.name}/{resolved.task}/{resolved.agent_spec.name}/{cfg.hash()}/seed{seed}",
            wandb_project=cfg.logger.wandb_project, wandb_mode=cfg.logger.wandb_mode,
        )  # fmt: skip
        self.accumulator = MetricAccumulator()
        self.state: RunState | None = None  # set by _fresh_start or _restore
        self.segment_start_wall_time = 0.0  # the run's wall_time when this process's segment began
        self.carry = None
        self.rollout: Rollout | None = None
        self.manifest: dict = {}

    def say(self, message: str) -> None:
        if not self.quiet:
            print(self.label + message, file=sys.stderr, flush=True)

    # -------------------------------------------------------------------------------------- the loop

    def execute(self, header: dict | None) -> Path:
        cfg = self.config
        handlers = stop_signals.install(self._on_stop_signal)
        try:
            self._start(header)
            state = self.state
            clock = Clock(state.wall_time, state.step)
            with self._progress() as progress:
                while state.step < cfg.run.steps and not self.stop_requested:
                    if cfg.run.offline:
                        self._offline_step()
                    else:
                        self._policy_step()  # acts, steps the workers and trains the due updates meanwhile
                    self._periodic(clock, progress)
            return self._finish()
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            self._close()

    # The pieces of `execute`, also driven from outside by `bench.vmap_run` (several seeds in one process).

    def _start(self, header: dict | None) -> None:
        """Initialise the agent, then start fresh or restore the checkpoint `header`; open a manifest segment."""
        self.compiled.set_state(self.agent.init(key=jax.random.fold_in(self.base_key, KEY_INIT)))
        self.carry = self.compiled.initial_carry(self.config.run.envs)
        if header is None:
            self._fresh_start()
        else:
            self._restore(header)
        self._begin_segment(header)

    def _progress(self) -> Progress:
        cfg, name = self.config, self.resolved.agent_spec.name
        return Progress(cfg.run.steps, f"{name} {self.resolved.suite_spec.name}/{self.resolved.task} seed {self.seed}",
                        cfg.logger.progress and not self.quiet and sys.stderr.isatty())  # fmt: skip

    def _periodic(self, clock: Clock, progress: Progress) -> None:
        """After a step: the due evaluation round, metrics record, agent report and checkpoint."""
        cfg, state = self.config, self.state
        state.wall_time = clock.elapsed()
        if state.step >= state.due["eval"]:
            self._evaluate(final=False)
            state.due["eval"] += cfg.run.eval_every
        if state.step >= state.due["log"] or state.step >= cfg.run.steps:  # the end logs its partial interval
            self._log(clock.rate(state.step))
            progress.update(state.step, clock.last_rate, state.recent_scores[-1] if state.recent_scores else None)
            state.due["log"] = state.step + cfg.run.log_every
        if cfg.run.report_every > 0 and state.step >= state.due["report"] and state.step > 0:
            self._report_media()
            state.due["report"] = state.step + cfg.run.report_every
        if state.step >= state.due["save"] or clock.save_due(cfg.run.save_every_secs) or self.stop_requested:
            self._save()
            clock.saved()
            while state.due["save"] <= state.step:
                state.due["save"] += cfg.run.save_every

    def _finish(self) -> Path:
        """After the loop: stopped (raises `RunStopped`), or the final evaluation, report and checkpoint."""
        state = self.state
        if self.stop_requested:
            self._end_segment("stopped")
            raise RunStopped(self.folder, state.step)
        if self.config.run.final_eval and not state.final_eval_done:
            self._evaluate(final=True)
        state.final_eval_done = True
        self._report_media()
        self._save()
        self._end_segment("finished")
        self.say(f"finished {self.folder}")
        return self.folder

    def _close(self) -> None:
        self.envs.close()
        if self.eval_envs is not None:
            self.eval_envs.close()
        self.logger.close()

    def _on_stop_signal(self, signum, _frame):
        if self.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop_requested = True
        print(f"\n{signal.Signals(signum).name}: saving a checkpoint, then stopping "
              "(press Ctrl-C again to stop at once)", file=sys.stderr)  # fmt: skip

    # ------------------------------------------------------------------------------ starting, resuming

    def _fresh_start(self) -> None:
        cfg = self.config
        self.scores.truncate(0)
        self.logger.metrics.truncate(0)
        source = self.source
        if cfg.replay.load and source is None:  # an unusable checkpoint was found at __init__: start over
            source = open_source(cfg.replay.load)
            check_spaces(source, self.envs.obs_space, self.envs.act_space)
        self.state = RunState.fresh(cfg, self.streams, cfg.run.envs, self.seed)
        if not cfg.run.offline:
            first = self.envs.reset_all([e.seed for e in self.state.episodes])
            obs = stack([first[w].obs for w in range(cfg.run.envs)])
            self.rollout = Rollout(self.envs, self.state.episodes, obs, self._next_train_episode)
        self.manifest = results.new_manifest(
            suite=self.resolved.suite_spec.name, task=self.resolved.task, agent=self.resolved.agent_spec.name,
            seed=self.seed, config_hash=cfg.hash(), protocol=registry.protocol_dict(self.resolved.suite_spec, cfg.env),
            budget=cfg.run.steps, command=self.command, folder=self.folder,
        )  # fmt: skip
        self.manifest["spaces"] = spaces_record(self.envs.obs_space, self.envs.act_space)
        self.manifest["offline"] = cfg.run.offline  # offline: agent_steps and budget count update rounds
        if source is not None:
            steps = load_into(source, self.replay[MAIN_TABLE], self._row_example())
            self.manifest["replay_source"] = {**source.record(), "steps_loaded": steps}
            self.say(f"loaded {steps} replay steps of {source.folder}")
            if cfg.run.offline:
                for name, spec in self.streams.items():
                    if not self.replay[spec.table].ready(spec.total_length):
                        raise RunError(f"replay.load: the replay of {source.folder} holds {steps} steps, no window of "
                                       f"{spec.total_length} steps for stream {name!r} (table {spec.table!r}) to train on")  # fmt: skip
        # The manifest first, then a checkpoint at step 0: from now on every kill leaves a resumable folder (a
        # checkpoint with no manifest beside it is not one: `_check_folder`).
        results.atomic_write_json(self.folder / "manifest.json", self.manifest)
        self._save()

    def _restore(self, header: dict) -> None:
        """Continue exactly from a verified checkpoint header."""
        if "run_state" not in header:
            raise CheckpointError(f"checkpoint in {self.folder / 'ckpt'} was written by an older bench version")
        state, carry = self.checkpointer.load_agent(header, (self.compiled.state(), self.carry))
        self.compiled.set_state(state)
        self.carry = self.compiled.place_carry(carry)
        self.checkpointer.load_replay(header, self.replay)
        self.state = RunState.from_json(header["run_state"], self.envs.act_space)
        if sorted(self.state.credit) != sorted(self.streams):
            raise CheckpointError(f"checkpoint streams {sorted(self.state.credit)} != the agent's {sorted(self.streams)}")
        self.accumulator.load(header["accumulator"])
        if not self.config.run.offline:
            for w, episode in enumerate(self.state.episodes):
                self.envs.request(w, "restore", (episode.seed, episode.actions))
            restored = self.envs.collect()
            for w, result in restored.items():
                if result.crashed:
                    raise RunError(f"env worker {w} crashed while restoring its episode: {result.error.strip()}")
            obs = stack([restored[w].obs for w in range(self.envs.num_envs)])
            self.rollout = Rollout(self.envs, self.state.episodes, obs, self._next_train_episode)
        # Only now, with everything verified, are the result files cut back to the checkpoint.
        self.scores.truncate(header["positions"]["scores"])
        self.logger.metrics.truncate(header["positions"]["metrics"])
        self.manifest = results.read_manifest(self.folder)
        self.say(f"resumed at step {self.state.step} ({sum(self.state.updates.values())} updates)")

    def _begin_segment(self, header: dict | None) -> None:
        self.manifest["status"] = "running"
        self.segment_start_wall_time = self.state.wall_time
        self.manifest["segments"].append({
            "started": results.now(), "resumed_from_step": header and header["step"], "wall_time": 0.0,
            "code": results.code_version(self.folder), "packages": results.package_versions(),
            "hardware": results.hardware(),
        })  # fmt: skip
        results.atomic_write_json(self.folder / "manifest.json", self.manifest)
        self.say(f"{'resuming' if header else 'starting'} {self.folder}")

    def _next_train_episode(self, worker: int) -> Episode:
        index = self.state.episodes[worker].index + 1
        self.state.episodes[worker] = Episode(index=index, seed=episode_seed(self.seed, "train", worker, index))
        return self.state.episodes[worker]

    # ---------------------------------------------------------------------------------- policy + training

    def _policy_step(self) -> None:
        obs = self.rollout.obs
        self.carry, action, extras = self.compiled.act(self.carry, obs, (np.int32(self.state.step),), KEY_ACT, "train")
        stepped = self._send(obs, *jax.device_get((action, extras)))
        self._train(policy_steps=self.envs.num_envs)  # while the workers step
        self._receive(stepped)

    def _send(self, obs: dict, action: dict, extras: dict) -> int:
        """Send the actions to the env workers, then store the transition; return the env steps taken."""
        stepped = self.rollout.send(action)
        self._store(obs, action, extras)
        return stepped

    def _receive(self, stepped: int) -> None:
        """Collect the workers' new observations; record the episodes that ended."""
        finished = self.rollout.receive()
        self.state.step += stepped
        for worker, episode, stats, broken in finished:
            self._record_episode(worker, episode, stats, broken=broken)
            if broken:
                for table in self.replay.tables.values():
                    table.mark_last(worker)  # the abandoned episode ends at its last stored step
                self.say(f"env worker {worker} crashed; episode {episode.index} recorded as broken, worker restarted")

    def _offline_step(self) -> None:
        """One round of training on the loaded replay and nothing else: the first stream does one update, the
        others in proportion to their ratios. Offline, `RunState.step` counts these rounds (the budget, log,
        save, eval and report intervals count updates of the first stream)."""
        self._train(policy_steps=0)
        self.state.step += 1

    def _row_example(self) -> dict:
        """One step of a main-table replay row (observation, action, `act` extras) as zeros of its shapes."""
        n = self.config.run.envs
        obs = {k: space.zeros((n,)) for k, space in self.envs.obs_space.items()}
        act = lambda state, carry: self.agent.act(state, carry, obs, key=jax.random.PRNGKey(0), mode="train")
        _, _, extras = eqx.filter_eval_shape(act, self.compiled.state(), self.carry)
        other = {name for name in self.replay.tables if name != MAIN_TABLE}
        row = {k: space.zeros() for k, space in self.envs.obs_space.items() if not k.startswith(PRIVATE_PREFIX)}
        row.update({k: space.zeros() for k, space in self.envs.act_space.items()})
        row.update({k: np.zeros(v.shape[1:], v.dtype) for k, v in extras.items() if k.split("/", 1)[0] not in other})
        return row

    def _credit(self, spec: StreamSpec, policy_steps: int) -> float:
        """Update credit a stream earns for `policy_steps`: ratio / (batch * length) per policy step; offline,
        one round gives the first stream one update and the others credit in proportion to their ratios."""
        # a stream's ratio (the run's train_ratio unless it sets its own) times its ratio_scale (Hieros' levels)
        ratio = lambda s: (self.config.run.train_ratio if s.ratio is None else s.ratio) * s.ratio_scale  # noqa: E731
        if not self.config.run.offline:
            return policy_steps * ratio(spec) / (spec.batch * spec.length)
        first = next(iter(self.streams.values()))
        rate = lambda s: ratio(s) / (s.batch * s.length)  # noqa: E731
        return rate(spec) / rate(first) if rate(first) > 0 else 0.0

    def _store(self, obs: dict, action: dict, extras: dict) -> None:
        """One replay row per worker: observation + action + extras in "main"; "<table>/..." extras elsewhere."""
        other = {name for name in self.replay.tables if name != MAIN_TABLE}
        routed = {k for k in extras if k.split("/", 1)[0] in other}
        row = {k: v for k, v in obs.items() if not k.startswith(PRIVATE_PREFIX)}
        for part, values in (("action", action), ("extras", {k: v for k, v in extras.items() if k not in routed})):
            clash = set(row) & set(values)
            if clash:
                raise RunError(f"agent {self.resolved.agent_spec.name!r}: {part} key(s) {sorted(clash)} "
                               "collide with observation/action keys of the replay row")  # fmt: skip
            row.update(values)
        self.replay[MAIN_TABLE].add_batch(row)
        for name in sorted(other):
            values = {k[len(name) + 1 :]: v for k, v in extras.items() if k.startswith(name + "/")}
            write = values.pop("write", None)
            if write is None:
                raise RunError(f"agent {self.resolved.agent_spec.name!r} declares table {name!r} but its act "
                               f"extras lack '{name}/write'")  # fmt: skip
            self.replay[name].add_batch(values, lanes=np.flatnonzero(write))

    def _train(self, policy_steps: int) -> None:
        """Run every stream's due updates, in order."""
        for name in self._due_updates(policy_steps):
            batch, positions = self._sample(name)
            metrics, replay_updates = self.compiled.update(name, batch, np.int32(self.state.updates[name]))
            self._updated(name, positions, *jax.device_get((metrics, replay_updates)))

    def _due_updates(self, policy_steps: int) -> list[str]:
        """The updates due now, one stream name per update: a stream's credit grows by ratio / (batch * length)
        per policy step and each whole unit is one update."""
        state, cfg = self.state, self.config
        filled = cfg.run.offline or len(self.replay[MAIN_TABLE]) >= cfg.run.train_fill
        due = []
        for name, spec in self.streams.items():
            if state.step < spec.start:
                continue
            state.credit[name] += self._credit(spec, policy_steps)
            if not filled or not self.replay[spec.table].ready(spec.total_length):
                state.credit[name] = min(state.credit[name], 1.0)
                continue
            while state.credit[name] >= 1.0:
                state.credit[name] -= 1.0
                due.append(name)
        return due

    def _sample(self, name: str):
        """A batch for one update of stream `name`, and where in its table it came from."""
        spec = self.streams[name]
        online = self.config.replay.online if spec.online is None else spec.online
        return self.replay[spec.table].sample(spec.batch, spec.total_length, sampler=self.samplers[name],
                                              stream=name if online else None)  # fmt: skip

    def _updated(self, name: str, positions, metrics: dict, replay_updates: dict) -> None:
        """Book one done update of stream `name`: count it, check its metrics, write its replay updates back."""
        state = self.state
        state.updates[name] += 1
        bad = [k for k, v in metrics.items() if not np.all(np.isfinite(v))]
        if bad:
            raise NonFiniteError(
                f"non-finite {', '.join(bad[:3])} at update {state.updates[name]} of stream {name!r} "
                f"(agent step {state.step}); stopped without saving the broken state; the last checkpoint "
                f"in {self.folder / 'ckpt'} is intact (try a lower learning rate or check the inputs)"
            )
        prefix = "" if len(self.streams) == 1 else f"{name}/"
        self.accumulator.add({prefix + k: v for k, v in metrics.items()})
        self.replay[self.streams[name].table].write_back(positions, replay_updates)

    # ------------------------------------------------------------------------------------ bookkeeping

    def _record_episode(self, worker, episode: Episode, stats: dict, *, broken: bool, mode="train",
                        final=False) -> None:  # fmt: skip
        record = {
            "step": self.state.step,
            "frames": self.state.step * self.frames_per_step,
            "mode": mode,
            "worker": worker,
            "episode": episode.index,
            "return": episode.score,
            "length": episode.length,
            "broken": broken,
        }
        if mode == "eval":
            record.update({"eval_round": self.state.eval_round, "final": final})
        for key, value in stats.items():
            if key in record:
                raise RunError(f"episode stat {key!r} of suite {self.resolved.suite_spec.name!r} clashes with a score field")
            record[key] = float(value)
        self.scores.write([record])
        if mode == "train" and not broken:
            self.state.recent_scores = (self.state.recent_scores + [episode.score])[-100:]
            self.accumulator.add({"episode/score": episode.score, "episode/length": episode.length})

    def _log(self, rate: float) -> None:
        values = self.accumulator.means()
        self.accumulator.reset()
        values.update({
            "perf/policy_steps_per_sec": rate,
            "replay/steps": len(self.replay[MAIN_TABLE]),
            "train/updates": sum(self.state.updates.values()),
            "env/worker_restarts": self.envs.restarts,
        })  # fmt: skip
        if len(self.streams) > 1:
            values.update({f"train/updates/{name}": count for name, count in self.state.updates.items()})
        self.logger.write(self.state.step, self.state.step * self.frames_per_step, values)

    # ------------------------------------------------------------------------------------- evaluation

    def _evaluate(self, *, final: bool) -> None:
        """One round of evaluation episodes (mode "eval") in separate env workers, with the shared `Rollout`."""
        cfg, state = self.config, self.state
        episodes = cfg.run.eval_episodes or self.resolved.suite_spec.eval_episodes
        protocol = getattr(cfg.env, "eval_protocol", self.resolved.suite_spec.eval_protocol)
        if final and protocol != "final_eval" and not cfg.run.eval_episodes and not cfg.run.offline:
            return  # the protocol scores training episodes (train_window, crafter_score, success_rate)
        n = min(cfg.run.envs, episodes)
        if self.eval_envs is None or self.eval_envs.num_envs != n:
            if self.eval_envs is not None:
                self.eval_envs.close()
            self.eval_envs = VecEnv(self.resolved.suite_ref, self.resolved.task, cfg.env, n,
                                    max_restarts=cfg.run.max_worker_restarts, timeout=cfg.run.worker_timeout)  # fmt: skip
        round_, started = state.eval_round, 0

        def next_episode(_worker) -> Episode | None:
            nonlocal started
            if started >= episodes:
                return None
            started += 1
            return Episode(index=started - 1, seed=episode_seed(self.seed, "eval", round_, started - 1))

        first = [next_episode(w) for w in range(n)]
        reset = self.eval_envs.reset_all([e.seed for e in first])
        rollout = Rollout(self.eval_envs, first, stack([reset[w].obs for w in range(n)]), next_episode)
        carry = self.compiled.initial_carry(n)
        returns, done, t = [], 0, 0
        while done < episodes:
            carry, action, _ = self.compiled.act(carry, rollout.obs, (np.int32(round_), np.int32(t)), KEY_EVAL, "eval")
            rollout.send(jax.device_get(action))
            t += 1
            for worker, episode, stats, broken in rollout.receive():
                self._record_episode(worker, episode, stats, broken=broken, mode="eval", final=final)
                done += 1
                if not broken:
                    returns.append(episode.score)
        state.eval_round += 1
        if returns:
            self.logger.write(state.step, state.step * self.frames_per_step, {
                "eval/score": float(np.mean(returns)), "eval/episodes": len(returns), "eval/final": float(final)})  # fmt: skip
        self.say(f"eval round {round_}{' (final)' if final else ''}: mean return "
                 f"{np.mean(returns) if returns else float('nan'):.3f} over {len(returns)} episodes")  # fmt: skip

    def _report_media(self) -> None:
        if not self.streams:
            return
        spec = next(iter(self.streams.values()))
        table = self.replay[spec.table]
        if not table.ready(spec.total_length):
            return
        step = self.state.step
        batch, _ = table.sample(spec.batch, spec.total_length, rng=np.random.default_rng([self.seed, step, 11]))
        report = jax.device_get(self.compiled.report(batch, np.int32(step)))
        scalars = {}
        media = self.folder / "media"
        for name, value in report.items():
            value = np.asarray(value)
            if value.ndim == 0:
                scalars[f"report/{name}"] = float(value)
            elif value.dtype == np.uint8 and value.ndim in (3, 4):
                media.mkdir(exist_ok=True)
                import imageio.v3 as iio

                safe = name.replace("/", "_")
                if value.ndim == 3:
                    iio.imwrite(media / f"{safe}_{step:09d}.png", value)
                else:
                    iio.imwrite(media / f"{safe}_{step:09d}.gif", value, duration=100, loop=0)
        if scalars:
            self.logger.write(step, step * self.frames_per_step, scalars)

    # ---------------------------------------------------------------------------------------- saving

    def _save(self) -> None:
        """Checkpoint everything `_restore` reads; a non-finite agent state is never saved."""
        if not self.compiled.state_is_finite():
            raise NonFiniteError(
                f"the agent state has non-finite values at agent step {self.state.step}; not saved; the last "
                f"checkpoint in {self.folder / 'ckpt'} is intact"
            )
        self.scores.sync()
        self.logger.metrics.sync()
        header = {
            "run_state": self.state.to_json(),
            "positions": {"scores": self.scores.position(), "metrics": self.logger.metrics.position()},
            "accumulator": self.accumulator.state(),
            "config_hash": self.config.hash(),
        }
        self.checkpointer.save(step=self.state.step, header=header, agent_tree=(self.compiled.state(), self.carry),
                               replay=self.replay)  # fmt: skip
        if self.manifest["segments"]:  # this segment's share of wall_time (a vmapped group shares it: leaderboard)
            segment_time = self.state.wall_time - self.segment_start_wall_time
            self.manifest["segments"][-1]["wall_time"] = segment_time
        self.manifest.update({
            "updated": results.now(), "wall_time": self.state.wall_time, "agent_steps": self.state.step,
            "env_frames": self.state.step * self.frames_per_step, "updates": sum(self.state.updates.values()),
        })  # fmt: skip
        results.atomic_write_json(self.folder / "manifest.json", self.manifest)

    def _end_segment(self, status: str) -> None:
        """"finished", or "stopped" (a stop signal: checkpoint saved; the same command resumes the run)."""
        self.manifest["status"] = status
        self.manifest["segments"][-1]["ended"] = self.manifest["updated"] = results.now()
        results.atomic_write_json(self.folder / "manifest.json", self.manifest)


class Clock:
    """Wall time of the run (continuing the saved total), the policy-step rate between logs, save timing."""

    def __init__(self, wall_time: float, step: int):
        self.start = time.time() - wall_time
        self.rate_time, self.rate_step, self.last_rate = time.time(), step, 0.0
        self.last_save = time.time()

    def elapsed(self) -> float:
        return time.time() - self.start

    def rate(self, step: int) -> float:
        now = time.time()
        self.last_rate = (step - self.rate_step) / max(now - self.rate_time, 1e-9)
        self.rate_time, self.rate_step = now, step
        return self.last_rate

    def save_due(self, every_secs: float) -> bool:
        return time.time() - self.last_save > every_secs

    def saved(self) -> None:
        self.last_save = time.time()


__all__ = ["run", "resolve", "Resolved", "Run", "RunState", "CompiledAgent", "Rollout", "RunError",
           "NonFiniteError", "RunStopped", "CheckpointError"]  # fmt: skip
