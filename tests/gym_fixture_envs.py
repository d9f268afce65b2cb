"""Tiny Gymnasium environments registered on import, for the `gym` suite tests (`tests.gym_fixture_envs:Id`).

* `BenchDots-v0`: a Dict observation with an 8x8 RGB image ("pixels"), a 2-D position and a Discrete
  "phase"; Discrete(3, start=-1) actions move a dot left/stay/right; terminates at the right edge,
  truncated by its TimeLimit after 12 steps. Reward = the action taken (-1, 0, 1), so a test can check
  that our action index maps to the environment's action.
* `BenchMultiBinary-v0`, `BenchTupleObs-v0`, `BenchText-v0`: spaces the suite refuses.
"""

from __future__ import annotations

import gymnasium
import numpy as np
from gymnasium import spaces


class Dots(gymnasium.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode=None):
        self.render_mode = render_mode
        self.observation_space = spaces.Dict({
            "pixels": spaces.Box(0, 255, (8, 8, 3), np.uint8),
            "position": spaces.Box(0.0, 7.0, (2,), np.float32),
            "phase": spaces.Discrete(3),
        })
        self.action_space = spaces.Discrete(3, start=-1)

    def _obs(self):
        image = np.zeros((8, 8, 3), np.uint8)
        image[self.row, self.col] = (255, 0, 0)
        position = np.array([self.row, self.col], np.float32)
        return {"pixels": image, "position": position, "phase": int(self.steps % 3)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.row, self.col, self.steps = int(self.np_random.integers(8)), int(self.np_random.integers(3)), 0
        return self._obs(), {}

    def step(self, action):
        assert action in (-1, 0, 1), action
        self.col = int(np.clip(self.col + action, 0, 7))
        self.steps += 1
        return self._obs(), float(action), self.col == 7, False, {}

    def render(self):
        return self._obs()["pixels"]


class Refused(gymnasium.Env):
    def __init__(self, observation_space, action_space):
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


def _register(name, entry_point, **kwargs):
    if name not in gymnasium.registry:
        gymnasium.register(name, entry_point=entry_point, kwargs=kwargs, max_episode_steps=12)


_register("BenchDots-v0", Dots)
_register("BenchMultiBinary-v0", Refused, observation_space=spaces.Box(-1, 1, (2,)), action_space=spaces.MultiBinary(3))
_register("BenchTupleObs-v0", Refused, observation_space=spaces.Tuple((spaces.Discrete(2), spaces.Discrete(3))),
          action_space=spaces.Discrete(2))
_register("BenchText-v0", Refused, observation_space=spaces.Text(5), action_space=spaces.Discrete(2))
