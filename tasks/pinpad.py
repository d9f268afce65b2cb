"""VisualPinpad (Director's env, used by DreamerV3 and THICK): visit coloured pads in order 1 -> ... -> N.

The layouts, rules and rendering follow the published environment (Director / DreamerV3
`embodied/envs/pinpad.py`; THICK's pinpad env has the same layouts), written anew from its description;
`tests/test_pinpad_layouts.py` checks the layouts cell by cell and the spawn cells.

* The world is 16 columns x 14 rows of floor (' '), wall ('#') and pad cells ('1'..'5'); tasks `three`,
  `four` and `five` have 3, 4 and 5 pads. The agent spawns on a uniformly random non-wall cell, pads
  included (episode seed).
* 5 actions: no-op, +y (down), -y (up), +x (right), -x (left); the target cell is clipped to the grid and a
  wall leaves the agent in place.
* Entering a pad (moving onto, or staying on, a pad cell) appends it to the visited sequence unless it equals
  the sequence's last entry; only the last N entries are kept. When the sequence reads 1, 2, ..., N and no
  countdown runs the agent gets +10 and a 10-step countdown starts; when it runs out the agent respawns and
  the sequence is cleared. No reward is given during the countdown.
* Observation: 64x64 RGB = a 16x16 cell grid of 4x4-pixel cells: the 14 world rows plus a 2-row grey strip at
  the bottom, where the visited sequence is drawn as coloured cells at x = 1, 3, 5, ... of its first row.
  Background white, tinted (223, 255, 223) during the countdown; walls (192, 192, 192); a pad is drawn at 10%
  of its colour over 90% white, in full colour while the agent stands on it; the agent is black.
* Episodes last 2000 steps (THICK; DreamerV3 uses 10000) and end by truncation only.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bench import spaces
from bench.api import Env, SuiteSpec, check_action
from tasks import wrappers

WIDTH, HEIGHT = 16, 14  # world cells; the rendered grid is 16 x 16 with the bottom strip
CELL_PIXELS = 4
MOVES = ((0, 0), (0, 1), (0, -1), (1, 0), (-1, 0))  # (dx, dy): no-op, +y, -y, +x, -x (the published order)

# The published layouts (rows top to bottom).
LAYOUTS = {
    "three": (
        "################",
        "#1111      3333#",
        "#1111      3333#",
        "#1111      3333#",
        "#1111      3333#",
        "#              #",
        "#              #",
        "#              #",
        "#              #",
        "#     2222     #",
        "#     2222     #",
        "#     2222     #",
        "#     2222     #",
        "################",
    ),
    "four": (
        "################",
        "#1111      4444#",
        "#1111      4444#",
        "#1111      4444#",
        "#1111      4444#",
        "#              #",
        "#              #",
        "#              #",
        "#              #",
        "#3333      2222#",
        "#3333      2222#",
        "#3333      2222#",
        "#3333      2222#",
        "################",
    ),
    "five": (
        "################",
        "#          4444#",
        "#111       4444#",
        "#111       4444#",
        "#111           #",
        "#111        555#",
        "#           555#",
        "#           555#",
        "#333        555#",
        "#333           #",
        "#333       2222#",
        "#333       2222#",
        "#          2222#",
        "################",
    ),
}
PAD_COLOURS = {
    "1": (255, 0, 0),
    "2": (0, 255, 0),
    "3": (0, 0, 255),
    "4": (255, 255, 0),
    "5": (255, 0, 255),
}
FLOOR, COUNTDOWN_FLOOR = (255, 255, 255), (223, 255, 223)
WALL = STRIP = (192, 192, 192)
AGENT = (0, 0, 0)


@dataclasses.dataclass(frozen=True)
class PinpadProtocol:
    image_size: int = 64  # observation side in pixels (the native grid is 64; others are resized nearest)
    episode_length: int = 2000  # truncation in steps
    sequence_reward: float = 10.0  # reward for completing the pad sequence
    countdown: int = 10  # steps between a completed sequence and the respawn

    def __post_init__(self):
        wrappers.require_positive(self, "image_size", "episode_length", "countdown")


def parse_layout(task: str) -> np.ndarray:
    """The task's layout as a (HEIGHT, WIDTH) array of single characters, validated."""
    rows = LAYOUTS[task]
    grid = np.array([list(row) for row in rows])
    assert grid.shape == (HEIGHT, WIDTH), (task, grid.shape)
    return grid


