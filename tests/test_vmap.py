"""`--vmap`: several seeds in one process, each seed the same experiment as its separate run, in the same files.

Observed on this CPU: the episodes (scores.jsonl) of a vmapped seed equal its separate run's byte for byte;
losses and weights agree to float32 rounding (XLA sums the batched products in another order), so metrics and
checkpointed arrays are compared with a relative tolerance of 1e-4.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bench import cli, registry, runner
from bench import config as config_lib
from bench.api import AgentSpec
from bench.checkpoint import Checkpointer
from bench.perf_agent import _obs_batch, _synthetic_batch
from bench.sweep import Job, group_for_vmap
from bench.vmap_run import StackedAgent, seed_slice, stack_trees
from leaderboard import load
from leaderboard.load import LoadReport
from tests.helpers import TinyAgent, TinyConfig, convolution_group_counts
from tests.runs import bench
from tests.test_agent_contract import SMALL
from tests.test_resume import kill_at_random_point

TINY = ["--agent", "tests.helpers:TINY", "--suite", "toy", "--task", "reach", "--run.envs", "2",
        "--run.train_fill", "40", "--run.train_ratio", "16", "--run.eval_every", "100", "--run.eval_episodes", "2",
        "--run.log_every", "50", "--run.save_every", "60", "--quiet"]  # fmt: skip
TWO_STREAMS = ["--agent", "tests.helpers:TWO_STREAMS", "--suite", "toy", "--task", "reach", "--run.envs", "2",
               "--run.train_fill", "40", "--run.eval_episodes", "1", "--run.log_every", "50", "--quiet",
               "--slow_start", "100"]  # fmt: skip


def run_cli(*args) -> int:
    return cli.main([str(a) for a in args])


def seed_folders(root: Path) -> dict[int, Path]:
    return {int(p.parent.name[4:]): p.parent for p in Path(root).rglob("manifest.json")}


def metrics(folder: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("perf/")}
            for line in (folder / "metrics.jsonl").read_text().splitlines()]  # fmt: skip


def assert_same_run(vmapped: Path, separate: Path, args: list[str]) -> None:
    """Same files, same episodes, metrics and final agent state equal up to float32 summation order."""
    names = lambda f: sorted(p.name for p in f.iterdir() if p.name not in ("ckpt", ".lock"))  # noqa: E731
    assert names(vmapped) == names(separate)
    assert (vmapped / "config.yaml").read_text() == (separate / "config.yaml").read_text()
    assert (vmapped / "scores.jsonl").read_text() == (separate / "scores.jsonl").read_text()
    got, want = metrics(vmapped), metrics(separate)
    assert [sorted(r) for r in got] == [sorted(r) for r in want]
    for g, w in zip(got, want):
        np.testing.assert_allclose([g[k] for k in sorted(g)], [w[k] for k in sorted(w)], rtol=1e-3, atol=1e-4)
    assert_same_agent(vmapped, separate, args)


def assert_same_agent(vmapped: Path, separate: Path, args: list[str]) -> None:
    """The checkpointed agent state of the vmapped seed is its own, unstacked, and equals the separate run's."""
    like = shape_template(args, separate)
    loaded = []
    for folder in (vmapped, separate):
        checkpointer = Checkpointer(folder / "ckpt")
        loaded.append(checkpointer.load_agent(checkpointer.load_header(), like))  # refuses other shapes
    for a, b in zip(*(jax.tree.leaves(tree) for tree in loaded)):
        assert np.shape(a) == np.shape(b)
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-2, atol=1e-2)


def shape_template(args: list[str], folder: Path):
    """(agent state, policy carry) of a fresh agent of the run's config: the shapes its checkpoint holds."""
    parsed, extra = cli.build_parser().parse_known_args(["run", *map(str, args)])
    overrides = config_lib.parse_overrides(extra)
    overrides["run.steps"] = str(int(parsed.steps))
    resolved = runner.resolve(parsed.agent, parsed.suite, parsed.task, parsed.configs, overrides)
    run = runner.Run(resolved, 0, folder, quiet=True, command="")
    try:
        state = run.agent.init(key=jax.random.PRNGKey(0))
        return state, run.agent.initial_carry(state, resolved.config.run.envs)
    finally:
        run._close()


