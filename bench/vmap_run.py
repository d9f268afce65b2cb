"""Several seeds of one (agent, config, task) in one process: `bench run --seeds 0:5 --vmap`.

Small models leave an accelerator mostly idle; stacking the seeds' agent states along a leading seed axis and
mapping `act` and each stream's `update` over it with `jax.vmap` runs every seed in one call (one compilation
for all seeds). Everything else stays per seed: each seed is a `bench.runner.Run` with its own env workers,
replay tables, `RunState`, lock and run folder, written exactly as a separate run writes it (the config hash
and folder do not depend on `--vmap`; each manifest segment records `vmap: true` and the group's seeds). The
group drives the seeds' runs in lockstep, one policy step of all of them per iteration:

    stacked act (vmapped) --> each seed: send its actions, store its transition
        --> the due updates: stacked update (vmapped) per stream and round --> each seed: book its update
        --> each seed: collect observations, then its own evaluation / metrics / report / checkpoint.

Each seed's keys come from its own run seed exactly as in a separate run (the per-seed base keys are stacked
and folded with that seed's own counters), so a vmapped seed is the same experiment as its separate run, up to
the order in which XLA sums batched products.

Seeds need not be in step. A reset step is not counted as an agent step, so seeds whose episodes end at
different times reach different step counts, and a table written by `act` (Hieros' levels) may be ready
earlier in one seed than another: the due updates are each seed's own. The group runs a stream's update round
for the seeds it is due for and keeps the others' state (a mask), so every seed follows exactly its own
schedule. The same rule resumes a group whose checkpoints are at different steps (a SIGKILL between two seeds'
saves): every seed continues from its own checkpoint; a seed that reaches its budget first finishes (final
evaluation, manifest "finished") and sits out the group's remaining steps.

A non-finite update or state fails that seed alone (its usual one-line `NonFiniteError`, its last checkpoint
intact); the other seeds continue, and `run_group` reports each failure. Evaluation episodes and reports run per
seed with the seed's own (unstacked) state through one un-mapped compilation shared by the seeds.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bench import config as config_lib
from bench import results, stop_signals
from bench.envs import stack
from bench.logging import Progress
from bench.runner import (KEY_ACT, Clock, CompiledAgent, NonFiniteError, Resolved, Run, RunError,
                          RunLock, RunStopped, _check_folder, run_folder)  # fmt: skip


def stack_trees(trees: list):
    """Stack pytrees of equal structure along a new leading (seed) axis."""
    return jax.tree.map(lambda *leaves: np.stack(leaves) if isinstance(leaves[0], np.ndarray) else jnp.stack(leaves),
                        *trees)  # fmt: skip


def seed_slice(tree, index: int):
    """Seed `index`'s part of a host (numpy) pytree stacked by `stack_trees`."""
    return jax.tree.map(lambda x: x[index], tree)


class StackedAgent:
    """The seeds' agent states stacked along axis 0, with `act` and each stream's `update` vmapped over it.

    Built from the seeds' `CompiledAgent`s after each was initialised or restored; their non-array parts must be
    the same (the same agent and config). `update` takes a mask: a seed whose mask is False keeps its state (the
    update was not due for it). Evaluation and reports use one seed's slice with the un-mapped functions.
    """

    def __init__(self, compiled: list[CompiledAgent], base_keys: list):
        base = compiled[0]
        structure = jax.tree_util.tree_structure(base.static)
        for seed_agent in compiled[1:]:
            if jax.tree_util.tree_structure(seed_agent.static) != structure:
                raise RunError("--vmap: the seeds' agents differ in their non-array parts; they cannot be stacked")
        self.agent = base.agent
        self.static = base.static
        self.keys = jnp.stack(base_keys)
        self.dynamic = stack_trees([c.dynamic for c in compiled])
        self.size = len(compiled)
        self.version = 0  # bumped by every update: invalidates the seeds' cached slices

        def act(dynamic, keys, carry, obs, counters, purpose, mode):
            one = lambda d, k, c, o, n: base.keyed_act(d, k, c, o, n, purpose, mode)  # noqa: E731
            return jax.vmap(one)(dynamic, keys, carry, obs, counters)

        def update(dynamic, keys, batch, counters, mask, stream):
            one = lambda d, k, b, n: base.keyed_update(d, k, b, n, stream)  # noqa: E731
            new, metrics, replay_updates = jax.vmap(one)(dynamic, keys, batch, counters)
            keep = lambda x, old: jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - 1)), x, old)  # noqa: E731
            return jax.tree.map(keep, new, dynamic), metrics, replay_updates

        self._act = jax.jit(act, static_argnames=("purpose", "mode"), donate_argnums=(2,))
        self.jitted_update = self._update = jax.jit(update, static_argnames=("stream",), donate_argnums=(0,))
        self._finite = jax.jit(jax.vmap(base.all_finite))
        self._slice = jax.jit(lambda tree, index: jax.tree.map(lambda x: x[index], tree))
        self._unstack = jax.jit(lambda tree: [jax.tree.map(lambda x: x[k], tree) for k in range(self.size)])
        self.single_act = jax.jit(base.keyed_act, static_argnames=("purpose", "mode"), donate_argnums=(2,))
        self.single_report = jax.jit(base.keyed_report)

    def act(self, carry, obs, counters, purpose: int, mode: str):
        return self._act(self.dynamic, self.keys, carry, obs, counters, purpose, mode)

    def update(self, stream: str, batch, counters, mask):
        self.dynamic, metrics, replay_updates = self._update(self.dynamic, self.keys, batch, counters, mask, stream)
        self.version += 1
        return metrics, replay_updates

    def unstack(self, tree) -> list:
        return self._unstack(tree)

    def seed_dynamic(self, index: int):
        return self._slice(self.dynamic, np.int32(index))

    def finite(self) -> np.ndarray:
        return np.asarray(self._finite(self.dynamic))


