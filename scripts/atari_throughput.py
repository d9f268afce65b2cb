"""Measure ways of stepping many Atari emulators under the Atari 100k protocol (agent steps per second).

    .venv/bin/python scripts/atari_throughput.py --game pong --envs 1 2 4 --steps 2000

Compared:
* `single`:  one `tasks.atari.AtariEnv` in this process (frame skip 4, max-pool, PIL bilinear 64x64 RGB).
* `workers`: N `AtariEnv` in subprocess workers (`bench.envs.VecEnv`, what the runner uses), stepped in
             lock-step like the runner's collection loop.
* `ale_vec`: ALE's C++ vector env (`ale_py.vector_env.AtariVectorEnv`) with the closest settings
             (frame skip 4, max-pool, 64x64 RGB, no frame stack, 0..30 no-ops, no reward clipping, no fire
             reset, no sticky actions). Not protocol-identical: it resizes with OpenCV INTER_AREA inside ALE
             and draws no-ops from its own generator, so episodes are not a function of our seeds.
envpool is not installed in this environment (and not a dependency), so it is not measured.

Random actions; steps/s counts agent steps summed over all environments (x4 for frames).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def measure_single(game: str, steps: int) -> float:
    from tasks.atari import AtariEnv

    env = AtariEnv(game)
    rng = np.random.default_rng(0)
    actions = env.act_space["action"].num_classes
    env.reset(seed=0)
    start = time.perf_counter()
    episode = 0
    for _ in range(steps):
        if env.step({"action": int(rng.integers(actions))})["is_last"]:
            episode += 1
            env.reset(seed=episode)
    return steps / (time.perf_counter() - start)


def measure_workers(game: str, envs: int, steps: int) -> float:
    from bench.envs import VecEnv
    from tasks.atari import AtariProtocol

    vec = VecEnv("atari100k", game, AtariProtocol(), envs, parallel=True)
    try:
        actions = vec.act_space["action"].num_classes
        rng = np.random.default_rng(0)
        for index in range(envs):
            vec.request(index, "reset", index)
        vec.collect()
        episodes = envs
        start = time.perf_counter()
        rounds = max(1, steps // envs)
        for _ in range(rounds):
            for index in range(envs):
                vec.request(index, "step", {"action": np.int32(rng.integers(actions))})
            results = vec.collect()
            for index, result in results.items():
                if result.obs is not None and result.obs["is_last"]:
                    vec.request(index, "reset", episodes)
                    episodes += 1
                    vec.collect()
        return rounds * envs / (time.perf_counter() - start)
    finally:
        vec.close()


def measure_ale_vector(game: str, envs: int, steps: int) -> float:
    from ale_py.vector_env import AtariVectorEnv

    vec = AtariVectorEnv(
        game, envs, img_height=64, img_width=64, grayscale=False, stack_num=1, frameskip=4, maxpool=True,
        noop_max=30, reward_clipping=False, use_fire_reset=False, repeat_action_probability=0.0,
        num_threads=envs,
    )  # fmt: skip
    try:
        vec.reset(seed=0)
        rng = np.random.default_rng(0)
        actions = vec.single_action_space.n
        rounds = max(1, steps // envs)
        start = time.perf_counter()
        for _ in range(rounds):
            vec.step(rng.integers(actions, size=envs))
        return rounds * envs / (time.perf_counter() - start)
    finally:
        vec.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", default="pong")
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=2000, help="agent steps per measurement (all envs)")
    args = parser.parse_args()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    print(f"game={args.game} steps={args.steps} cpus={os.cpu_count()}")
    print(f"single   envs=1  {measure_single(args.game, args.steps):8.0f} agent steps/s")
    for envs in args.envs:
        print(f"workers  envs={envs:<2d} {measure_workers(args.game, envs, args.steps):8.0f} agent steps/s")
        print(f"ale_vec  envs={envs:<2d} {measure_ale_vector(args.game, envs, args.steps):8.0f} agent steps/s")


if __name__ == "__main__":
    main()