# ------------------------------------------------------------------------------------- equality, files


@pytest.mark.parametrize("agent", ["tiny", "two_streams"])
def test_vmapped_seeds_equal_separate_runs_in_the_same_files(agent, tmp_path):
    args = {"tiny": TINY, "two_streams": TWO_STREAMS}[agent] + ["--steps", "160"]
    assert run_cli("run", *args, "--seeds", "0,1", "--vmap", "--logdir", tmp_path / "vmap") == 0
    assert run_cli("run", *args, "--seed", "1", "--logdir", tmp_path / "separate") == 0
    vmapped, separate = seed_folders(tmp_path / "vmap"), seed_folders(tmp_path / "separate")
    assert sorted(vmapped) == [0, 1]
    assert vmapped[1].relative_to(tmp_path / "vmap") == separate[1].relative_to(tmp_path / "separate")  # same hash
    assert_same_run(vmapped[1], separate[1], args)
    for seed in (0, 1):
        segment = json.loads((vmapped[seed] / "manifest.json").read_text())["segments"][-1]
        assert segment["vmap"] is True and segment["vmap_seeds"] == [0, 1]
    # the seeds really differ (each folds its own keys), and the leaderboard reads both as runs
    assert (vmapped[0] / "scores.jsonl").read_text() != (vmapped[1] / "scores.jsonl").read_text()
    report = LoadReport()
    methods = load.load_runs([tmp_path / "vmap"], load.suite_info("toy"), report, any_budget=True)
    assert [m.runs_per_task() for m in methods] == [{"reach": 2}], report
    # finished seeds are skipped; a group with one unfinished seed runs it alone, as a separate run
    vmapped_seed0 = (vmapped[0] / "scores.jsonl").read_text()
    shutil.rmtree(vmapped[0])
    before = (vmapped[1] / "scores.jsonl").read_text()
    assert run_cli("run", *args, "--seeds", "0,1", "--vmap", "--logdir", tmp_path / "vmap") == 0
    assert (vmapped[1] / "scores.jsonl").read_text() == before
    assert (vmapped[0] / "scores.jsonl").read_text() == vmapped_seed0  # seed 0 run alone equals vmapped seed 0
    assert "vmap" not in json.loads((vmapped[0] / "manifest.json").read_text())["segments"][-1]


# ------------------------------------------------------------------------------------------- resume


@pytest.mark.slow  # two group runs in subprocesses: ~70 s of CPU, minutes on a loaded machine
def test_sigkilled_group_resumes_and_equals_an_uninterrupted_group(tmp_path):
    args = TINY + ["--steps", "400", "--seeds", "0,1", "--vmap"]
    bench("run", *args, root=tmp_path / "straight")
    target = kill_at_random_point(args, tmp_path / "killed", random.Random(5), 400)
    bench("run", *args, root=tmp_path / "killed")
    straight, resumed = seed_folders(tmp_path / "straight"), seed_folders(tmp_path / "killed")
    for seed in (0, 1):
        manifest = json.loads((resumed[seed] / "manifest.json").read_text())
        assert manifest["status"] == "finished"
        starts = [s["resumed_from_step"] for s in manifest["segments"]]
        assert starts[0] is None and starts[1] >= target - 60  # resumed from its own checkpoint, mid-run
        assert (resumed[seed] / "scores.jsonl").read_text() == (straight[seed] / "scores.jsonl").read_text()
        assert metrics(resumed[seed]) == metrics(straight[seed])  # the same group on the same CPU: exact


