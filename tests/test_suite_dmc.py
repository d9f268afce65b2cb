"""DeepMind Control: task lists, action repeat, cameras, truncation, proprio vectors, seeding, bad input."""

import os

import numpy as np
import pytest

from tasks import wrappers
from tasks.dmc import (
    PROPRIO_SUITE,
    PROPRIO_TASKS,
    VISION_SUITE,
    VISION_TASKS,
    DMCEnv,
    DMCProprioProtocol,
    DMCVisionProtocol,
    split_task,
)


def reference_env(task: str, seed: int):
    """A plain dm_control env in the state our env starts an episode with `seed`."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from dm_control import suite

    env = suite.load(*split_task(task), task_kwargs={"random": wrappers.derive_seed(seed, "dmc_task")})
    return env, env.reset()


def test_task_lists_are_dreamerv3s():
    # DreamerV3's dmc_vision-dreamerv3 / dmc_proprio-dreamerv3 score files, without the "dmc_" prefix.
    assert len(VISION_TASKS) == 20 and len(PROPRIO_TASKS) == 18
    assert set(VISION_TASKS) - set(PROPRIO_TASKS) == {"quadruped_run", "quadruped_walk"}
    assert VISION_SUITE.resolve_task("dmc_walker_walk") == "walker_walk"
    assert PROPRIO_SUITE.frames_per_step(DMCProprioProtocol()) == 2
    assert split_task("ball_in_cup_catch") == ("ball_in_cup", "catch")
    assert split_task("cartpole_balance_sparse") == ("cartpole", "balance_sparse")
    with pytest.raises(KeyError, match="domain"):
        split_task("pong")


def test_action_repeat_and_proprio_vector_match_dm_control():
    seed = 5
    env = DMCEnv("cartpole_swingup", DMCProprioProtocol(), vision=False)
    obs = env.reset(seed=seed)
    raw, time_step = reference_env("cartpole_swingup", seed)
    flat = lambda ts: np.concatenate([np.asarray(v, np.float32).ravel() for v in ts.observation.values()])  # noqa: E731
    assert obs["vector"].dtype == np.float32 and obs["vector"].shape == env.obs_space["vector"].shape == (5,)
    np.testing.assert_array_equal(obs["vector"], flat(time_step))
    for action in (0.5, -1.0, 0.25):
        obs = env.step({"action": np.array([action], np.float32)})
        reward = 0.0
        for _ in range(2):  # action repeat 2: rewards summed over both control steps
            time_step = raw.step(np.array([action]))
            reward += time_step.reward
        np.testing.assert_array_equal(obs["vector"], flat(time_step))
        assert obs["reward"] == pytest.approx(reward, rel=1e-6)


def test_episode_is_500_agent_steps_and_truncated():
    env = DMCEnv("cartpole_balance", DMCProprioProtocol(), vision=False)
    env.reset(seed=0)
    steps = 0
    while not (obs := env.step({"action": np.zeros(1, np.float32)}))["is_last"]:
        steps += 1
        assert not obs["is_terminal"]
    assert steps + 1 == 500 and not obs["is_terminal"]
    with pytest.raises(RuntimeError, match="reset"):
        env.step({"action": np.zeros(1, np.float32)})


def test_vision_cameras_and_rendering():
    env = DMCEnv("walker_walk", DMCVisionProtocol(), vision=True)
    obs = env.reset(seed=1)
    assert env.camera == 0 and obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
    assert obs["image"].std() > 5  # EGL rendered a scene, not a blank frame
    raw, _ = reference_env("walker_walk", 1)
    action = np.linspace(-1, 1, 6).astype(np.float32)
    obs = env.step({"action": action})
    raw.step(action)
    raw.step(action)
    np.testing.assert_array_equal(obs["image"], raw.physics.render(64, 64, camera_id=0))
    quadruped = DMCEnv("quadruped_walk", DMCVisionProtocol(), vision=True)
    image = quadruped.reset(seed=0)["image"]
    assert quadruped.camera == 2
    np.testing.assert_array_equal(image, quadruped._env.physics.render(64, 64, camera_id=2))
    assert not (image == quadruped._env.physics.render(64, 64, camera_id=0)).all()
    with pytest.raises(ValueError, match="env.camera=9"):
        DMCEnv("walker_walk", DMCVisionProtocol(camera=9), vision=True)


def test_actions_are_normalised_to_the_unit_box():
    env = DMCEnv("quadruped_run", DMCProprioProtocol(), vision=False)
    space = env.act_space["action"]
    assert (space.shape, space.low, space.high) == ((12,), -1.0, 1.0)
    low, high = env._action_low, env._action_high
    assert not (low == -1).all() or not (high == 1).all()  # quadruped's bounds are not the unit box
    env.reset(seed=0)
    env.step({"action": np.ones(12, np.float32)})
    np.testing.assert_allclose(env._env.physics.data.ctrl, high)


def test_seeding():
    env = DMCEnv("cartpole_swingup", DMCProprioProtocol(), vision=False)
    a, b, c = (env.reset(seed=s)["vector"] for s in (3, 3, 4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_bad_actions():
    env = DMCEnv("cartpole_swingup", DMCProprioProtocol(), vision=False)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"expected shape \(1,\)"):
        env.step({"action": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match=r"outside \[-1.0, 1.0\]"):
        env.step({"action": np.array([3.0], np.float32)})
    with pytest.raises(ValueError, match="non-finite"):
        env.step({"action": np.array([np.nan], np.float32)})
