"""DeepMind Control Suite, vision and proprioceptive variants with DreamerV3's task lists.

* `dmc_vision`: 64x64 RGB from camera 0 (camera 2 for quadruped, whose camera 0 is too far away),
  the 20 tasks of DreamerV3's vision curves.
* `dmc_proprio`: a `vector` observation, the task's observation dict flattened and concatenated in
  dm_control's key order, as float32; the 18 tasks of DreamerV3's proprio curves.
* Actions in [-1, 1] per dimension, rescaled to the task's bounds. Action repeat 2; dm_control episodes last 1000 control steps (all listed tasks), i.e. 500 agent steps,
  and end by truncation (is_last without is_terminal). Budget 500k agent steps = 1M env steps.
* Score = undiscounted episode return (0..1000); normaliser "div1000".

Headless rendering uses EGL (MUJOCO_GL=egl, set before dm_control is imported, unless the user chose a
backend). Every episode is seeded: the task's random state (which draws the initial state) is re-seeded
from the episode seed before the reset.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from bench import spaces
from bench.api import Env, SuiteSpec, check_action
from tasks import wrappers

# Task names are DreamerV3's without the "dmc_" prefix; domains with underscores are matched first.
VISION_TASKS = (
    "acrobot_swingup", "ball_in_cup_catch", "cartpole_balance", "cartpole_balance_sparse", "cartpole_swingup",
    "cartpole_swingup_sparse", "cheetah_run", "finger_spin", "finger_turn_easy", "finger_turn_hard",
    "hopper_hop", "hopper_stand", "pendulum_swingup", "quadruped_run", "quadruped_walk", "reacher_easy",
    "reacher_hard", "walker_run", "walker_stand", "walker_walk",
)  # fmt: skip
PROPRIO_TASKS = tuple(task for task in VISION_TASKS if not task.startswith("quadruped_"))
DOMAINS = ("ball_in_cup", "point_mass", "acrobot", "cartpole", "cheetah", "finger", "hopper", "pendulum",
           "quadruped", "reacher", "walker", "humanoid", "manipulator", "swimmer", "fish")  # fmt: skip
# Cameras that frame the body; everything else uses camera 0 (DreamerV3 and DrQ-v2 use the same choice).
DEFAULT_CAMERAS = {"quadruped": 2}


def split_task(task: str) -> tuple[str, str]:
    """'ball_in_cup_catch' -> ('ball_in_cup', 'catch')."""
    for domain in DOMAINS:
        if task.startswith(domain + "_"):
            return domain, task[len(domain) + 1 :]
    raise KeyError(f"cannot split {task!r} into a dm_control domain and task; domains: {', '.join(DOMAINS)}")


@dataclasses.dataclass(frozen=True)
class DMCVisionProtocol:
    image_size: int = 64  # rendered observation side in pixels
    action_repeat: int = 2  # control steps per agent step
    camera: int = -1  # -1 = the task's default: 0, or 2 for quadruped
    episode_frames: int = 1000  # truncation in control steps (dm_control's own limit is 1000 for all tasks)

    def __post_init__(self):
        wrappers.require_positive(self, "image_size", "action_repeat", "episode_frames")
        wrappers.require(self.camera >= -1, self, "camera", "must be a camera index or -1 for the default")


@dataclasses.dataclass(frozen=True)
class DMCProprioProtocol:
    action_repeat: int = 2  # control steps per agent step
    episode_frames: int = 1000  # truncation in control steps
    image_size: int = 64  # size of render() frames for videos only; agents see the vector

    def __post_init__(self):
        wrappers.require_positive(self, "image_size", "action_repeat", "episode_frames")


def _load_dm_control():
    # dm_control picks its OpenGL backend when first imported; EGL renders headless on CPU (Mesa) and GPU.
    os.environ.setdefault("MUJOCO_GL", "egl")
    from dm_control import suite

    return suite


class DMCEnv(Env):
    """One dm_control task; `vision=True` observes {"image"}, otherwise {"vector"}."""

    def __init__(self, task: str, protocol, *, vision: bool):
        suite = _load_dm_control()
        domain, name = split_task(task)
        self.task = task
        self.protocol = protocol
        self.vision = vision
        # The task's RandomState is re-seeded on every reset; this initial seed is never used for an episode.
        self._env = suite.load(domain, name, task_kwargs={"random": 0})
        camera = getattr(protocol, "camera", -1)
        self.camera = DEFAULT_CAMERAS.get(domain, 0) if camera == -1 else camera
        ncam = self._env.physics.model.ncam
        if not 0 <= self.camera < ncam:
            raise ValueError(f"env.camera={camera}: {task} has cameras 0..{ncam - 1}")
        spec = self._env.action_spec()
        # Agents act in [-1, 1]^n; we rescale to the task's bounds (DreamerV3's NormalizeAction). The map is
        # the identity for every listed task except quadruped, whose joints have narrower/wider ranges.
        self._action_low = np.asarray(spec.minimum, np.float64)
        self._action_high = np.asarray(spec.maximum, np.float64)
        self._act_space = {"action": spaces.box(spec.shape, -1.0, 1.0)}
        self._keys = list(self._env.observation_spec())
        if vision:
            sensors = {"image": spaces.image(protocol.image_size, protocol.image_size)}
        else:
            size = sum(int(np.prod(spec.shape)) for spec in self._env.observation_spec().values())
            sensors = {"vector": spaces.Space("float32", (size,))}
        self._obs_space = {**sensors, **spaces.step_spaces()}
        self._guard = wrappers.EpisodeGuard(f"dmc {task}")
        self._frames = 0

    @property
    def obs_space(self):
        return self._obs_space

    @property
    def act_space(self):
        return self._act_space

    def reset(self, *, seed: int):
        seed = wrappers.check_seed(seed)
        # Task.random is the RandomState that initialize_episode draws the initial state from.
        self._env.task.random.seed(wrappers.derive_seed(seed, "dmc_task"))
        time_step = self._env.reset()
        self._frames = 0
        self._guard.start()
        return wrappers.step_obs(self._sensors(time_step), 0.0, is_first=True, is_last=False, is_terminal=False)

    def step(self, action):
        self._guard.check_step()
        unit = check_action(self._act_space, action)["action"].astype(np.float64)
        control = self._action_low + (np.clip(unit, -1.0, 1.0) + 1.0) / 2.0 * (self._action_high - self._action_low)
        reward = 0.0
        for _ in range(self.protocol.action_repeat):
            time_step = self._env.step(control)
            self._frames += 1
            reward += time_step.reward or 0.0
            if time_step.last() or self._frames >= self.protocol.episode_frames:
                break
        # dm_control signals termination by discount 0; the time limit keeps discount 1 (truncation).
        is_terminal = time_step.last() and time_step.discount == 0
        is_last = time_step.last() or self._frames >= self.protocol.episode_frames
        self._guard.finish(is_last)
        return wrappers.step_obs(self._sensors(time_step), reward, is_first=False, is_last=is_last, is_terminal=is_terminal)

    def _sensors(self, time_step) -> dict:
        if self.vision:
            return {"image": self.render()}
        parts = [np.asarray(time_step.observation[key], np.float32).reshape(-1) for key in self._keys]
        return {"vector": np.concatenate(parts)}

    def render(self):
        size = self.protocol.image_size
        return self._env.physics.render(size, size, camera_id=self.camera)

    def close(self):
        self._env.close()


def make_vision_env(task: str, protocol: DMCVisionProtocol, worker_index: int = 0) -> DMCEnv:
    del worker_index
    return DMCEnv(task, protocol, vision=True)


def make_proprio_env(task: str, protocol: DMCProprioProtocol, worker_index: int = 0) -> DMCEnv:
    del worker_index
    return DMCEnv(task, protocol, vision=False)


VISION_SUITE = SuiteSpec(
    name="dmc_vision",
    tasks=VISION_TASKS,
    protocol_cls=DMCVisionProtocol,
    make_env=make_vision_env,
    budget=500_000,
    eval_protocol="final_eval",
    eval_episodes=10,
    normaliser="div1000",
    description="DeepMind Control from 64x64 pixels: DreamerV3's 20 tasks, action repeat 2, 1M env steps.",
    task_aliases={f"dmc_{task}": task for task in VISION_TASKS},
)
PROPRIO_SUITE = SuiteSpec(
    name="dmc_proprio",
    tasks=PROPRIO_TASKS,
    protocol_cls=DMCProprioProtocol,
    make_env=make_proprio_env,
    # DreamerV3's proprio results are at 500k env steps (its published curves end at 490k frames), i.e.
    # 250k agent steps at action repeat 2; the vision results are at 1M env steps.
    budget=250_000,
    eval_protocol="final_eval",
    eval_episodes=10,
    normaliser="div1000",
    description="DeepMind Control from proprioception: DreamerV3's 18 tasks, action repeat 2, 500k env steps.",
    task_aliases={f"dmc_{task}": task for task in PROPRIO_TASKS},
)
