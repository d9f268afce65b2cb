"""Does IRIS's tokenizer keep what a toy frame shows? Trains the tokenizer stream alone (the agent's own
`update(state, "tokenizer", ...)`) on random-policy frames of a toy task and, every `--every` updates, reads
512 frames back through encode -> decode:

* pixel error: mean |reconstruction - frame| (frames in [0, 1]) over the object pixels (not background), split
  into the agent's (white; 1.0 if drawn black) and the other objects' (reach's green goal: 0.26 if drawn
  black), and over the background; 0.64 on reach's object pixels is a black reconstruction there;
* codebook entries in use, and how many of the distinct real frames get distinct token grids (the world model
  only knows what the tokens tell apart).

docs/iris.md ("Why: the tokenizer does not keep the agent or the goal" and "Mended") has the figures this
printed.

    python scripts/iris_tokenizer_probe.py --task reach_progress --configs quick --updates 1000
    python scripts/iris_tokenizer_probe.py --set lr=1e-3 --set tokenizer.beta=0.25
    python scripts/iris_tokenizer_probe.py --set tokenizer.foreground_weight=0 --set tokenizer.warmup_updates=0
"""

import argparse
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import time

import jax
import jax.numpy as jnp
import numpy as np
import yaml

from agents.iris import SPEC
from bench import registry
from bench.config import ConfigError
from tasks import toy


def random_frames(task: str, episodes: int, seed: int = 0) -> np.ndarray:
    env = toy.make_env(task, toy.ToyProtocol())
    rng = np.random.default_rng(seed)
    frames = []
    for episode in range(episodes):
        obs = env.reset(seed=episode)
        frames.append(obs["image"])
        while not obs["is_last"]:
            obs = env.step({k: space.sample(rng) for k, space in env.act_space.items()})
            frames.append(obs["image"])
    return np.stack(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="reach_progress", help="toy task whose frames to encode")
    parser.add_argument("--configs", nargs="*", default=["quick"], help="IRIS presets (default: quick)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, value read as YAML (repeatable): --set tokenizer.beta=0.25")
    parser.add_argument("--episodes", type=int, default=300, help="random-policy episodes of frames")
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--every", type=int, default=250, help="report every this many updates")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set takes KEY=VALUE, got {item!r}")
        overrides[key] = yaml.safe_load(value)
    env = toy.make_env(args.task, toy.ToyProtocol())
    try:
        config = registry.build_config(SPEC, toy.SUITE, args.configs, overrides, task=args.task).agent
    except ConfigError as error:
        parser.error(str(error))
    agent = SPEC.make(config, env.obs_space, env.act_space)
    state = agent.init(key=jax.random.key(args.seed))
    frames = random_frames(args.task, args.episodes, args.seed)
    probe = frames[:512]
    objects = probe.max(-1) > 0  # toy backgrounds are black
    distinct_frames = len({frame.tobytes() for frame in probe})
    print(f"{len(frames)} frames of {args.episodes} random {args.task} episodes; "
          f"{distinct_frames} distinct among the 512 read back", flush=True)  # fmt: skip

    update = jax.jit(lambda state, batch, key: agent.update(state, "tokenizer", batch, key=key)[:2])

    white = (probe == 255).all(-1)  # the agent's colour; the other objects (goal, key, door) are coloured
    masks = {"object": objects, "agent": white, "other objects": objects & ~white, "background": ~objects}

    @jax.jit
    def read_back(tokenizer):
        tokens = tokenizer.encode(probe)
        error = jnp.abs(tokenizer.decode(tokens) - probe / 255.0).mean(-1)
        return tokens, {name: (error * mask).sum() / jnp.maximum(mask.sum(), 1) for name, mask in masks.items()}

    rng = np.random.default_rng(args.seed)
    start = time.monotonic()
    for step in range(1, args.updates + 1):
        batch = {"image": frames[rng.integers(len(frames), size=config.tokenizer.batch)][:, None]}
        state, metrics = update(state, batch, jax.random.key(step))
        if step % args.every == 0 or step == args.updates:
            tokens, errors = read_back(state.tokenizer)
            tokens = np.asarray(tokens)
            grids = len({row.tobytes() for row in tokens})
            errors = ", ".join(f"{name} {float(value):.3f}" for name, value in errors.items())
            print(f"update {step} ({time.monotonic() - start:.0f} s): rec_l1 {float(metrics['rec_l1']):.4f}; "
                  f"pixel error: {errors}; codes in use {len(np.unique(tokens))}, "
                  f"distinct token grids {grids} / {distinct_frames}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
