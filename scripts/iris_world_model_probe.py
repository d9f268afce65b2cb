"""What an IRIS `quick` run on toy `reach_progress` has learned, read from its checkpoint (docs/iris.md,
"Why IRIS learns `reach_progress` slowly").

    # the run (as tests/test_iris_runs.py::test_learns_reach, with another seed)
    .venv/bin/bench run --agent iris --suite toy --task reach_progress --configs quick --seed 1 --steps 6000 \
        --logdir /tmp/iris_run
    # its final checkpoint: reconstructions, token locality, the world model's accuracy on random episodes
    .venv/bin/python scripts/iris_world_model_probe.py checkpoint \
        /tmp/iris_run/toy/reach_progress/iris/*/seed1
    # a fresh world model trained alone through that checkpoint's tokenizer: accuracy against updates
    .venv/bin/python scripts/iris_world_model_probe.py offline /tmp/iris_run/toy/reach_progress/iris/*/seed1 \
        --updates 12000

Evaluation: 40 random-policy episodes (seeds 100000..), teacher-forced over windows of the world model's
`steps`, argmax predictions.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from agents.iris import SPEC, IRISConfig
from agents.iris.agent import SEGMENT_START
from agents.iris.transformer import sequence_logits
from bench import config as config_lib
from bench import spaces
from bench.checkpoint import Checkpointer
from tasks import toy

GRID, SIZE = 5, 16
AGENT, GOAL = np.array(toy.AGENT), np.array(toy.GOAL)


def load(run: Path):
    """The agent as the run built it (its saved config.yaml) and its latest checkpointed state."""
    env = toy.make_env("reach_progress", toy.ToyProtocol())
    obs_space = {"image": spaces.image(SIZE, SIZE), **spaces.step_spaces()}
    config = config_lib.from_dict(IRISConfig, config_lib.load_yaml(run / "config.yaml")["agent"], "agent.")
    agent = SPEC.make(config, obs_space, env.act_space)
    state = agent.init(key=jax.random.key(0))
    checkpointer = Checkpointer(run / "ckpt")
    state, _ = checkpointer.load_agent(checkpointer.load_header(), (state, agent.initial_carry(state, 1)))
    return agent, state, config


def random_episodes(count: int, first_seed: int, rng) -> dict[str, np.ndarray]:
    """(count, T) frames, actions (the one taken at each frame), rewards and is_last of the random policy."""
    env = toy.make_env("reach_progress", toy.ToyProtocol())
    out = {"image": [], "action": [], "reward": [], "is_last": []}
    for episode in range(count):
        obs = env.reset(seed=first_seed + episode)
        rows = {"image": [obs["image"]], "action": [], "reward": [0.0], "is_last": [False]}
        while not obs["is_last"]:
            action = int(rng.integers(len(toy.MOVES)))
            obs = env.step({"action": np.int32(action)})
            rows["action"].append(action)
            for key in ("image", "reward", "is_last"):
                rows[key].append(obs[key])
        rows["action"].append(0)  # no action after the last frame
        for key, values in rows.items():
            out[key].append(np.asarray(values))
    return {key: np.stack(values) for key, values in out.items()}


def world_model_accuracy(world_model, tokens: np.ndarray, episodes, steps: int) -> tuple[float, float]:
    """Teacher-forced argmax accuracy of next-frame tokens and of reward signs."""
    token_hits, reward_hits, windows = 0.0, 0.0, 0
    length = tokens.shape[1]
    for start in range(0, length - steps, steps):
        window = slice(start, start + steps)
        logits = jax.vmap(lambda t, a: sequence_logits(world_model, t, a))(
            jnp.asarray(tokens[:, window]), jnp.asarray(episodes["action"][:, window])
        )
        predicted = np.asarray(logits["obs"]).argmax(-1)[:, 1:]
        token_hits += (predicted == tokens[:, start + 1 : start + steps]).mean()
        signs = np.sign(episodes["reward"][:, start + 1 : start + steps + 1]).astype(int) + 1
        reward_hits += (np.asarray(logits["reward"]).argmax(-1) == signs).mean()
        windows += 1
    return token_hits / windows, reward_hits / windows


def cell_of(image: np.ndarray, colour: np.ndarray) -> tuple[int, int]:
    centres = (np.arange(GRID) * SIZE + SIZE // 2) // GRID
    cells = image[centres][:, centres].astype(float)
    return np.unravel_index(np.argmin(np.abs(cells - colour).sum(-1)), (GRID, GRID))


def probe_checkpoint(args) -> None:
    agent, state, config = load(args.run)
    print("updates per stream:", {k: int(v) for k, v in state.updates.items()})
    episodes = random_episodes(40, 100_000, np.random.default_rng(1))
    count, length = episodes["image"].shape[:2]
    frames = episodes["image"].reshape(-1, SIZE, SIZE, 3)
    tokens = np.asarray(state.tokenizer.encode(jnp.asarray(frames)))
    recon = np.clip(np.asarray(state.tokenizer.decode(jnp.asarray(tokens))), 0, 1) * 255
    agent_ok = np.mean([cell_of(f, AGENT) == cell_of(r, AGENT) for f, r in zip(frames, recon)])
    goal_ok = np.mean([cell_of(f, GOAL) == cell_of(r, GOAL) for f, r in zip(frames, recon)])
    print(f"tokenizer: mean abs reconstruction error {np.abs(recon - frames).mean():.2f}/255; agent cell "
          f"recovered {agent_ok:.3f}, goal cell {goal_ok:.3f}; codes used {len(np.unique(tokens))} of "
          f"{config.tokenizer.vocab}")  # fmt: skip

    # One-cell moves from each start: pixels vs tokens changed; how far an unchanged patch's latent moves.
    env = toy.make_env("reach_progress", toy.ToyProtocol())
    codebook = np.asarray(state.tokenizer.codebook)
    gaps = np.sqrt(((codebook[:, None] - codebook[None]) ** 2).sum(-1))
    np.fill_diagonal(gaps, np.inf)
    patch = SIZE // 4
    changed_tokens, changed_patches, static_shift, static_flips = [], [], [], []
    for episode in range(40):
        for action in (1, 2, 3, 4):
            before = env.reset(seed=5000 + episode)["image"]
            start = env.agent.copy()
            after = env.step({"action": np.int32(action)})["image"]
            if (env.agent == start).all():
                continue
            pair = jnp.asarray(np.stack([before, after]))
            latents = np.asarray(state.tokenizer._encode(pair)[0]).reshape(2, 16, -1)
            pair_tokens = np.asarray(state.tokenizer.encode(pair))
            moved = (before != after).any(-1).reshape(4, patch, 4, patch).any((1, 3)).reshape(16)
            changed_tokens.append((pair_tokens[0] != pair_tokens[1]).sum())
            changed_patches.append(moved.sum())
            for k in np.flatnonzero(~moved):
                static_shift.append(np.linalg.norm(latents[0, k] - latents[1, k]))
                static_flips.append(pair_tokens[0, k] != pair_tokens[1, k])
    print(f"a one-cell move changes {np.mean(changed_patches):.1f} of 16 patches and "
          f"{np.mean(changed_tokens):.1f} of 16 tokens; in unchanged patches the latent moves "
          f"{np.median(static_shift):.3f} "
          f"(median; median nearest-code distance {np.median(gaps.min(1)):.3f}) and the token flips in "
          f"{np.mean(static_flips):.2f}")  # fmt: skip

    tokens = tokens.reshape(count, length, -1)
    steps = config.world_model.steps
    token_acc, reward_acc = world_model_accuracy(state.world_model, tokens, episodes, steps)
    print(f"world model (teacher-forced): next-frame tokens right {token_acc:.3f}, "
          f"reward signs right {reward_acc:.3f}")


def probe_offline(args) -> None:
    """A fresh world model trained alone on random episodes through the checkpoint's (frozen) tokenizer."""
    agent, state, config = load(args.run)
    fresh = agent.init(key=jax.random.key(7))
    state = eqx.tree_at(lambda s: (s.world_model, s.opt["world_model"], s.updates["world_model"]), state,
                        (fresh.world_model, fresh.opt["world_model"],
                         fresh.updates["world_model"]))  # fmt: skip
    rng = np.random.default_rng(3)
    train, test = random_episodes(600, 0, rng), random_episodes(40, 100_000, rng)
    count, length = train["image"].shape[:2]
    test_tokens = np.asarray(state.tokenizer.encode(jnp.asarray(test["image"].reshape(-1, SIZE, SIZE, 3))))
    test_tokens = test_tokens.reshape(40, length, -1)
    steps, batch_size = config.world_model.steps, config.world_model.batch
    update = jax.jit(lambda s, b, k: agent.update(s, "world_model", b, key=k))
    checkpoints = {500, 1000, 2000, 3000, 5000, 8000, 12000, args.updates}
    began = time.time()
    for i in range(1, args.updates + 1):
        episode = rng.integers(count, size=batch_size)[:, None]
        rows = rng.integers(0, length - steps, size=batch_size)[:, None] + np.arange(steps + 1)
        batch = {key: train[key][episode, rows] for key in ("image", "action", "reward", "is_last")}
        batch.update(is_terminal=np.zeros_like(rows, bool), is_first=rows == 0)
        batch[SEGMENT_START] = rows == 0
        state, metrics, _ = update(state, batch, jax.random.key(i))
        if i in checkpoints and i <= args.updates:
            token_acc, reward_acc = world_model_accuracy(state.world_model, test_tokens, test, steps)
            print(f"{i} updates: token cross-entropy (batch) {float(metrics['obs']):.3f}; "
                  f"next-frame tokens right "
                  f"{token_acc:.3f}, reward signs right {reward_acc:.3f} "
                  f"({time.time() - began:.0f} s)", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=("checkpoint", "offline"))
    parser.add_argument("run", type=Path, help="a run folder (…/seedN) with a checkpoint")
    parser.add_argument("--updates", type=int, default=12000, help="offline: world-model updates")
    args = parser.parse_args()
    (probe_checkpoint if args.mode == "checkpoint" else probe_offline)(args)


if __name__ == "__main__":
    main()
