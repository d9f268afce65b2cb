"""Environment-side throughput: the runner against a bare loop, and each suite's raw and vectorised speed."""

from __future__ import annotations

import statistics
import tempfile
import time

import numpy as np

from bench import registry
from bench.envs import VecEnv
from bench.results import read_jsonl


def bare_loop(suite_name: str, task: str, protocol, num_envs: int, steps: int, seed: int = 0) -> float:
    """Steps/s of a plain loop over the same vectorised envs with random actions (no agent, no replay)."""
    rng = np.random.default_rng(seed)
    with VecEnv(suite_name, task, protocol, num_envs) as envs:
        results = envs.reset_all(range(num_envs))
        last = [results[w].obs["is_last"] for w in range(num_envs)]
        episode = num_envs
        done = 0
        start = time.perf_counter()
        while done < steps:
            actions = {k: s.sample(rng, (num_envs,)) for k, s in envs.act_space.items()}
            for w in range(num_envs):
                if last[w]:
                    envs.request(w, "reset", episode)
                    episode += 1
                else:
                    envs.request(w, "step", {k: v[w] for k, v in actions.items()})
                    done += 1
            results = envs.collect()
            last = [results[w].obs["is_last"] for w in range(num_envs)]
        return done / (time.perf_counter() - start)


def runner_rate(suite_name: str, task: str, num_envs: int, steps: int) -> float:
    """Policy steps/s of the runner with the random agent (median over its log intervals, startup excluded)."""
    from bench import runner

    with tempfile.TemporaryDirectory() as root:
        overrides = {
            "run.steps": str(steps),
            "run.envs": str(num_envs),
            "run.final_eval": "false",
            "run.log_every": str(max(steps // 5, num_envs)),
            "run.save_every": str(10**12),
            "run.save_every_secs": "1e9",
            "logger.progress": "false",
        }
        folder = runner.run("random", suite_name, task, overrides=overrides, root=root, quiet=True)
        rates = [r["perf/policy_steps_per_sec"] for r in read_jsonl(folder / "metrics.jsonl")[1:]]
    return statistics.median(rates)


def perf_runner(args) -> int:
    suite = registry.get_suite(args.suite)
    task = suite.resolve_task(args.task)
    protocol = suite.protocol_cls()
    bare, ours = [], []
    for _ in range(args.repeats):
        bare.append(bare_loop(suite.name, task, protocol, args.envs, args.steps))
        ours.append(runner_rate(suite.name, task, args.envs, args.steps))
    b, r = statistics.median(bare), statistics.median(ours)
    print(f"suite {suite.name}/{task}, {args.envs} env workers, {args.steps} agent steps, median of {args.repeats}")
    print(f"  bare loop (random actions):  {b:10.1f} steps/s   runs: {', '.join(f'{x:.0f}' for x in bare)}")
    print(f"  runner (random agent):       {r:10.1f} steps/s   runs: {', '.join(f'{x:.0f}' for x in ours)}")
    print(f"  runner / bare = {r / b:.3f}  (overhead {100 * (1 - r / b):.1f}%)")
    return 0


def perf_envs(args) -> int:
    names = args.suite or registry.suite_names()
    rng = np.random.default_rng(0)
    print(f"{'suite':12s} {'task':24s} {'single env steps/s':>20s} {f'{args.envs} workers steps/s':>20s} {'ratio':>7s}")
    for name in names:
        try:
            suite = registry.get_suite(name)
        except Exception as error:  # noqa: BLE001 - report every suite, broken ones too
            print(f"{name:12s} failed to load: {str(error).splitlines()[0]}")
            continue
        task = suite.tasks[0]
        protocol = suite.protocol_cls()
        env = suite.make_env(task, protocol, 0)
        obs = env.reset(seed=0)
        done, episode = 0, 1
        start = time.perf_counter()
        while done < args.steps:
            if obs["is_last"]:
                obs = env.reset(seed=episode)
                episode += 1
            else:
                obs = env.step({k: s.sample(rng) for k, s in env.act_space.items()})
                done += 1
        single = done / (time.perf_counter() - start)
        env.close()
        vectorised = bare_loop(suite.name, task, protocol, args.envs, args.steps)
        print(f"{name:12s} {task:24s} {single:20.1f} {vectorised:20.1f} {vectorised / single:7.2f}")
    return 0