class SeedAgent:
    """One seed's view of a `StackedAgent`: what its `Run` calls outside the lockstep policy step and training
    (evaluation, reports, checkpoints), with that seed's own state slice and base key."""

    def __init__(self, stacked: StackedAgent, index: int):
        self.stacked = stacked
        self.index = index
        self.key = stacked.keys[index]
        self._cached = (-1, None)  # (stacked version, this seed's state slice)

    @property
    def dynamic(self):
        version, dynamic = self._cached
        if version != self.stacked.version:
            self._cached = (self.stacked.version, self.stacked.seed_dynamic(self.index))
        return self._cached[1]

    def state(self):
        import equinox as eqx

        return eqx.combine(self.dynamic, self.stacked.static)

    def initial_carry(self, batch_size: int):
        return self.stacked.agent.initial_carry(self.state(), batch_size)

    def act(self, carry, obs, counters, purpose: int, mode: str):
        return self.stacked.single_act(self.dynamic, self.key, carry, obs, counters, purpose, mode)

    def report(self, batch, counter):
        return self.stacked.single_report(self.dynamic, self.key, batch, counter)

    def state_is_finite(self) -> bool:
        return bool(self.stacked.finite()[self.index])


# ---------------------------------------------------------------------------------------------- the group


def run_group(resolved: Resolved, seeds: list[int], *, root=None, quiet: bool = False, command: str = "",
              restart: bool = False) -> dict[int, Path | str]:  # fmt: skip
    """Run (or resume, or skip if finished) the runs of `seeds` in one process, their agents vmapped.

    Returns each seed's folder, or the one-line error that failed that seed (the others went on). Raises
    `RunStopped` when a signal stopped the group (each unfinished seed saved a checkpoint).
    """
    if resolved.config.run.offline:
        raise RunError("--vmap runs online runs; run offline (run.offline) runs one seed at a time")
    if resolved.config.run.batch_shards > 1:
        raise RunError("--vmap stacks seeds on one device; run.batch_shards > 1 runs one seed at a time")
    root = root or results.default_root()
    outcome: dict[int, Path | str] = {}
    with contextlib.ExitStack() as locks:
        todo = []
        for seed in seeds:
            folder = run_folder(resolved, seed, root)
            folder.mkdir(parents=True, exist_ok=True)
            locks.enter_context(RunLock(folder, command))
            if results.is_finished(folder):
                if not quiet:
                    print(f"already finished: {folder}", file=sys.stderr, flush=True)
                outcome[seed] = folder
                continue
            header = _check_folder(folder, resolved.config, restart)
            if not (folder / "config.yaml").exists():
                results.atomic_write_text(folder / "config.yaml", config_lib.dump_yaml(resolved.config))
            todo.append((seed, folder, header))
        if len(todo) == 1:  # a group of one is a plain run
            seed, folder, header = todo[0]
            outcome[seed] = Run(resolved, seed, folder, quiet=quiet, command=command).execute(header)
        elif todo:
            outcome.update(Group(resolved, todo, quiet=quiet, command=command).execute())
    return {seed: outcome[seed] for seed in seeds}


