"""Write a GIF of a BringBackShapes episode: the agent's 64x64 view (left) and the full arena (right).

    python -m tasks.bbs.video --policy scripted --task distract2_size1.0 --seed 0 --steps 300 --out bbs.gif

The full-arena panel shows the agent's (grey-tinted) view square, as the original environment's screen did.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image

from tasks.bbs.env import BBSProtocol
from tasks.bbs.evaluate import make_policy
from tasks.bbs.suite import SUITE, make_env


def compose(view: np.ndarray, arena: np.ndarray, height: int) -> np.ndarray:
    """The view scaled up (nearest) and the arena scaled down to `height`, side by side with a gap."""
    view_panel = np.asarray(Image.fromarray(view).resize((height, height), Image.Resampling.NEAREST))
    width = round(arena.shape[1] * height / arena.shape[0])
    arena_panel = np.asarray(Image.fromarray(arena).resize((width, height), Image.Resampling.BOX))
    gap = np.full((height, 8, 3), 255, np.uint8)
    return np.concatenate([view_panel, gap, arena_panel], axis=1)


def record(task: str, policy_name: str, seed: int, steps: int, height: int) -> list[np.ndarray]:
    env = make_env(SUITE.resolve_task(task), BBSProtocol())
    policy = make_policy(policy_name, env)
    rngs = {"rng": np.random.default_rng([seed, 1])}
    obs = env.reset(seed=seed)
    frames = [compose(obs["image"], env.render(), height)]
    for _ in range(steps):
        if obs["is_last"]:
            break
        obs = env.step(policy(obs, rngs))
        frames.append(compose(obs["image"], env.render(), height))
    return frames


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.bbs.video",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--policy", choices=("scripted", "random"), default="scripted")
    parser.add_argument("--task", default="distract0_size1.0", help=f"one of: {', '.join(SUITE.tasks)}")
    parser.add_argument("--seed", type=int, default=0, help="episode seed")
    parser.add_argument("--steps", type=int, default=200, help="agent steps to record (at most the episode)")
    parser.add_argument("--every", type=int, default=1, help="keep every n-th step in the GIF")
    parser.add_argument("--fps", type=float, default=15.0, help="GIF frames per second")
    parser.add_argument("--height", type=int, default=256, help="pixel height of the GIF")
    parser.add_argument("--out", type=Path, default=Path("bbs.gif"))
    args = parser.parse_args(argv)
    if args.steps < 0 or args.every < 1 or args.fps <= 0 or args.height < 16:
        parser.error("need --steps >= 0, --every >= 1, --fps > 0 and --height >= 16")
    frames = record(args.task, args.policy, args.seed, args.steps, args.height)[:: args.every]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(args.out, np.stack(frames), duration=1000 / args.fps, loop=0)
    print(f"wrote {args.out} ({len(frames)} frames, {frames[0].shape[1]}x{frames[0].shape[0]})")


if __name__ == "__main__":
    main()
