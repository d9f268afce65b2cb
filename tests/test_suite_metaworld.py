"""The Meta-World suite (tasks/metaworld.py): Meta-World 3.1.1 runs on this project's newer MuJoCo with the weld
patch, its own scripted policies still solve tasks through our environment, and the env follows the suite
contract (spaces, seeding, truncation, success)."""

from __future__ import annotations

import numpy as np
import pytest

from bench import registry
from tasks import metaworld as mw


def _env(task="door_open", **protocol):
    return mw.make_env(task, mw.MetaWorldProtocol(**protocol))


def test_registered_with_the_fifty_tasks_and_aliases():
    suite = registry.get_suite("metaworld")
    assert len(suite.tasks) == 50 and "door_open" in suite.tasks and "pick_place" in suite.tasks
    assert suite.resolve_task("door-open-v3") == "door_open"
    with pytest.raises(Exception, match="door_opn"):
        suite.resolve_task("door_opn")


def test_weld_patch_writes_metaworlds_parameters_padded_to_the_model_width():
    env = _env()
    model = env._env.model
    import mujoco

    welds = [i for i in range(model.neq) if model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD]
    assert welds, "Meta-World's Sawyer drives its hand through a mocap weld"
    for i in welds:
        np.testing.assert_array_equal(model.eq_data[i, : len(mw.WELD)], mw.WELD)
        np.testing.assert_array_equal(model.eq_data[i, len(mw.WELD) :], 0.0)


def test_our_renderer_draws_metaworlds_image():
    """With shadows on, our renderer's frame equals Meta-World's own `render()` pixel for pixel."""
    env = _env(image_size=32, shadows=True)
    env.reset(seed=1)
    theirs = type(env._env)(render_mode="rgb_array", camera_name=env.protocol.camera, width=32, height=32)
    theirs.set_task(env._benchmark.train_tasks[1])
    theirs.reset(seed=1)
    theirs.data.qpos[:], theirs.data.qvel[:] = env._env.data.qpos, env._env.data.qvel
    import mujoco

    mujoco.mj_forward(theirs.model, theirs.data)
    np.testing.assert_array_equal(env.render(), theirs.render())
    assert not np.array_equal(_env(image_size=32).reset(seed=1)["image"], env.reset(seed=1)["image"])  # shadows


def test_spaces_seeding_and_truncation():
    env = _env(image_size=32)
    first = env.reset(seed=3)
    assert first["image"].shape == (32, 32, 3) and first["image"].dtype == np.uint8
    assert first["vector"].shape == env.obs_space["vector"].shape and first["is_first"]
    again = _env(image_size=32).reset(seed=3)
    np.testing.assert_array_equal(first["vector"], again["vector"])  # same seed, same placement and state
    other = env.reset(seed=4)
    assert not np.array_equal(first["vector"], other["vector"])
    steps, obs = 0, first
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    while not obs["is_last"] or steps == 0:
        obs = env.step({"action": rng.uniform(-1, 1, 4).astype(np.float32)})
        steps += 1
        assert not obs["is_terminal"]
    assert steps == 500 // 2  # Meta-World's 500 control steps at action repeat 2
    assert set(env.episode_stats()) == {"success"}


@pytest.mark.parametrize("task, policy", [("door_open", "SawyerDoorOpenV3Policy"),
                                          ("drawer_open", "SawyerDrawerOpenV3Policy")])  # fmt: skip
def test_metaworlds_scripted_policy_solves_the_task_through_our_env(task, policy):
    """If the weld patch or our action/observation plumbing were wrong, the expert could not succeed."""
    from metaworld import policies

    expert = getattr(policies, policy)()
    env = _env(task, image_size=16, action_repeat=1)
    successes = []
    for seed in range(3):
        obs = env.reset(seed=seed)
        while not obs["is_last"] and not env.success:
            obs = env.step({"action": np.clip(expert.get_action(obs["vector"]), -1, 1).astype(np.float32)})
        successes.append(env.episode_stats()["success"])
    assert sum(successes) >= 2, successes