@pytest.mark.slow  # five runs
def test_seeds_resume_from_checkpoints_at_different_steps(tmp_path):
    """Seed 1 was killed mid-run as a separate run; the group resumes it from its step while seeds 0 and 2 start
    fresh, and every seed still equals its uninterrupted separate run."""
    args = TINY + ["--steps", "300"]
    kill_at_random_point(args + ["--seed", "1"], tmp_path / "vmap", random.Random(1), 300)
    killed_at = Checkpointer(seed_folders(tmp_path / "vmap")[1] / "ckpt").load_header()["step"]
    assert killed_at > 0
    assert run_cli("run", *args, "--seeds", "0:3", "--vmap", "--logdir", tmp_path / "vmap") == 0
    for seed in (0, 1, 2):
        assert run_cli("run", *args, "--seed", seed, "--logdir", tmp_path / "separate") == 0
    vmapped, separate = seed_folders(tmp_path / "vmap"), seed_folders(tmp_path / "separate")
    segments = json.loads((vmapped[1] / "manifest.json").read_text())["segments"]
    assert [s["resumed_from_step"] for s in segments] == [None, killed_at] and "vmap" not in segments[0]
    for seed in (0, 1, 2):
        assert (vmapped[seed] / "scores.jsonl").read_text() == (separate[seed] / "scores.jsonl").read_text()


# ------------------------------------------------------------------------------------------- errors


def test_vmap_flag_errors_are_one_line(tmp_path, capsys):
    cases = [
        (["--seeds", "0:2", "--vmap", "--executor", "ray"], "--vmap runs a task's seeds in one local process"),
        (["--seed", "3", "--vmap"], "--vmap stacks several seeds in one process: give --seeds"),
        (["--seeds", "0:2", "--vmap", "--run.offline", "true", "--replay.load", str(tmp_path)],
         "--vmap runs online runs"),
    ]  # fmt: skip
    for extra, message in cases:
        assert run_cli("run", *TINY, "--steps", "50", *extra, "--logdir", tmp_path / "runs") != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("bench: error: ") and message in err[0], err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("manifest.json"))


class NanWhenPositive(eqx.Module):
    """TINY whose loss is NaN in the seeds whose init key draws a positive normal (a seed-dependent NaN)."""

    tiny: TinyAgent

    def init(self, *, key):  # `shadow` is a float TINY's loss never reads: here it holds the draw
        return eqx.tree_at(lambda s: s.shadow, self.tiny.init(key=key), jax.random.normal(key, ()))

    def initial_carry(self, state, batch_size):
        return self.tiny.initial_carry(state, batch_size)

    def act(self, state, carry, obs, *, key, mode):
        return self.tiny.act(state, carry, obs, key=key, mode=mode)

    def update(self, state, stream, batch, *, key):
        new_state, metrics, replay_updates = self.tiny.update(state, stream, batch, key=key)
        metrics["loss"] = jnp.where(state.shadow > 0, jnp.nan, metrics["loss"])
        return new_state, metrics, replay_updates

    def report(self, state, batch, *, key):
        return self.tiny.report(state, batch, key=key)

    def streams(self):
        return self.tiny.streams()


NAN_ONE_SEED = AgentSpec("nan_one_seed", TinyConfig,
                         lambda config, obs, act: NanWhenPositive(TinyAgent(config, dict(obs), dict(act))),
                         description="test agent: NaN loss in some seeds")  # fmt: skip


