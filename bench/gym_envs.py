"""Our tasks as Gymnasium environments, with our exact protocol.

    import gymnasium, bench.gym_envs
    env = gymnasium.make("mbrl_bench/atari100k-pong")                  # the suite's protocol defaults
    env = gymnasium.make("mbrl_bench/atari100k-pong", sticky_actions=0.25)      # protocol fields as make kwargs
    env = gymnasium.make("bench.gym_envs:mbrl_bench/toy-reach")         # imports this module first

Importing this module registers `mbrl_bench/<suite>-<task>` for every task of every registered suite
(Gymnasium 1.x has no plugin entry points, so registration is by import; the `module:id` form above does
the import). The `gym` suite itself is not re-exported: it already is Gymnasium.

Observations are a Dict of the task's sensors (what a learning agent sees: `image` uint8, `vector`
float32); private keys (`priv_*`) and the episode stats at the end go to `info`. `terminated` is our
`is_terminal`, `truncated` is `is_last` without it. Actions: one `action` key becomes a Discrete or Box;
several become a Dict. `reset(seed=s)` starts our episode `s`; `reset()` without a seed draws the next
episode seed from the environment's seeded generator, so a seeded sequence of episodes is reproducible.
"""

from __future__ import annotations

import gymnasium
import numpy as np
from gymnasium import spaces as gs

from bench import config as config_lib
from bench import registry
from bench.spaces import PRIVATE_PREFIX, Space, sensor_keys

NAMESPACE = "mbrl_bench"
SKIPPED_SUITES = ("gym",)


def gym_space(space: Space) -> gs.Space:
    """Our Space as a Gymnasium space: a scalar discrete space is a Discrete, everything else a Box."""
    dtype = np.dtype(space.dtype)
    if space.shape == () and space.is_discrete and dtype != np.uint8:
        return gs.Discrete(space.num_classes)
    if dtype == np.bool_:
        return gs.MultiBinary(space.shape) if space.shape else gs.Discrete(2)
    if np.issubdtype(dtype, np.integer):
        # Integer sensors (uint8 images: 0..255) carry inclusive bounds.
        info = np.iinfo(dtype)
        low = info.min if space.low is None else space.low
        high = info.max if space.high is None else space.high
        return gs.Box(low, high, space.shape, dtype)
    low = -np.inf if space.low is None else space.low
    high = np.inf if space.high is None else space.high
    return gs.Box(low, high, space.shape, dtype)


class BenchEnv(gymnasium.Env):
    """One task of one of our suites behind the Gymnasium API."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, suite: str, task: str, render_mode: str | None = None, **protocol):
        spec = registry.get_suite(suite)
        defaults = config_lib.to_plain(spec.protocol_cls())
        unknown = sorted(set(protocol) - set(defaults))
        if unknown:
            raise TypeError(
                f"mbrl_bench/{suite}-{task}: unknown protocol field(s) {unknown}; fields: {sorted(defaults)}"
            )
        self.protocol = config_lib.from_dict(spec.protocol_cls, defaults | protocol)
        self.suite, self.task = spec.name, spec.resolve_task(task)
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode {render_mode!r} is not supported; use 'rgb_array' or None")
        self.render_mode = render_mode
        self._env = spec.make_env(self.task, self.protocol, 0)
        self._last_image = None
        self._sensors = sensor_keys(self._env.obs_space)
        self.observation_space = gs.Dict({key: gym_space(self._env.obs_space[key]) for key in self._sensors})
        act_space = self._env.act_space
        self._single_action = list(act_space) == ["action"]
        if self._single_action:
            self.action_space = gym_space(act_space["action"])
        else:
            self.action_space = gs.Dict({key: gym_space(space) for key, space in act_space.items()})

    def _split(self, obs: dict) -> tuple[dict, dict]:
        self._last_image = obs.get("image")
        sensors = {key: np.asarray(obs[key]) for key in self._sensors}
        info = {key: obs[key] for key in obs if key.startswith(PRIVATE_PREFIX)}
        return sensors, info

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        # An explicit seed is our episode seed; otherwise the next one comes from the seeded generator.
        episode_seed = seed if seed is not None else int(self.np_random.integers(0, 2**31 - 1))
        return self._split(self._env.reset(seed=int(episode_seed)))

    def step(self, action):
        ours = {"action": action} if self._single_action else dict(action)
        obs = self._env.step(ours)
        sensors, info = self._split(obs)
        terminated = bool(obs["is_terminal"])
        truncated = bool(obs["is_last"]) and not terminated
        if obs["is_last"]:
            info["episode_stats"] = self._env.episode_stats()
        return sensors, float(obs["reward"]), terminated, truncated, info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        frame = self._env.render()
        # Tasks without a separate scene view (toy, pinpad) render what the agent sees.
        return frame if frame is not None else self._last_image

    def close(self):
        self._env.close()


def env_id(suite: str, task: str) -> str:
    return f"{NAMESPACE}/{suite}-{task}"


def register_all() -> list[str]:
    """Register every task of every suite that loads; returns the ids registered."""
    ids = []
    for suite in registry.suite_names():
        if suite in SKIPPED_SUITES:
            continue
        try:
            spec = registry.get_suite(suite)
        except (KeyError, ImportError):
            continue  # a suite that cannot load (missing simulator) is left out; `bench list` shows why
        for task in spec.tasks:
            name = env_id(suite, task)
            if name not in gymnasium.registry:
                kwargs = {"suite": suite, "task": task}
                gymnasium.register(name, entry_point="bench.gym_envs:BenchEnv", kwargs=kwargs)
            ids.append(name)
    return ids


IDS = register_all()

