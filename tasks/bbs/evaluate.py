"""Measure a BringBackShapes policy and the environment's speed.

    python -m tasks.bbs.evaluate --policy scripted --episodes 20
    python -m tasks.bbs.evaluate --policy random --episodes 20 --task distract2_size1.0
    python -m tasks.bbs.evaluate --policy random --episodes 3 --profile   # cProfile of the env's hot spots
    python -m tasks.bbs.evaluate --policy random --episodes 5 --exact-pixels   # the slow reference renderer

Episode i uses seed `--seed + i`. Speed counts env time only (reset + step, policy excluded), as wall-clock
and as the CPU time of the env's thread (steadier on a shared machine).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import numpy as np

from tasks.bbs.env import BBSProtocol, BringBackShapes
from tasks.bbs.suite import SUITE, protocol_for_task


def make_policy(name: str, env):
    """A function (obs, episode seed) -> action dict for one environment."""
    if name == "random":

        def random_policy(obs, rngs: dict):
            return {"action": rngs["rng"].uniform(-1.0, 1.0, 2).astype(np.float32)}

        return random_policy
    if name == "scripted":
        import jax

        from tasks.bbs.scripted import SPEC, ScriptedConfig

        agent = SPEC.make(ScriptedConfig(), env.obs_space, env.act_space)
        key = jax.random.PRNGKey(0)  # unused by the scripted policy
        act = jax.jit(lambda priv: agent.act({}, {}, {"priv_state": priv}, key=key, mode="eval")[1]["action"])

        def scripted_policy(obs, rngs: dict):
            return {"action": np.asarray(act(obs["priv_state"][None]))[0]}

        return scripted_policy
    raise ValueError(f"unknown policy {name!r}: use 'scripted' or 'random'")


def run_episodes(env, policy, seeds) -> tuple[list[dict], dict]:
    """Play one episode per seed; return per-episode stats and the env's totals (wall s, cpu s, frames)."""
    results, totals = [], {"wall": 0.0, "cpu": 0.0, "frames": 0}

    def timed(function, *args, **kwargs):
        wall, cpu = time.perf_counter(), time.thread_time()
        value = function(*args, **kwargs)
        totals["wall"] += time.perf_counter() - wall
        totals["cpu"] += time.thread_time() - cpu
        return value

    for seed in seeds:
        rngs = {"rng": np.random.default_rng([seed, 1])}  # policy randomness, separate from the env's
        obs = timed(env.reset, seed=seed)
        total, steps = 0.0, 0
        while not obs["is_last"]:
            obs = timed(env.step, policy(obs, rngs))
            total += float(obs["reward"])
            steps += 1
        totals["frames"] += env.frames
        results.append({"seed": seed, "return": total, "steps": steps, "terminal": bool(obs["is_terminal"])}
                       | env.episode_stats())
    return results, totals


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.bbs.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--policy", choices=("scripted", "random"), default="scripted")
    parser.add_argument("--task", default="distract0_size1.0", help=f"one of: {', '.join(SUITE.tasks)}")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    parser.add_argument("--profile", action="store_true", help="print the env's top functions by own time")
    parser.add_argument("--verbose", action="store_true", help="print every episode")
    parser.add_argument("--exact-pixels", action="store_true", help="draw the whole crop (slow reference)")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")

    env = BringBackShapes(protocol_for_task(SUITE.resolve_task(args.task), BBSProtocol()),
                          exact_pixels=args.exact_pixels)
    policy = make_policy(args.policy, env)
    seeds = range(args.seed, args.seed + args.episodes)
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    results, totals = run_episodes(env, policy, seeds)
    if profiler:
        profiler.disable()

    returns = np.array([r["return"] for r in results])
    if args.verbose:
        for r in results:
            print(r)
    print(f"task {args.task}, policy {args.policy}, {len(results)} episodes "
          f"(seeds {seeds.start}..{seeds.stop - 1})")
    print(f"return: mean {returns.mean():.2f} +- {returns.std():.2f} (std), min {returns.min():.0f}, max "
          f"{returns.max():.0f}; episodes with return 0: {int((returns == 0).sum())}/{len(returns)}; "
          f"all returned: {sum(r['terminal'] for r in results)}/{len(results)}")
    print(f"score (objects returned / objects): mean {np.mean([r['score'] for r in results]):.3f}")
    frames = totals["frames"]
    wall, cpu = totals["wall"], totals["cpu"]
    print(f"env speed over {frames} frames (policy excluded): wall {frames / wall:,.0f} frames/s "
          f"({wall / frames * 3000:.3f} s per 3000 frames), thread cpu {frames / cpu:,.0f} frames/s "
          f"({cpu / frames * 3000:.3f} s per 3000 frames)")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