def test_a_nan_in_one_seed_fails_that_seed_and_the_others_finish(tmp_path, capsys):
    draw = lambda seed: float(jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(seed), runner.KEY_INIT), ()))  # noqa: E731
    seeds = list(range(8))
    bad = [s for s in seeds if draw(s) > 0][0]
    good = [s for s in seeds if draw(s) <= 0][0]
    args = [a if a != "tests.helpers:TINY" else "tests.test_vmap:NAN_ONE_SEED" for a in TINY]
    code = run_cli("run", *args, "--steps", "150", "--seeds", f"{good},{bad}", "--vmap", "--logdir", tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith(f"bench: error: seed {bad}: non-finite loss at update 1 of stream"), err
    folders = seed_folders(tmp_path)
    assert json.loads((folders[good] / "manifest.json").read_text())["status"] == "finished"
    assert json.loads((folders[bad] / "manifest.json").read_text())["status"] == "running"  # failed: resumable


# ---------------------------------------------------------------------------------------- plan grouping


def test_plan_runs_are_grouped_by_agent_configs_task_for_vmap():
    job = lambda task, seed, configs=("debug",), overrides=(): Job("dreamerv3", "toy", task, seed, configs, overrides)  # noqa: E731
    jobs = [job("reach", 0), job("reach", 1), job("point", 0), job("reach", 2), job("reach", 3, ("debug", "quick")),
            job("point", 1, overrides=(("run.envs", "2"),))]  # fmt: skip
    grouped = group_for_vmap(jobs)
    assert [(j.task, j.seed, j.vmap_seeds, j.configs) for j in grouped] == [
        ("reach", 0, (0, 1, 2), ("debug",)), ("point", 0, (), ("debug",)), ("reach", 3, (), ("debug", "quick")),
        ("point", 1, (), ("debug",))]  # fmt: skip
    argv = grouped[0].argv()
    assert argv[argv.index("--seeds") + 1] == "0,1,2" and "--vmap" in argv and "--seed" not in argv


# ------------------------------------------------------------------------------ one step, every agent


def build_agent(name: str):
    """The agent at its `debug` preset (where it has one) on toy reach, shrunk like the contract test's."""
    from tasks import toy

    spec = registry.get_agent(name)
    presets = ["debug"] if "debug" in registry.agent_presets(spec) else []
    config = registry.build_config(spec, toy.SUITE, presets, task="reach")
    valid = set(config_lib.valid_user_keys(config))
    config = config_lib.apply(config, {k: v for k, v in SMALL.items() if k in valid})
    env = toy.make_env("reach", config.env)
    return spec.make(config.agent, env.obs_space, env.act_space)


def close(a, b, what: str, atol: float = 1e-5) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape, what
        if x.dtype == bool or np.issubdtype(x.dtype, np.integer):
            np.testing.assert_array_equal(x, y, err_msg=what)
        else:
            np.testing.assert_allclose(x.astype(np.float64), y.astype(np.float64), rtol=1e-4, atol=atol, err_msg=what)


def without_noise_moments(a, b):
    """(a, b) with LaProp's first moment (agents/common/optim.py: `[1].ema`) zeroed where the second moment
    (`[0].nu`) is 0 in either. nu is 0 only where (1 - beta2) g^2 flushed to zero, so |g| < 4e-18: a gradient
    that is zero in exact math (an unused parameter, or attention's key bias, which the softmax ignores: TSSM's
    differed here) plus rounding noise, and g / (sqrt(nu) + 1e-20) is then an O(1) number that depends on the
    summation order. The parameters themselves are compared everywhere."""
    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(a)[0]]
    leaves_a, structure = jax.tree.flatten(a)
    leaves_b = jax.tree.leaves(b)
    index = {path: k for k, path in enumerate(paths)}
    leaves_a, leaves_b = [np.asarray(x) for x in leaves_a], [np.asarray(x) for x in leaves_b]
    for k, path in enumerate(paths):
        nu = index.get(path[: -len("[1].ema")] + "[0].nu") if path.endswith("[1].ema") else None
        if nu is not None and leaves_a[nu].shape == leaves_a[k].shape:
            noise = (leaves_a[nu] == 0) | (leaves_b[nu] == 0)
            leaves_a[k], leaves_b[k] = np.where(noise, 0, leaves_a[k]), np.where(noise, 0, leaves_b[k])
    return jax.tree.unflatten(structure, leaves_a), jax.tree.unflatten(structure, leaves_b)


