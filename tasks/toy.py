"""Tiny pixel tasks that a world-model agent learns in minutes on a CPU; used by every agent's learning test.

* `reach`   (dense reward, discrete): walk to the goal cell of a small grid; reward each step is
            1 - manhattan distance / max distance, so a random walk earns about half of the optimum.
* `reach_progress` (discrete): reach with the distance covered as the reward (+1 a step closer, -1 farther,
            0 otherwise): a reward whose sign carries the goal, for agents that only see reward signs (IRIS).
* `keydoor` (sparse reward, sub-goals, discrete): pick up the key (step on it), then walk into the door in
            the top wall; reward 1 only when the door opens with the key, which ends the episode (terminal).
            Two sub-goals in sequence: the kind of task hierarchical agents are made for.
* `point`   (dense reward, continuous): move a point in the unit square with a 2-D velocity action towards a
            goal; reward 1 - distance / sqrt(2) each step. Observes both `image` and a `vector`.

Images are `size` x `size` RGB (default 16, a 4x4 latent after two 2x poolings). Every episode is
determined by its seed and its actions.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bench import spaces
from bench.api import Env, SuiteSpec, check_action

MOVES = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]])  # noop, up, down, left, right (row, col)
AGENT, GOAL, KEY, DOOR, WALL, HUD = (
    (255, 255, 255), (0, 200, 0), (255, 200, 0), (160, 60, 0), (70, 70, 70), (255, 200, 0),
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ToyProtocol:
    size: int = 16  # rendered image height and width in pixels
    grid: int = 5  # grid cells per side (reach, keydoor)
    episode_length: int = 0  # 0 = the task's default (reach 20, keydoor 40, point 30)
    action_repeat: int = 1


DEFAULT_LENGTH = {"reach": 20, "reach_progress": 20, "keydoor": 40, "point": 30}


def _render_cells(grid: int, cells: dict[tuple[int, int], tuple[int, int, int]], size: int, hud=None):
    """Draw a grid x grid board (one colour per cell) with an optional HUD row, resized to size x size."""
    rows = grid + 1 if hud is not None else grid
    board = np.zeros((rows, grid, 3), np.uint8)
    for (row, col), colour in cells.items():
        board[row, col] = colour
    if hud is not None:
        board[grid, :] = hud
    # nearest-neighbour resize of the board to the image
    ys = np.arange(size) * rows // size
    xs = np.arange(size) * grid // size
    return board[ys][:, xs]


class GridEnv(Env):
    """reach and keydoor."""

    def __init__(self, task: str, protocol: ToyProtocol):
        self.task = task
        self.protocol = protocol
        self.length = protocol.episode_length or DEFAULT_LENGTH[task]
        self._obs_space = {"image": spaces.image(protocol.size, protocol.size), **spaces.step_spaces()}
        self._act_space = {"action": spaces.discrete(len(MOVES))}
        self._done = True

    @property
    def obs_space(self):
        return self._obs_space

    @property
    def act_space(self):
        return self._act_space

    def reset(self, *, seed: int):
        rng = np.random.default_rng(seed)
        g = self.protocol.grid
        cells = [(r, c) for r in range(g) for c in range(g)]
        if self.task in ("reach", "reach_progress"):
            picks = rng.choice(len(cells), 2, replace=False)
            self.agent, self.goal = (np.array(cells[i]) for i in picks)
        else:
            # the door sits in the top wall (row 0); agent and key start below it
            self.door = np.array([0, int(rng.integers(g))])
            inner = [cell for cell in cells if cell[0] > 0]
            picks = rng.choice(len(inner), 2, replace=False)
            self.agent, self.key = (np.array(inner[i]) for i in picks)
            self.has_key = False
        self.steps = 0
        self.returned = 0.0
        self.success = False
        self._done = False
        return self._obs(0.0, first=True)

    def step(self, action):
        if self._done:
            raise RuntimeError("step() called after the episode ended; call reset(seed=...) first")
        action = check_action(self._act_space, action)
        reward, terminal = 0.0, False
        for _ in range(self.protocol.action_repeat):
            target = np.clip(self.agent + MOVES[int(action["action"])], 0, self.protocol.grid - 1)
            if self.task == "reach_progress":
                before = np.abs(self.agent - self.goal).sum()
                self.agent = target
                reward += float(before - np.abs(self.agent - self.goal).sum())
            elif self.task == "reach":
                self.agent = target
                distance = np.abs(self.agent - self.goal).sum()
                reward += 1.0 - distance / (2 * (self.protocol.grid - 1))
            else:
                if (target == self.door).all():
                    if self.has_key:
                        self.agent = target
                        reward += 1.0
                        terminal = True
                        self.success = True
                        break
                    # a locked door blocks the way
                else:
                    self.agent = target
                if not self.has_key and (self.agent == self.key).all():
                    self.has_key = True
        self.steps += 1
        self.returned += reward
        last = terminal or self.steps >= self.length
        self._done = last
        return self._obs(reward, last=last, terminal=terminal)

    def _obs(self, reward, first=False, last=False, terminal=False):
        cells = {}
        hud = None
        if self.task in ("reach", "reach_progress"):
            cells[tuple(self.goal)] = GOAL
        else:
            cells[tuple(self.door)] = DOOR
            if not self.has_key:
                cells[tuple(self.key)] = KEY
            hud = HUD if self.has_key else (0, 0, 0)
        cells[tuple(self.agent)] = AGENT
        return {
            "image": _render_cells(self.protocol.grid, cells, self.protocol.size, hud),
            "reward": np.float32(reward),
            "is_first": first,
            "is_last": last,
            "is_terminal": terminal,
        }

    def episode_stats(self):
        return {"success": float(self.success)} if self.task == "keydoor" else {}


class PointEnv(Env):
    """A point mass in the unit square, continuous 2-D velocity actions."""

    speed = 0.1

    def __init__(self, protocol: ToyProtocol):
        self.protocol = protocol
        self.length = protocol.episode_length or DEFAULT_LENGTH["point"]
        self._obs_space = {
            "image": spaces.image(protocol.size, protocol.size),
            "vector": spaces.box((4,), 0.0, 1.0),
            **spaces.step_spaces(),
        }
        self._act_space = {"action": spaces.box((2,), -1.0, 1.0)}
        self._done = True

    @property
    def obs_space(self):
        return self._obs_space

    @property
    def act_space(self):
        return self._act_space

    def reset(self, *, seed: int):
        rng = np.random.default_rng(seed)
        self.position, self.goal = rng.uniform(0.0, 1.0, (2, 2))
        self.steps = 0
        self._done = False
        return self._obs(0.0, first=True)

    def step(self, action):
        if self._done:
            raise RuntimeError("step() called after the episode ended; call reset(seed=...) first")
        action = check_action(self._act_space, action)
        reward = 0.0
        for _ in range(self.protocol.action_repeat):
            self.position = np.clip(self.position + self.speed * action["action"], 0.0, 1.0)
            reward += 1.0 - np.linalg.norm(self.position - self.goal) / np.sqrt(2.0)
        self.steps += 1
        self._done = self.steps >= self.length
        return self._obs(reward, last=self._done)

    def _obs(self, reward, first=False, last=False):
        size = self.protocol.size
        image = np.zeros((size, size, 3), np.uint8)
        for point, colour in ((self.goal, GOAL), (self.position, AGENT)):
            row, col = np.minimum((point * size).astype(int), size - 1)
            image[max(row - 1, 0) : row + 1, max(col - 1, 0) : col + 1] = colour
        return {
            "image": image,
            "vector": np.concatenate([self.position, self.goal]).astype(np.float32),
            "reward": np.float32(reward),
            "is_first": first,
            "is_last": last,
            "is_terminal": False,
        }


def make_env(task: str, protocol: ToyProtocol, worker_index: int = 0) -> Env:
    task = SUITE.resolve_task(task)
    if task == "point":
        return PointEnv(protocol)
    return GridEnv(task, protocol)


SUITE = SuiteSpec(
    name="toy",
    tasks=("reach", "keydoor", "point", "reach_progress"),
    protocol_cls=ToyProtocol,
    make_env=make_env,
    budget=20_000,
    eval_protocol="final_eval",
    eval_episodes=10,
    score_fields=("success",),
    normaliser="toy",
    description="Tiny pixel tasks (dense reach, key-then-door sub-goals, continuous point) for learning tests.",
)