class Group:
    """The runs of several seeds driven in lockstep with one `StackedAgent` (see the module docstring)."""

    def __init__(self, resolved: Resolved, todo: list[tuple[int, Path, dict | None]], *, quiet: bool, command: str):
        self.resolved = resolved
        self.seeds = [seed for seed, _, _ in todo]
        self.headers = [header for _, _, header in todo]
        self.quiet = quiet
        self.runs: list[Run] = []
        try:
            for seed, folder, _ in todo:
                self.runs.append(Run(resolved, seed, folder, quiet=quiet, command=command))
                self.runs[-1].label = f"seed {seed}: "
        except BaseException:
            for run in self.runs:  # the env workers already started
                run._close()
            raise
        self.streams = list(self.runs[0].streams)
        self.failed: dict[int, str] = {}  # run index -> its one-line error
        self.stop_requested = False

    def say(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)

    def _on_stop_signal(self, signum, _frame):
        if self.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop_requested = True
        for run in self.runs:
            run.stop_requested = True
        print(f"\n{signal.Signals(signum).name}: saving the seeds' checkpoints, then stopping "
              "(press Ctrl-C again to stop at once)", file=sys.stderr)  # fmt: skip

    def _fail(self, index: int, error: NonFiniteError) -> None:
        self.failed[index] = str(error)
        self.say(f"seed {self.seeds[index]} failed: {error}")

    def execute(self) -> dict[int, Path | str]:
        cfg = self.resolved.config
        runs = self.runs
        handlers = stop_signals.install(self._on_stop_signal)
        try:
            for run, header in zip(runs, self.headers):
                run._start(header)
                run.manifest["segments"][-1].update({"vmap": True, "vmap_seeds": self.seeds})
                results.atomic_write_json(run.folder / "manifest.json", run.manifest)
            self.stacked = StackedAgent([run.compiled for run in runs], [run.base_key for run in runs])
            for index, run in enumerate(runs):
                run.compiled = SeedAgent(self.stacked, index)  # the run's own calls now read its slice
            carry = stack_trees([run.carry for run in runs])
            clocks = [Clock(run.state.wall_time, run.state.step) for run in runs]
            quiet_progress = Progress(0, "", False)
            active = list(range(len(runs)))
            description = f"{self.resolved.agent_spec.name} {self.resolved.suite_spec.name}/{self.resolved.task} " \
                          f"seeds {','.join(map(str, self.seeds))} (vmap)"  # fmt: skip
            progress = Progress(cfg.run.steps, description, cfg.logger.progress and not self.quiet and sys.stderr.isatty())
            with progress:
                while not self.stop_requested:
                    active = self._finish_done(active)
                    if not active:
                        break
                    carry = self._policy_step(active, carry)
                    carries = self.stacked.unstack(carry)
                    for index in list(active):
                        runs[index].carry = carries[index]  # what its checkpoint saves
                        try:
                            runs[index]._periodic(clocks[index], quiet_progress)
                        except NonFiniteError as error:
                            self._fail(index, error)
                            active.remove(index)
                    if active:
                        rate = sum(clock.last_rate for clock in clocks)
                        progress.update(min(runs[i].state.step for i in active), rate, None)
            if self.stop_requested and active:  # each active seed saved a checkpoint in its `_periodic`
                for index in active:
                    runs[index]._end_segment("stopped")
                raise RunStopped(runs[active[0]].folder, min(runs[i].state.step for i in active))
            return {run.seed: self.failed.get(index, run.folder) for index, run in enumerate(runs)}
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            for run in runs:
                run._close()

    def _finish_done(self, active: list[int]) -> list[int]:
        """Finish the seeds that reached the budget (final evaluation, last checkpoint); return the others."""
        left = []
        for index in active:
            run = self.runs[index]
            if run.state.step < self.resolved.config.run.steps:
                left.append(index)
                continue
            try:
                run._finish()
            except NonFiniteError as error:
                self._fail(index, error)
        return left

    def _policy_step(self, active: list[int], carry):
        """One policy step of every active seed: stacked act, each seed's send/store, the due updates, receive."""
        runs = self.runs
        obs = [run.rollout.obs for run in runs]  # a seed that sits out acts on its last observation (discarded)
        counters = (np.array([run.state.step for run in runs], np.int32),)
        carry, action, extras = self.stacked.act(carry, stack_trees(obs), counters, KEY_ACT, "train")
        action, extras = jax.device_get((action, extras))
        stepped = {k: runs[k]._send(obs[k], seed_slice(action, k), seed_slice(extras, k)) for k in active}
        due = {k: runs[k]._due_updates(policy_steps=runs[k].envs.num_envs) for k in active}
        self._train(active, due)
        for k in list(active):
            runs[k]._receive(stepped[k])
        return carry

    def _train(self, active: list[int], due: dict[int, list[str]]) -> None:
        """Each stream's due updates, in rounds: round i updates the seeds with more than i updates due (in the
        order a separate run does them); the others keep their state and their slot gets a filler batch."""
        runs = self.runs
        for name in self.streams:
            counts = {k: due[k].count(name) for k in active}
            for round_ in range(max(counts.values(), default=0)):
                members = [k for k in active if counts[k] > round_]
                if not members:
                    break
                samples = {k: runs[k]._sample(name) for k in members}
                filler = samples[members[0]][0]
                batch = stack_trees([samples[k][0] if k in samples else filler for k in range(len(runs))])
                counters = np.array([run.state.updates[name] for run in runs], np.int32)
                mask = np.array([k in samples for k in range(len(runs))])
                metrics, replay_updates = jax.device_get(self.stacked.update(name, batch, counters, mask))
                for k in members:
                    try:
                        runs[k]._updated(name, samples[k][1], seed_slice(metrics, k), seed_slice(replay_updates, k))
                    except NonFiniteError as error:
                        self._fail(k, error)
                        active.remove(k)

