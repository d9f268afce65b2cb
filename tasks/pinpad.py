"""VisualPinpad (Director's environment, used by THICK): visit coloured pads in the order 1 -> 2 -> ... -> N.

Rules (our implementation of the published description; the layouts are our own):

* The world is 16 columns x 14 rows of floor (' '), wall ('#') and pad cells ('1'..'5'); tasks `three`,
  `four` and `five` have 3, 4 and 5 pads. The agent starts on a random floor cell (episode seed).
* 5 actions: no-op, up, down, left, right. Moves into walls or off the grid leave the agent in place.
* The game keeps the sequence of pads visited: entering a pad that differs from the last pad of the sequence
  appends it (only the last N entries are kept). When the sequence reads 1, 2, ..., N the agent gets +10
  and a 10-step countdown starts (the image is tinted green). When the countdown runs out the agent
  respawns on a random floor cell and the sequence is cleared; no reward is given during the countdown.
* Observation: 64x64 RGB = the 16x16 cell grid drawn with 4x4-pixel cells: the 14 world rows plus a 2-row
  strip at the bottom showing the colours of the pads in the current sequence. Pads are drawn faded except
  the one the agent stands on, which lights up; the agent is black.
* Episodes last 2000 steps (THICK; THIX uses 1000) and end by truncation only.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bench import spaces
from bench.api import Env, SuiteSpec, check_action
from tasks import wrappers

WIDTH, HEIGHT = 16, 14  # world cells; the rendered grid is 16 x 16 with the bottom strip
CELL_PIXELS = 4
MOVES = ((0, 0), (0, -1), (0, 1), (-1, 0), (1, 0))  # (dx, dy): no-op, up, down, left, right

LAYOUTS = {
    "three": (
        "################",
        "#111        222#",
        "#111        222#",
        "#111        222#",
        "#              #",
        "#              #",
        "#              #",
        "#              #",
        "#              #",
        "#              #",
        "#     3333     #",
        "#     3333     #",
        "#     3333     #",
        "################",
    ),
    "four": (
        "################",
        "#111        222#",
        "#111        222#",
        "#111        222#",
        "#              #",
        "#              #",
        "#     ####     #",
        "#     ####     #",
        "#              #",
        "#              #",
        "#444        333#",
        "#444        333#",
        "#444        333#",
        "################",
    ),
    "five": (
        "################",
        "#11    22    33#",
        "#11    22    33#",
        "#11          33#",
        "#              #",
        "#     ####     #",
        "#     ####     #",
        "#     ####     #",
        "#              #",
        "#44          55#",
        "#44          55#",
        "#44          55#",
        "#              #",
        "################",
    ),
}
PAD_COLOURS = {
    "1": (230, 50, 50),  # red
    "2": (50, 120, 240),  # blue
    "3": (240, 200, 30),  # yellow
    "4": (160, 60, 220),  # purple
    "5": (250, 130, 20),  # orange (green is reserved for the countdown tint)
}
FLOOR, WALL, AGENT, STRIP = (255, 255, 255), (110, 110, 110), (0, 0, 0), (190, 190, 190)
GREEN_TINT = np.array((0, 255, 0), np.float32)


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
        self.floor = [(x, y) for y in range(HEIGHT) for x in range(WIDTH) if self.layout[y, x] == " "]
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
        x, y = self.position[0] + move[0], self.position[1] + move[1]
        if 0 <= x < WIDTH and 0 <= y < HEIGHT and self.layout[y, x] != "#":
            self.position = (x, y)
        cell = self.layout[self.position[1], self.position[0]]
        if cell in self.pads and (not self.sequence or self.sequence[-1] != cell):
            self.sequence = (self.sequence + [cell])[-len(self.pads) :]
        reward = 0.0
        if not self.countdown and tuple(self.sequence) == self.pads:
            reward = self.protocol.sequence_reward
            self.countdown = self.protocol.countdown
        self.steps += 1
        is_last = self.steps >= self.protocol.episode_length
        self._guard.finish(is_last)
        return wrappers.step_obs({"image": self._image()}, reward, is_first=False, is_last=is_last, is_terminal=False)

    def _respawn(self):
        self.position = self.floor[int(self._rng.integers(len(self.floor)))]
        self.sequence = []

    def _draw_background(self) -> np.ndarray:
        grid = np.zeros((HEIGHT + 2, WIDTH, 3), np.float32)
        grid[:] = STRIP
        for (y, x), cell in np.ndenumerate(self.layout):
            if cell == "#":
                grid[y, x] = WALL
            elif cell == " ":
                grid[y, x] = FLOOR
            else:  # pads are faded towards white unless the agent stands on them
                grid[y, x] = 0.25 * np.array(PAD_COLOURS[cell]) + 0.75 * np.array(FLOOR)
        return grid

    def _image(self) -> np.ndarray:
        grid = self._background.copy()
        x, y = self.position
        cell = self.layout[y, x]
        if cell in PAD_COLOURS:  # the whole pad the agent stands on lights up in full colour
            grid[:HEIGHT][self.layout == cell] = PAD_COLOURS[cell]
        for index, pad in enumerate(self.sequence):
            grid[HEIGHT : HEIGHT + 2, 1 + 3 * index : 3 + 3 * index] = PAD_COLOURS[pad]
        grid[y, x] = AGENT
        if self.countdown:
            grid = 0.5 * grid + 0.5 * GREEN_TINT
        image = np.repeat(np.repeat(grid.astype(np.uint8), CELL_PIXELS, 0), CELL_PIXELS, 1)
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
    description="VisualPinpad three/four/five: visit coloured pads in order, +10 per sequence, 2000-step episodes.",
)
