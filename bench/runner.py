"""The runner: one (agent, suite, task, seed) run from config to results, resumable at any point.

Loop (one iteration = one policy step for every env worker):

    obs --jitted act--> actions --> replay.add(obs, action, extras)
        --> send actions to the env workers (they step in their processes) ...
        ... meanwhile: the due number of jitted, state-donating updates on replayed batches ...
        --> collect the new observations; record finished episodes in scores.jsonl

`run.train_ratio` follows DreamerV3: it is the number of *replayed* steps per *policy* step, so the number of
updates per policy step is train_ratio / (batch * length) (context steps not counted; action repeat ignored).
For example train_ratio 256 with 16 x 64 batches is one update every 4 policy steps.

Every source of randomness derives from the run seed: the agent's init/act/update keys are folded from it
with counters, the replay has its own generator (saved), and every episode is seeded from
(seed, train|eval, worker, episode). Checkpoints hold everything else (agent state, policy carry, replay,
counters, each worker's current episode seed and actions, file positions), so a killed run started again
with the same command continues exactly: the same episodes, none lost, none duplicated.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from bench import config as config_lib
from bench import registry, results
from bench.api import AbstractAgent
from bench.checkpoint import Checkpointer, CheckpointError
from bench.envs import VecEnv, episode_seed, stack
from bench.logging import Logger, MetricAccumulator, Progress
from bench.replay import Replay
from bench.spaces import PRIVATE_PREFIX

KEY_INIT, KEY_ACT, KEY_UPDATE, KEY_EVAL, KEY_REPORT = range(5)


class RunError(RuntimeError):
    """A run cannot start or continue; the message says why and what to do."""


class NonFiniteError(RunError):
    pass


def run(
    agent: str,
    suite: str,
    task: str,
    *,
    seed: int = 0,
    configs: Sequence[str] = (),
    overrides: dict | None = None,
    root=None,
    quiet: bool = False,
    command: str = "",
) -> Path:
    """Run (or resume, or skip if finished) one run and return its folder."""
    trainer = Trainer.create(
        agent, suite, task, seed=seed, configs=configs, overrides=overrides, root=root, quiet=quiet, command=command
    )
    return trainer.run()


def resolve(agent: str, suite: str, task: str, configs=(), overrides=None):
    agent_spec = registry.get_agent(agent)
    suite_spec = registry.get_suite(suite)
    task = suite_spec.resolve_task(task)
    config = registry.build_config(agent_spec, suite_spec, configs, overrides, task)
    if config.run.steps <= 0:
        config = dataclasses.replace(config, run=dataclasses.replace(config.run, steps=suite_spec.budget))
    return agent_spec, suite_spec, task, config


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


class CompiledAgent:
    """The agent's act/update/report compiled with `jax.jit` over the *array* part of the state.

    The non-array part (activation functions, static fields) is split off once and closed over, so a call
    only flattens arrays in C++: for DreamerV3 this cuts a policy step's dispatch from ~5 ms
    (`eqx.filter_jit`, which partitions the whole state in Python on every call) to ~1 ms. Keys are folded
    inside the compiled functions from integer counters (no eager JAX op per step). The update donates the
    state, the policy step donates the carry.
    """

    def __init__(self, agent: AbstractAgent, base_key):
        self.agent = agent
        self.dynamic = None
        self.static = None

        def fold(purpose, counters):
            key = jax.random.fold_in(base_key, purpose)
            for counter in counters:
                key = jax.random.fold_in(key, counter)
            return key

        def act(dynamic, carry, obs, counters, purpose, mode):
            state = eqx.combine(dynamic, self.static)
            return agent.act(state, carry, obs, key=fold(purpose, counters), mode=mode)

        def update(dynamic, batch, counter):
            state = eqx.combine(dynamic, self.static)
            new_state, metrics, replay_updates = agent.update(state, "train", batch, key=fold(KEY_UPDATE, (counter,)))
            new_dynamic, new_static = eqx.partition(new_state, eqx.is_array)
            self._check_static(new_static)
            return new_dynamic, metrics, replay_updates

        def report(dynamic, batch, counter):
            return agent.report(eqx.combine(dynamic, self.static), batch, key=fold(KEY_REPORT, (counter,)))

        self._act = jax.jit(act, static_argnames=("purpose", "mode"), donate_argnums=(1,))
        self._update = jax.jit(update, donate_argnums=(0,))
        self._report = jax.jit(report)

    def _check_static(self, new_static) -> None:
        same_structure = jax.tree_util.tree_structure(new_static) == jax.tree_util.tree_structure(self.static)
        if not same_structure:
            raise RunError(
                f"agent {type(self.agent).__name__}.update changed the non-array part of its state; "
                "keep counters and everything that changes as arrays"
            )

    def set_state(self, state) -> None:
        self.dynamic, self.static = eqx.partition(state, eqx.is_array)

    def state(self):
        return eqx.combine(self.dynamic, self.static)

    def act(self, carry, obs, counters, purpose: int, mode: str):
        return self._act(self.dynamic, carry, obs, counters, purpose, mode)

    def update(self, batch, counter):
        self.dynamic, metrics, replay_updates = self._update(self.dynamic, batch, counter)
        return metrics, replay_updates

    def report(self, batch, counter):
        return self._report(self.dynamic, batch, counter)


class Trainer:
    def __init__(self, agent_spec, suite_spec, task, config, seed, folder: Path, quiet: bool, command: str,
                 suite_ref: str | None = None):  # fmt: skip
        self.agent_spec = agent_spec
        self.suite = suite_spec
        self.suite_ref = suite_ref or suite_spec.name  # what env workers resolve (a name or module:NAME)
        self.task = task
        self.config = config
        self.seed = seed
        self.folder = folder
        self.quiet = quiet
        self.command = command
        self.frames_per_step = suite_spec.frames_per_step(config.env)
        self.base_key = jax.random.PRNGKey(seed)  # every key is folded from this with counters
        self._interrupted = False

    @classmethod
    def create(cls, agent, suite, task, *, seed=0, configs=(), overrides=None, root=None, quiet=False, command=""):
        agent_spec, suite_spec, task, config = resolve(agent, suite, task, configs, overrides)
        folder = results.run_dir(
            root or results.default_root(), suite_spec.name, task, agent_spec.name, config.hash(), seed
        )
        return cls(agent_spec, suite_spec, task, config, seed, folder, quiet, command, suite_ref=suite)

    # ------------------------------------------------------------------------------------------- setup

    def say(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)

    def _check_folder(self) -> dict | None:
        """Validate an existing run folder before touching it; return the checkpoint header if resuming."""
        config_file = self.folder / "config.yaml"
        if not config_file.exists():
            return None
        stored = config_lib.load_yaml(config_file)
        ours = self.config.to_dict()
        differing = [
            k for k in config_lib.diff(stored, ours) if not k.startswith(config_lib.UNHASHED_SECTIONS)
        ]
        if differing:
            raise RunError(
                f"results folder {self.folder} was written by a different config (differs at "
                f"{', '.join(differing[:5])}); refusing to touch it"
            )
        checkpointer = Checkpointer(self.folder / "ckpt")
        if checkpointer.exists():
            return checkpointer.load_header()  # verifies every checksum first
        return None

    def run(self) -> Path:
        if results.is_finished(self.folder):
            self.say(f"already finished: {self.folder}")
            return self.folder
        header = self._check_folder()
        self.folder.mkdir(parents=True, exist_ok=True)
        if not (self.folder / "config.yaml").exists():
            results.atomic_write_text(self.folder / "config.yaml", config_lib.dump_yaml(self.config))
        manifest_path = self.folder / "manifest.json"
        if manifest_path.exists():
            self.manifest = results.read_manifest(self.folder)
        else:
            self.manifest = results.new_manifest(
                suite=self.suite.name,
                task=self.task,
                agent=self.agent_spec.name,
                seed=self.seed,
                config_hash=self.config.hash(),
                protocol=registry.protocol_dict(self.suite, self.config.env),
                budget=self.config.run.steps,
                command=self.command,
            )
        self.manifest["status"] = "running"  # also after a stop with Ctrl-C ("stopped")
        self.manifest["segments"].append({"started": results.now(), "resumed_from_step": header and header["step"]})
        results.atomic_write_json(manifest_path, self.manifest)
        self.say(f"{'resuming' if header else 'starting'} {self.folder}")
        previous_handler = signal.signal(signal.SIGINT, self._on_interrupt)
        try:
            return self._run(header)
        finally:
            signal.signal(signal.SIGINT, previous_handler)

    def _on_interrupt(self, *_):
        if self._interrupted:
            raise KeyboardInterrupt
        self._interrupted = True
        print("\ninterrupt: saving a checkpoint, then stopping (press Ctrl-C again to stop at once)", file=sys.stderr)

    def _build(self, obs_space, act_space) -> AbstractAgent:
        agent = self.agent_spec.make(self.config.agent, obs_space, act_space)
        self.agent = agent
        self.stream = agent.streams().get("train")
        extra = set(agent.streams()) - {"train"}
        if extra:
            raise RunError(f"agent {self.agent_spec.name!r} declares streams {sorted(extra)}; the runner trains on 'train'")

        self.compiled = CompiledAgent(agent, self.base_key)
        return agent

    # -------------------------------------------------------------------------------------- main loop

    def _run(self, header: dict | None) -> Path:
        cfg = self.config
        n = cfg.run.envs
        envs = VecEnv(self.suite_ref, self.task, cfg.env, n, max_restarts=cfg.run.max_worker_restarts)
        self.envs = envs
        self.eval_envs = None
        try:
            agent = self._build(envs.obs_space, envs.act_space)
            self.compiled.set_state(agent.init(key=jax.random.fold_in(self.base_key, KEY_INIT)))
            self.carry = agent.initial_carry(self.compiled.state(), n)
            self.replay = Replay(
                num_streams=n,
                capacity=cfg.replay.capacity,
                chunk=cfg.replay.chunk,
                online=cfg.replay.online,
                recency=cfg.replay.recency,
                recency_decay=cfg.replay.recency_decay,
                seed=int(np.random.SeedSequence([self.seed, 7]).generate_state(1)[0]),
            )
            self.checkpointer = Checkpointer(self.folder / "ckpt")
            self.scores = results.JsonlWriter(self.folder / "scores.jsonl")
            self.logger = Logger(
                self.folder,
                cfg.logger.outputs,
                config_dict=cfg.to_dict(),
                run_name=f"{self.suite.name}/{self.task}/{self.agent_spec.name}/{cfg.hash()}/seed{self.seed}",
                wandb_project=cfg.logger.wandb_project,
                wandb_mode=cfg.logger.wandb_mode,
            )
            self.accumulator = MetricAccumulator()
            if header is None:
                self._fresh_start()
            else:
                self._restore(header)
            self._train_loop()
            if self._interrupted:
                self._end_segment("stopped")
                return self.folder
            if cfg.run.final_eval:
                self._evaluate(final=True)
            self._report_media()
            self._save_checkpoint()
            self._end_segment("finished")
            self.say(f"finished {self.folder}")
            return self.folder
        finally:
            envs.close()
            if self.eval_envs is not None:
                self.eval_envs.close()
            if hasattr(self, "logger"):
                self.logger.close()

    def _fresh_start(self) -> None:
        self.scores.truncate(0)
        self.logger.metrics.truncate(0)
        self.step = 0
        self.updates = 0
        self.update_credit = 0.0
        self.eval_round = 0
        self.wall_time = 0.0
        self.recent_scores: list[float] = []
        self.next = {"log": 0, "save": self.config.run.save_every, "eval": self._first_eval(), "report": 0}
        self.episodes = [Episode() for _ in range(self.envs.num_envs)]
        for w, episode in enumerate(self.episodes):
            episode.seed = episode_seed(self.seed, "train", w, 0)
        results_ = self.envs.reset_all([e.seed for e in self.episodes])
        self.obs = stack([results_[w].obs for w in range(self.envs.num_envs)])

    def _first_eval(self) -> int:
        every = self.config.run.eval_every
        return every if every > 0 else math.inf

    def _restore(self, header: dict) -> None:
        """Continue exactly from a verified checkpoint header."""
        like = (self.compiled.state(), self.carry)
        state, self.carry = self.checkpointer.load_agent(header, like)
        self.compiled.set_state(state)
        self.checkpointer.load_replay(header, self.replay)
        self.scores.truncate(header["positions"]["scores"])
        self.logger.metrics.truncate(header["positions"]["metrics"])
        self.step = header["counters"]["step"]
        self.updates = header["counters"]["updates"]
        self.update_credit = header["counters"]["update_credit"]
        self.eval_round = header["counters"]["eval_round"]
        self.wall_time = header["counters"]["wall_time"]
        self.recent_scores = header["recent_scores"]
        self.next = {k: (math.inf if v is None else v) for k, v in header["next"].items()}
        self.accumulator.load(header["accumulator"])
        self.episodes = [Episode.from_json(e, self.envs.act_space) for e in header["episodes"]]
        for w, episode in enumerate(self.episodes):
            self.envs.request(w, "restore", (episode.seed, episode.actions))
        restored = self.envs.collect()
        for w, result in restored.items():
            if result.crashed:
                raise RunError(f"env worker {w} crashed while restoring its episode: {result.error.strip()}")
        self.obs = stack([restored[w].obs for w in range(self.envs.num_envs)])
        self.say(f"resumed at step {self.step} ({self.updates} updates)")

    def _train_loop(self) -> None:
        cfg = self.config
        total = cfg.run.steps
        progress = Progress(total, f"{self.agent_spec.name} {self.suite.name}/{self.task} seed {self.seed}",
                            cfg.logger.progress and not self.quiet and sys.stderr.isatty())  # fmt: skip
        start_time = time.time() - self.wall_time
        rate_time, rate_step, rate = time.time(), self.step, 0.0
        last_save_time = time.time()
        try:
            while self.step < total and not self._interrupted:
                self._policy_step()
                self.wall_time = time.time() - start_time
                if self.step >= self.next["eval"]:
                    self._evaluate(final=False)
                    self.next["eval"] += cfg.run.eval_every
                if self.step >= self.next["log"] or self.step >= total:  # the end logs its partial interval too
                    now = time.time()
                    rate = (self.step - rate_step) / max(now - rate_time, 1e-9)
                    rate_time, rate_step = now, self.step
                    self._log(rate)
                    progress.update(self.step, rate, self.recent_scores[-1] if self.recent_scores else None)
                    self.next["log"] = self.step + cfg.run.log_every
                if cfg.run.report_every > 0 and self.step >= self.next["report"] and self.step > 0:
                    self._report_media()
                    self.next["report"] = self.step + cfg.run.report_every
                due_time = time.time() - last_save_time > cfg.run.save_every_secs
                if self.step >= self.next["save"] or due_time or self._interrupted:
                    self._save_checkpoint()
                    last_save_time = time.time()
                    while self.next["save"] <= self.step:
                        self.next["save"] += cfg.run.save_every
            progress.update(self.step, rate, self.recent_scores[-1] if self.recent_scores else None)
        finally:
            progress.close()
        if self._interrupted:
            self.say(f"stopped at step {self.step}; run the same command again to resume")

    def _policy_step(self) -> None:
        n = self.envs.num_envs
        counters = (np.int32(self.step),)
        self.carry, action, extras = self.compiled.act(self.carry, self.obs, counters, KEY_ACT, "train")
        action, extras = jax.device_get((action, extras))
        stepped = 0
        for w in range(n):
            episode = self.episodes[w]
            if self.obs["is_last"][w]:
                episode.index += 1
                episode.seed = episode_seed(self.seed, "train", w, episode.index)
                episode.score, episode.length, episode.actions = 0.0, 0, []
                self.envs.request(w, "reset", episode.seed)
            else:
                single = {k: v[w] for k, v in action.items()}
                episode.actions.append(single)
                self.envs.request(w, "step", single)
                stepped += 1
        # While the workers step: store the transition, then train.
        stored = {k: v for k, v in self.obs.items() if not k.startswith(PRIVATE_PREFIX)}
        self.replay.add_batch({**stored, **action, **extras})
        self._train(stepped)
        collected = self.envs.collect()
        self.step += stepped
        observations = []
        for w in range(n):
            result = collected[w]
            episode = self.episodes[w]
            if result.crashed:
                self._record_episode(w, episode, {}, broken=True)
                self.say(f"env worker {w} crashed; episode {episode.index} recorded as broken, worker restarted")
                episode.index += 1
                episode.seed = episode_seed(self.seed, "train", w, episode.index)
                episode.score, episode.length, episode.actions = 0.0, 0, []
                self.envs.request(w, "reset", episode.seed)
                retry = self.envs.collect()[w]
                if retry.crashed:
                    raise RunError(f"env worker {w} crashed again right after a restart: {retry.error.strip()}")
                result = retry
            elif not result.obs["is_first"]:
                episode.score += float(result.obs["reward"])
                episode.length += 1
                if result.obs["is_last"]:
                    self._record_episode(w, episode, result.stats or {}, broken=False)
            observations.append(result.obs)
        self.obs = stack(observations)

    def _train(self, stepped: int) -> None:
        spec = self.stream
        if spec is None:
            return
        self.update_credit += stepped * self.config.run.train_ratio / (spec.batch * spec.length)
        if len(self.replay) < self.config.run.train_fill or not self.replay.ready(spec.total_length):
            self.update_credit = min(self.update_credit, 1.0)
            return
        while self.update_credit >= 1.0:
            self.update_credit -= 1.0
            batch, positions = self.replay.sample(spec.batch, spec.total_length)
            metrics, replay_updates = self.compiled.update(batch, np.int32(self.updates))
            metrics, replay_updates = jax.device_get((metrics, replay_updates))
            self.updates += 1
            bad = [k for k, v in metrics.items() if not np.all(np.isfinite(v))]
            if bad:
                raise NonFiniteError(
                    f"non-finite {', '.join(bad[:3])} at update {self.updates} (agent step {self.step}); "
                    f"stopped without saving the broken state; the last checkpoint in {self.folder / 'ckpt'} "
                    f"is intact (try a lower learning rate or check the inputs)"
                )
            self.accumulator.add(metrics)
            self.replay.write_back(positions, replay_updates)

    def _record_episode(self, worker, episode: Episode, stats: dict, *, broken: bool, mode="train",
                        eval_round=None, final=False) -> None:  # fmt: skip
        record = {
            "step": self.step,
            "frames": self.step * self.frames_per_step,
            "mode": mode,
            "worker": worker,
            "episode": episode.index,
            "return": episode.score,
            "length": episode.length,
            "broken": broken,
        }
        if mode == "eval":
            record.update({"eval_round": eval_round, "final": final})
        for key, value in stats.items():
            if key in record:
                raise RunError(f"episode stat {key!r} of suite {self.suite.name!r} clashes with a score field")
            record[key] = float(value)
        self.scores.write([record])
        if mode == "train" and not broken:
            self.recent_scores = (self.recent_scores + [episode.score])[-100:]
            self.accumulator.add({"episode/score": episode.score, "episode/length": episode.length})

    def _log(self, rate: float) -> None:
        values = self.accumulator.means()
        self.accumulator.reset()
        values.update({
            "perf/policy_steps_per_sec": rate,
            "replay/steps": len(self.replay),
            "train/updates": self.updates,
            "env/worker_restarts": self.envs.restarts,
        })  # fmt: skip
        self.logger.write(self.step, self.step * self.frames_per_step, values)

    # ------------------------------------------------------------------------------------- evaluation

    def _evaluate(self, *, final: bool) -> None:
        """One round of evaluation episodes (mode "eval") in separate env workers."""
        cfg = self.config
        episodes = cfg.run.eval_episodes or self.suite.eval_episodes
        protocol = getattr(cfg.env, "eval_protocol", self.suite.eval_protocol)
        if final and protocol != "final_eval" and not cfg.run.eval_episodes:
            return  # the protocol scores training episodes (train_window, crafter_score, success_rate)
        n = min(cfg.run.envs, episodes)
        if self.eval_envs is None or self.eval_envs.num_envs != n:
            if self.eval_envs is not None:
                self.eval_envs.close()
            self.eval_envs = VecEnv(self.suite_ref, self.task, cfg.env, n,
                                    max_restarts=cfg.run.max_worker_restarts)  # fmt: skip
        envs = self.eval_envs
        round_ = self.eval_round
        carry = self.agent.initial_carry(self.compiled.state(), n)
        started = 0
        running: dict[int, Episode] = {}
        for w in range(n):
            running[w] = Episode(index=started, seed=episode_seed(self.seed, "eval", round_, started))
            envs.request(w, "reset", running[w].seed)
            started += 1
        collected = envs.collect()
        obs = stack([collected[w].obs for w in range(n)])
        finished = 0
        returns = []
        t = 0
        while finished < episodes:
            counters = (np.int32(round_), np.int32(t))
            t += 1
            carry, action, _ = self.compiled.act(carry, obs, counters, KEY_EVAL, "eval")
            action = jax.device_get(action)
            for w, episode in running.items():
                envs.request(w, "step", {k: v[w] for k, v in action.items()})
            collected = envs.collect()
            new_obs = [None] * n
            for w in range(n):
                if w not in running:
                    new_obs[w] = {k: v[w] for k, v in obs.items()}
                    continue
                result, episode = collected[w], running[w]
                done = result.crashed or result.obs["is_last"]
                if not result.crashed:
                    episode.score += float(result.obs["reward"])
                    episode.length += 1
                if done:
                    self._record_episode(w, episode, (result.stats or {}) if not result.crashed else {},
                                         broken=result.crashed, mode="eval", eval_round=round_, final=final)  # fmt: skip
                    finished += 1
                    if not result.crashed:
                        returns.append(episode.score)
                    if started < episodes:
                        running[w] = Episode(index=started, seed=episode_seed(self.seed, "eval", round_, started))
                        envs.request(w, "reset", running[w].seed)
                        started += 1
                        result = envs.collect()[w]
                        if result.crashed:
                            raise RunError(f"eval env worker {w} crashed right after a restart: {result.error}")
                    else:
                        del running[w]
                        if result.obs is None:  # crashed and nothing left to run: keep a placeholder
                            result.obs = {k: v[w] for k, v in obs.items()}
                new_obs[w] = result.obs
            obs = stack(new_obs)
        self.eval_round += 1
        if returns:
            self.logger.write(self.step, self.step * self.frames_per_step, {
                "eval/score": float(np.mean(returns)), "eval/episodes": len(returns), "eval/final": float(final)})  # fmt: skip
        self.say(f"eval round {round_}{' (final)' if final else ''}: mean return "
                 f"{np.mean(returns) if returns else float('nan'):.3f} over {len(returns)} episodes")  # fmt: skip

    def _report_media(self) -> None:
        spec = self.stream
        if spec is None or not self.replay.ready(spec.total_length):
            return
        rng = np.random.default_rng([self.seed, self.step, 11])
        batch, _ = self.replay.sample(spec.batch, spec.total_length, rng=rng, online=False)
        report = jax.device_get(self.compiled.report(batch, np.int32(self.step)))
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
                    iio.imwrite(media / f"{safe}_{self.step:09d}.png", value)
                else:
                    iio.imwrite(media / f"{safe}_{self.step:09d}.gif", value, duration=100, loop=0)
        if scalars:
            self.logger.write(self.step, self.step * self.frames_per_step, scalars)

    # ---------------------------------------------------------------------------------------- saving

    def _save_checkpoint(self) -> None:
        self.scores.sync()
        self.logger.metrics.sync()
        header = {
            "counters": {
                "step": self.step,
                "updates": self.updates,
                "update_credit": self.update_credit,
                "eval_round": self.eval_round,
                "wall_time": self.wall_time,
            },
            "next": {k: (None if v == math.inf else v) for k, v in self.next.items()},
            "episodes": [e.to_json() for e in self.episodes],
            "positions": {"scores": self.scores.position(), "metrics": self.logger.metrics.position()},
            "accumulator": self.accumulator.state(),
            "recent_scores": self.recent_scores,
            "config_hash": self.config.hash(),
        }
        self.checkpointer.save(step=self.step, header=header, agent_tree=(self.compiled.state(), self.carry), replay=self.replay)
        self.manifest.update({
            "updated": results.now(), "wall_time": self.wall_time, "agent_steps": self.step,
            "env_frames": self.step * self.frames_per_step, "updates": self.updates,
        })  # fmt: skip
        results.atomic_write_json(self.folder / "manifest.json", self.manifest)

    def _end_segment(self, status: str) -> None:
        """"finished", or "stopped" (Ctrl-C: checkpoint saved; the same command resumes the run)."""
        self.manifest["status"] = status
        self.manifest["segments"][-1]["ended"] = self.manifest["updated"] = results.now()
        results.atomic_write_json(self.folder / "manifest.json", self.manifest)


__all__ = ["run", "resolve", "Trainer", "RunError", "NonFiniteError", "CheckpointError"]
