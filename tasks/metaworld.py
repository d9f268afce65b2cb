"""Meta-World's Sawyer manipulation tasks (PyPI `metaworld` 3.1.1, its v3 environments): the zero-shot planning
task set of THICK PlaNet (thick.md, "THICK PlaNet").

THICK used Multiworld's Sawyer door and pick tasks, which need mujoco-py and do not install here. Meta-World
has the same robot and the same kinds of task (door_open, pick_place, ...) on the `mujoco` bindings.

* Observations: a 64x64 RGB `image` from the protocol's camera and Meta-World's 39-d `vector` (hand, gripper,
  object poses; the goal stays hidden, Meta-World's default partial observability). Actions: 4-d in [-1, 1]
  (hand xyz displacement, gripper).
* Episodes: Meta-World's 500 control steps, action repeat 2 (250 agent steps); they end by truncation only.
  Reward: Meta-World's dense v3 reward (0..10 per control step), summed over the repeat. `success` (the episode
  stat and the leaderboard's episode value) is 1 if Meta-World's success flag was raised at any step.
* Task variation: one `MT1` benchmark per task, built with seed 0 (50 fixed object/goal placements); an
  episode with seed s uses placement s mod 50 and resets the simulator with seed s.

Installation: `metaworld` 3.1.1 pins mujoco 3.3.0 while dm-control needs the newer mujoco this project locks,
so it is installed without its pin (`pip install --no-deps metaworld==3.1.1`, in the README's install
command). With newer MuJoCo a weld constraint has 12 parameters instead of 11 (the last is 0 when the
relative pose is given explicitly, as Meta-World does), which breaks Meta-World's `reset_mocap_welds`; we
replace that one method with the same assignment padded to the model's width (`_patch_mocap_welds`). Checked
with Meta-World's own scripted policies (tests/test_suite_metaworld.py): they still solve the tasks.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from bench import spaces
from bench.api import Env, SuiteSpec, check_action
from tasks import wrappers

# Meta-World's 50 v3 environments (MT50), "door-open-v3" -> "door_open".
TASKS = (
    "assembly", "basketball", "bin_picking", "box_close", "button_press", "button_press_topdown",
    "button_press_topdown_wall", "button_press_wall", "coffee_button", "coffee_pull", "coffee_push", "dial_turn",
    "disassemble", "door_close", "door_lock", "door_open", "door_unlock", "drawer_close", "drawer_open",
    "faucet_close", "faucet_open", "hammer", "hand_insert", "handle_press", "handle_press_side", "handle_pull",
    "handle_pull_side", "lever_pull", "peg_insert_side", "peg_unplug_side", "pick_out_of_hole", "pick_place",
    "pick_place_wall", "plate_slide", "plate_slide_back", "plate_slide_back_side", "plate_slide_side", "push",
    "push_back", "push_wall", "reach", "reach_wall", "shelf_place", "soccer", "stick_pull", "stick_push",
    "sweep", "sweep_into", "window_close", "window_open",
)  # fmt: skip
CAMERAS = ("corner", "corner2", "corner3", "topview", "behindGripper", "gripperPOV")
PLACEMENTS = 50  # MT1's training placements per task
# Meta-World's weld parameters: anchor (3), relative pose (pos 3, quat 4), torque scale.
WELD = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 5.0)
INSTALL = "pip install --no-deps metaworld==3.1.1"


@dataclasses.dataclass(frozen=True)
class MetaWorldProtocol:
    image_size: int = 64
    camera: str = "corner2"
    action_repeat: int = 2
    episode_frames: int = 500  # Meta-World's max_path_length
    # Meta-World renders with MuJoCo's shadows and reflections; without them software rendering on a CPU is
    # ~3x faster (0.09 s instead of 0.28 s per 64x64 frame, measured here) and the scene is the same.
    shadows: bool = False

    def __post_init__(self):
        wrappers.require_positive(self, "image_size", "action_repeat", "episode_frames")
        wrappers.require(self.camera in CAMERAS, self, "camera", f"must be one of {', '.join(CAMERAS)}")


def _patch_mocap_welds(base) -> None:
    """Make `base.reset_mocap_welds` write Meta-World's weld parameters into welds of any width >= 11."""
    import mujoco

    def reset_mocap_welds(self) -> None:
        if self.model.nmocap > 0 and self.model.eq_data is not None:
            for i in range(self.model.eq_data.shape[0]):
                if self.model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD:
                    row = np.zeros(self.model.eq_data.shape[1])
                    row[: len(WELD)] = WELD
                    self.model.eq_data[i] = row

    base.reset_mocap_welds = reset_mocap_welds