def check_one_step(name: str, seeds=(3, 8)) -> None:
    """One stacked act and one stacked update per stream equal each seed's own (seed k gets its own key, state
    and batch); a masked-off seed keeps its state; no convolution of the stacked update is grouped."""
    agent = build_agent(name)
    rng = np.random.default_rng(0)
    compiled = []
    for seed in seeds:
        key = jax.random.PRNGKey(seed)
        one = runner.CompiledAgent(agent, key)
        one.set_state(agent.init(key=jax.random.fold_in(key, runner.KEY_INIT)))
        compiled.append(one)
    stacked = StackedAgent(compiled, [jax.random.PRNGKey(seed) for seed in seeds])
    envs = 2
    obs = [_obs_batch(agent.obs_space, envs, rng) for _ in seeds]
    counters = np.array([5, 9], np.int32)
    carry, action, extras = stacked.act(stack_trees([c.initial_carry(envs) for c in compiled]), stack_trees(obs),
                                        (counters,), runner.KEY_ACT, "train")  # fmt: skip
    extras = jax.device_get(extras)
    for k, one in enumerate(compiled):
        want = one.act(one.initial_carry(envs), obs[k], (counters[k],), runner.KEY_ACT, "train")
        close((seed_slice(jax.device_get(carry), k), seed_slice(jax.device_get(action), k)), want[:2], f"{name} act")
    for stream, spec in agent.streams().items():
        batches = [_synthetic_batch(agent.obs_space, agent.act_space, seed_slice(extras, k), spec, rng)
                   for k in range(len(seeds))]  # fmt: skip
        updates = np.array([2, 7], np.int32)
        lowered = stacked.jitted_update.lower(stacked.dynamic, stacked.keys, stack_trees(batches), updates,
                                              np.array([True, True]), stream=stream)  # fmt: skip
        assert convolution_group_counts(lowered.as_text()) <= {1}, f"{name} {stream}: grouped convolutions"
        metrics, _ = stacked.update(stream, stack_trees(batches), updates, np.array([True, True]))
        for k, one in enumerate(compiled):
            want_metrics, _ = one.update(stream, batches[k], updates[k])
            close(seed_slice(jax.device_get(metrics), k), want_metrics, f"{name} {stream} metrics")
            # Adam's first step moves every parameter by about lr whatever its gradient's size: a near-zero
            # gradient whose sign depends on the summation order moves by up to 2 lr (seen: 1e-3 in IRIS)
            close(*without_noise_moments(jax.device_get(stacked.seed_dynamic(k)), jax.device_get(one.dynamic)),
                  f"{name} {stream} state", atol=2e-3)
    before = jax.device_get(stacked.seed_dynamic(1))
    stacked.update(stream, stack_trees(batches), updates + 1, np.array([True, False]))
    close(jax.device_get(stacked.seed_dynamic(1)), before, f"{name} {stream}: the masked-off seed changed")


@pytest.mark.parametrize("name", ["tests.helpers:TINY", "tests.helpers:TWO_STREAMS"])
def test_one_stacked_step_equals_each_seeds_own(name):
    check_one_step(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dreamerv3", "hieros", "iris", "thick", "vsg", "svsg", "p2e", "tssm"])
def test_one_stacked_step_equals_each_seeds_own_for_every_agent(name):
    check_one_step(name)


def test_plan_with_vmap_runs_each_groups_seeds_in_one_process(tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("name: vmapped\nsuite: toy\ntasks: [reach]\nseeds: \"0:2\"\nsteps: 80\n"
                    "settings: {run.eval_episodes: 1, run.train_fill: 40}\nagents:\n  - agent: tests.helpers:TINY\n")  # fmt: skip
    done = bench("run", "--plan", plan, "--vmap", "--logdir", tmp_path / "runs", root=tmp_path)
    assert "seeds0,1 (vmap): ok" in done.stderr
    folders = seed_folders(tmp_path / "runs")
    for seed in (0, 1):
        manifest = json.loads((folders[seed] / "manifest.json").read_text())
        assert manifest["status"] == "finished" and manifest["segments"][-1]["vmap_seeds"] == [0, 1]
    again = bench("run", "--plan", plan, "--vmap", "--logdir", tmp_path / "runs", root=tmp_path)
    assert "2 finished, 0 to run" in again.stderr
