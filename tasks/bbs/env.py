"""The BringBackShapes environment: push every shape into the goal slot in the right wall.

One agent step = `action_repeat` physics frames (default 4) under the same action. The policy's action is
a box [-1, 1]^2 mapped linearly to (heading in [0, 2 pi], force in [0, 400]). The observation `image` is
the agent-centred crop of the arena (`view_size` px, default 250) shrunk to `image_size` (64) RGB; the
reward is the number of objects returned during the step. The episode is terminal when every object is
returned and is truncated (is_last without is_terminal) after `time_limit` frames (3000 = 750 steps).

`priv_state` (float32) is for scripted policies and logging only (learning agents never see `priv_`
keys); its layout, for K = `num_objects` (the maximum when `variable_num_objects`), in arena pixels with y
pointing down:

    [0:2]          agent position (x, y)
    [2:4]          agent velocity (px/s)
    [4:4+2K]       object centres x0, y0, x1, y1, ... (0 for returned or absent objects)
    [4+2K:4+3K]    object alive mask (1 = still in the arena)
    [4+3K:7+3K]    goal: goal line x, slot top y, slot bottom y
    [7+3K:9+3K]    arena width, length

`priv_state_layout(K)` gives these slices by name.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from bench import spaces
from bench.api import Env, check_action
from tasks.bbs import render
from tasks.bbs.arena import MAX_FORCE, WALL, Arena, Layout

PRIV_STATE_FIXED = 9  # entries of priv_state besides the 3 per object slot


@dataclasses.dataclass(frozen=True)
class BBSProtocol:
    """Every setting of the task. Defaults are the published VSG setup."""

    num_objects: int = 5  # shapes to return (the maximum if variable_num_objects)
    num_distractors: int | None = None  # kites; None = from the task name (distract{D}_...)
    arena_scale: float | None = None  # arena 800 s x 700 s px; None = from the task name (..._size{S})
    view_size: int = 250  # side of the agent-centred crop in arena px (upstream agent_view_size 125 = half)
    image_size: int = 64  # side of the observed image
    variable_num_objects: bool = False  # each episode draws 1..num_objects objects
    variable_num_distractors: bool = False  # each episode draws 1..num_distractors kites
    variable_goal_position: bool = False  # each episode draws the slot's height along the right wall
    time_limit: int = 3000  # frames (not agent steps) until truncation
    action_repeat: int = 4  # frames per agent step


def priv_state_layout(num_objects: int) -> dict[str, slice]:
    k = num_objects
    return {
        "agent_position": slice(0, 2),
        "agent_velocity": slice(2, 4),
        "object_positions": slice(4, 4 + 2 * k),
        "object_alive": slice(4 + 2 * k, 4 + 3 * k),
        "goal": slice(4 + 3 * k, 7 + 3 * k),
        "arena_size": slice(7 + 3 * k, 9 + 3 * k),
    }


def action_to_physics(action: np.ndarray) -> tuple[float, float]:
    """Policy action in [-1, 1]^2 -> (heading in [0, 2 pi] radians, force in [0, MAX_FORCE])."""
    heading = (float(action[0]) + 1.0) * math.pi
    force = (float(action[1]) + 1.0) / 2.0 * MAX_FORCE
    return heading, force


def validate_protocol(protocol: BBSProtocol) -> None:
    """Raise a ValueError naming the first setting that cannot work."""
    if protocol.num_distractors is None or protocol.arena_scale is None:
        raise ValueError(
            "BBSProtocol.num_distractors and arena_scale must be set (the suite sets them from the task "
            "name, e.g. distract2_size1.4)"
        )
    checks = [
        (protocol.num_objects >= 1, f"num_objects must be >= 1, got {protocol.num_objects}"),
        (protocol.num_distractors >= 0, f"num_distractors must be >= 0, got {protocol.num_distractors}"),
        (protocol.arena_scale >= 0.5, f"arena_scale must be >= 0.5, got {protocol.arena_scale}"),
        (protocol.image_size >= 1, f"image_size must be >= 1, got {protocol.image_size}"),
        (protocol.time_limit >= 1, f"time_limit must be >= 1 frame, got {protocol.time_limit}"),
        (protocol.action_repeat >= 1, f"action_repeat must be >= 1, got {protocol.action_repeat}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(f"BBSProtocol: {message}")
    layout = Layout.create(protocol.arena_scale)
    if not 1 <= protocol.view_size <= min(layout.width, layout.length):
        raise ValueError(
            f"BBSProtocol: view_size must be in [1, {min(layout.width, layout.length)}] for an arena of "
            f"{layout.width} x {layout.length} px, got {protocol.view_size}"
        )


class BringBackShapes(Env):
    """One BringBackShapes environment (see the module docstring). Every random draw of an episode comes
    from `numpy.random.default_rng(seed)` of `reset(seed=...)`, so an episode is fixed by its seed and
    actions. `exact_pixels=True` draws the whole crop before shrinking it (the slow reference path of
    tasks.bbs.render; same images), for speed comparisons."""

    def __init__(self, protocol: BBSProtocol, *, exact_pixels: bool = False):
        validate_protocol(protocol)
        self.protocol = protocol
        size = protocol.image_size
        self._obs_space = {
            "image": spaces.image(size, size),
            "priv_state": spaces.Space("float32", (PRIV_STATE_FIXED + 3 * protocol.num_objects,)),
            **spaces.step_spaces(),
        }
        self._act_space = {"action": spaces.box((2,), -1.0, 1.0)}
        self._layout_slices = priv_state_layout(protocol.num_objects)
        self.view = render.ViewRenderer(protocol.view_size, size, exact_pixels=exact_pixels)
        self._static_layers: dict[Layout, np.ndarray] = {}  # one per goal position seen
        self.arena: Arena | None = None
        self._done = True

    @property
    def obs_space(self):
        return self._obs_space

    @property
    def act_space(self):
        return self._act_space

    def reset(self, *, seed: int) -> dict:
        protocol = self.protocol
        rng = np.random.default_rng(seed)
        num_objects = protocol.num_objects
        if protocol.variable_num_objects:
            num_objects = int(rng.integers(1, protocol.num_objects + 1))
        num_distractors = protocol.num_distractors
        if protocol.variable_num_distractors and protocol.num_distractors > 0:
            num_distractors = int(rng.integers(1, protocol.num_distractors + 1))
        layout = Layout.create(protocol.arena_scale)
        if protocol.variable_goal_position:
            layout = Layout.create(
                protocol.arena_scale, rng.uniform(WALL, layout.length - WALL - layout.goal_height)
            )
        self.arena = Arena(layout, num_objects=num_objects, num_distractors=num_distractors, rng=rng)
        if layout not in self._static_layers:
            if len(self._static_layers) >= 8:  # variable goals: keep the cache small
                self._static_layers.clear()
            self._static_layers[layout] = render.static_layer(layout)
        self._background = self._static_layers[layout]
        self.frames = 0
        self._done = False
        return self._observation(0.0, first=True)

    def step(self, action) -> dict:
        if self.arena is None:
            raise RuntimeError("step() called before reset(seed=...)")
        if self._done:
            raise RuntimeError("step() called after the episode ended; call reset(seed=...) first")
        heading, force = action_to_physics(check_action(self._act_space, action)["action"])
        reward = 0
        for _ in range(self.protocol.action_repeat):
            reward += self.arena.step_frame(heading, force)
            self.frames += 1
            if self.arena.all_returned or self.frames >= self.protocol.time_limit:
                break
        terminal = self.arena.all_returned
        last = terminal or self.frames >= self.protocol.time_limit
        self._done = last
        return self._observation(float(reward), last=last, terminal=terminal)

    def episode_stats(self) -> dict[str, float]:
        if self.arena is None:
            return {}
        returned = self.arena.returned
        return {"objects_returned": float(returned), "score": returned / len(self.arena.objects)}

    def render(self) -> np.ndarray:
        """The full arena with the agent's (tinted) view square, (length, width, 3) uint8."""
        if self.arena is None:
            raise RuntimeError("render() called before reset(seed=...)")
        x, y = self._camera()
        return render.full_arena(self._background, self.arena.drawables(), (x, y, self.protocol.view_size))

    def close(self) -> None:
        self.arena = None
        self._done = True

    # ------------------------------------------------------------------------------------------ helpers

    def _camera(self) -> tuple[int, int]:
        position = self.arena.agent.position
        return self.view.camera(self.arena.layout, position.x, position.y)

    def _observation(self, reward: float, first=False, last=False, terminal=False) -> dict:
        x, y = camera = self._camera()
        size = self.protocol.view_size
        drawables = self.arena.drawables(region=(x, y, x + size, y + size))
        image = self.view.observe(self._background, drawables, camera)
        return {
            "image": image,
            "priv_state": self._priv_state(),
            "reward": np.float32(reward),
            "is_first": first,
            "is_last": last,
            "is_terminal": terminal,
        }

    def _priv_state(self) -> np.ndarray:
        arena, slices = self.arena, self._layout_slices
        state = np.zeros(self._obs_space["priv_state"].shape, np.float32)
        state[slices["agent_position"]] = tuple(arena.agent.position)
        state[slices["agent_velocity"]] = tuple(arena.agent.velocity)
        positions = state[slices["object_positions"]].reshape(-1, 2)  # a view into state
        alive = state[slices["object_alive"]]
        for index, item in enumerate(arena.objects):
            if item.alive:
                positions[index] = tuple(item.body.position)
                alive[index] = 1.0
        layout = arena.layout
        state[slices["goal"]] = (layout.goal_x, layout.goal_top, layout.goal_bottom)
        state[slices["arena_size"]] = (layout.width, layout.length)
        return state