def _load_metaworld():
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering, as for dm_control
    try:
        import metaworld
        from metaworld.sawyer_xyz_env import SawyerMocapBase
    except ImportError as error:
        raise RuntimeError(f"the metaworld suite needs the metaworld package ({error}); install it with: "
                           f"{INSTALL}") from None  # fmt: skip
    _patch_mocap_welds(SawyerMocapBase)
    return metaworld


class MetaWorldEnv(Env):
    def __init__(self, task: str, protocol: MetaWorldProtocol):
        metaworld = _load_metaworld()
        self.task, self.protocol = task, protocol
        name = task.replace("_", "-") + "-v3"
        self._benchmark = metaworld.MT1(name, seed=0)
        import mujoco

        size = protocol.image_size
        self._env = self._benchmark.train_classes[name]()
        # Our own renderer on the env's model and data: the same image as Meta-World's `render()` (checked
        # pixel for pixel with shadows on), with MuJoCo's scene flags under the protocol's control.
        self._renderer = mujoco.Renderer(self._env.model, size, size)
        self._act_space = {"action": spaces.box((4,), -1.0, 1.0)}
        self._obs_space = {
            "image": spaces.image(size, size),
            "vector": spaces.Space("float32", self._env.observation_space.shape),
            **spaces.step_spaces(),
        }
        self._guard = wrappers.EpisodeGuard(f"metaworld {task}")
        self._frames, self.success = 0, False

    @property
    def obs_space(self):
        return self._obs_space

    @property
    def act_space(self):
        return self._act_space

    def reset(self, *, seed: int):
        seed = wrappers.check_seed(seed)
        self._env.set_task(self._benchmark.train_tasks[seed % PLACEMENTS])
        vector, _ = self._env.reset(seed=seed)
        self._frames, self.success = 0, False
        self._guard.start()
        return wrappers.step_obs(self._sensors(vector), 0.0, is_first=True, is_last=False, is_terminal=False)

    def step(self, action):
        self._guard.check_step()
        control = np.clip(check_action(self._act_space, action)["action"], -1.0, 1.0)
        reward = 0.0
        for _ in range(self.protocol.action_repeat):
            vector, step_reward, _, truncated, info = self._env.step(control)
            self._frames += 1
            reward += float(step_reward)
            self.success = self.success or bool(info.get("success", 0.0))
            if truncated or self._frames >= self.protocol.episode_frames:
                break
        is_last = bool(truncated) or self._frames >= self.protocol.episode_frames
        self._guard.finish(is_last)
        return wrappers.step_obs(self._sensors(vector), reward, is_first=False, is_last=is_last, is_terminal=False)

    def _sensors(self, vector) -> dict:
        return {"image": self.render(), "vector": np.asarray(vector, np.float32)}

    def render(self):
        import mujoco

        self._renderer.update_scene(self._env.data, camera=self.protocol.camera)
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION):
            self._renderer.scene.flags[flag] = self.protocol.shadows
        return np.ascontiguousarray(self._renderer.render(), dtype=np.uint8)

    def episode_stats(self):
        return {"success": float(self.success)}

    def close(self):
        self._renderer.close()
        self._env.close()


def make_env(task: str, protocol: MetaWorldProtocol, worker_index: int = 0) -> MetaWorldEnv:
    del worker_index
    return MetaWorldEnv(SUITE.resolve_task(task), protocol)


SUITE = SuiteSpec(
    name="metaworld",
    tasks=TASKS,
    protocol_cls=MetaWorldProtocol,
    make_env=make_env,
    budget=250_000,  # our choice: 500k control steps; THICK PlaNet is evaluated zero-shot after offline data
    eval_protocol="final_eval",
    eval_episodes=10,
    score_fields=("success",),
    normaliser="identity",
    description="Meta-World's 50 Sawyer tasks (v3) from 64x64 pixels and proprioception; success rate.",
    task_aliases={task.replace("_", "-") + "-v3": task for task in TASKS},
)