class PinpadEnv(Env):
    def __init__(self, task: str, protocol: PinpadProtocol = PinpadProtocol()):
        if task not in LAYOUTS:
            raise KeyError(f"unknown pinpad task {task!r}; tasks: {', '.join(LAYOUTS)}")
        self.task = task
        self.protocol = protocol
        self.layout = parse_layout(task)
        self.pads = tuple(sorted(set(self.layout.flat) - {" ", "#"}))
        self.spawns = [(x, y) for y in range(HEIGHT) for x in range(WIDTH) if self.layout[y, x] != "#"]
        self._obs_space = {"image": spaces.image(protocol.image_size, protocol.image_size), **spaces.step_spaces()}
        self._act_space = {"action": spaces.discrete(len(MOVES))}
        self._guard = wrappers.EpisodeGuard(f"pinpad {task}")
        self._background = self._draw_background()
        self._rng = None
        self.position = (0, 0)
        self.sequence: list[str] = []
        self.countdown = 0
        self.steps = 0

    @property
    def obs_space(self):
        return self._obs_space

    @property
    def act_space(self):
        return self._act_space

    def reset(self, *, seed: int):
        self._rng = wrappers.episode_rng(wrappers.check_seed(seed), "pinpad")
        self._respawn()
        self.countdown = 0
        self.steps = 0
        self._guard.start()
        return wrappers.step_obs({"image": self._image()}, 0.0, is_first=True, is_last=False, is_terminal=False)

    def step(self, action):
        self._guard.check_step()
        move = MOVES[int(check_action(self._act_space, action)["action"])]
        if self.countdown:
            self.countdown -= 1
            if self.countdown == 0:
                self._respawn()
        x = min(max(self.position[0] + move[0], 0), WIDTH - 1)
        y = min(max(self.position[1] + move[1], 0), HEIGHT - 1)
        # The target cell decides: a wall blocks (and enters no pad), a pad is entered even on a no-op.
        target = self.layout[y, x]
        if target != "#":
            self.position = (x, y)
        if target in self.pads and (not self.sequence or self.sequence[-1] != target):
            self.sequence = (self.sequence + [target])[-len(self.pads) :]
        reward = 0.0
        if not self.countdown and tuple(self.sequence) == self.pads:
            reward = self.protocol.sequence_reward
            self.countdown = self.protocol.countdown
        self.steps += 1
        is_last = self.steps >= self.protocol.episode_length
        self._guard.finish(is_last)
        return wrappers.step_obs({"image": self._image()}, reward, is_first=False, is_last=is_last, is_terminal=False)

    def _respawn(self):
        self.position = self.spawns[int(self._rng.integers(len(self.spawns)))]
        self.sequence = []

    def _draw_world(self, floor) -> np.ndarray:
        """The (HEIGHT + 2, WIDTH, 3) uint8 grid without the agent, its pad lit, or the sequence."""
        grid = np.empty((HEIGHT + 2, WIDTH, 3), np.uint8)
        grid[:HEIGHT] = floor
        grid[HEIGHT:] = STRIP
        grid[:HEIGHT][self.layout == "#"] = WALL
        for pad in self.pads:  # 10% of the colour over 90% white, rounded down like the published uint8 cast
            faded = (10 * np.array(PAD_COLOURS[pad]) + 90 * np.array(FLOOR)) // 100
            grid[:HEIGHT][self.layout == pad] = faded
        return grid

    def _draw_background(self) -> dict[bool, np.ndarray]:
        return {False: self._draw_world(FLOOR), True: self._draw_world(COUNTDOWN_FLOOR)}

    def _image(self) -> np.ndarray:
        grid = self._background[bool(self.countdown)].copy()
        x, y = self.position
        cell = self.layout[y, x]
        if cell in PAD_COLOURS:  # the whole pad the agent stands on lights up in full colour
            grid[:HEIGHT][self.layout == cell] = PAD_COLOURS[cell]
        grid[y, x] = AGENT
        for index, pad in enumerate(self.sequence):
            grid[HEIGHT, 2 * index + 1] = PAD_COLOURS[pad]
        image = np.repeat(np.repeat(grid, CELL_PIXELS, 0), CELL_PIXELS, 1)
        return wrappers.resize_image(image, self.protocol.image_size, "nearest")

    def render(self):
        return self._image()


def make_env(task: str, protocol: PinpadProtocol, worker_index: int = 0) -> PinpadEnv:
    del worker_index
    return PinpadEnv(task, protocol)


SUITE = SuiteSpec(
    name="pinpad",
    tasks=tuple(LAYOUTS),
    protocol_cls=PinpadProtocol,
    make_env=make_env,
    budget=1_000_000,  # THICK's configs (visualpinpad, thick_pinpad): steps 1e6
    eval_protocol="final_eval",
    eval_episodes=10,
    normaliser="identity",
    description="VisualPinpad three/four/five (Director's layouts): visit pads in order, +10 per sequence.",
)
