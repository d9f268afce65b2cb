"""Our tasks as Gymnasium environments (`mbrl_bench/<suite>-<task>`): registration, check_env, exact protocol."""

import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import bench.gym_envs
from bench import registry

# Every toy task, and a cheap one per other suite (Atari, Crafter, MiniHack, DMC take seconds to create).
CHEAP_TASK = {"bbs": "distract0_size1.0", "pinpad": "three", "atari100k": "pong", "crafter": "crafter",
              "minihack": "keyroomfixed5", "dmc_proprio": "cartpole_balance", "dmc_vision": "cartpole_balance",
              "metaworld": "reach"}  # fmt: skip
CHECKED = [f"toy-{task}" for task in registry.get_suite("toy").tasks] + [
    f"{suite}-{task}" for suite, task in CHEAP_TASK.items()
]


def test_every_task_of_every_suite_is_registered():
    for suite in registry.suite_names():
        if suite == "gym":
            continue
        for task in registry.get_suite(suite).tasks:
            assert f"mbrl_bench/{suite}-{task}" in gymnasium.registry
    assert set(CHEAP_TASK) | {"toy"} >= set(registry.suite_names()) - {"gym"}  # a new suite gets a checked task


# Crafter's 64x64 world takes seconds per reset and check_env resets often; a 20x20 world is the same code.
SMALLER = {"crafter-crafter": {"world_area": 20}}


@pytest.mark.parametrize("name", CHECKED)
def test_check_env(name):
    env = gymnasium.make(f"mbrl_bench/{name}", render_mode="rgb_array", **SMALLER.get(name, {}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unbounded vector Boxes warn; they are unbounded
        check_env(env.unwrapped)
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3
    env.close()


def test_same_episodes_as_our_env_with_the_suite_protocol():
    suite = registry.get_suite("toy")
    ours = suite.make_env("point", suite.protocol_cls(), 0)
    env = gymnasium.make("mbrl_bench/toy-point")
    obs, _ = env.reset(seed=3)
    reference = ours.reset(seed=3)
    np.testing.assert_array_equal(obs["image"], reference["image"])
    rng = np.random.default_rng(0)
    for _ in range(40):
        action = rng.uniform(-1, 1, 2).astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        reference = ours.step({"action": action})
        np.testing.assert_array_equal(obs["vector"], reference["vector"])
        assert reward == reference["reward"]
        assert (terminated, truncated) == (bool(reference["is_terminal"]),
                                           bool(reference["is_last"] and not reference["is_terminal"]))  # fmt: skip
        if terminated or truncated:
            break
    assert truncated and not terminated  # toy point episodes end by their length (30 steps)


def test_terminal_is_terminated():
    env = gymnasium.make("mbrl_bench/toy-keydoor", grid=3)
    # walk to the key, then below the door, then up into it (positions read from the wrapped toy env)
    env.reset(seed=0)
    inner = env.unwrapped._env
    moves = {(-1, 0): 1, (1, 0): 2, (0, -1): 3, (0, 1): 4}

    def walk_to(target):
        result = None
        while tuple(inner.agent) != tuple(target):
            delta = np.sign(np.asarray(target) - inner.agent)
            step = (int(delta[0]), 0) if delta[0] else (0, int(delta[1]))
            result = env.step(moves[step])
        return result

    walk_to(inner.key)
    below_door = (1, int(inner.door[1]))
    walk_to(below_door)
    _, reward, terminated, truncated, _ = env.step(moves[(-1, 0)])
    assert reward == 1.0 and terminated and not truncated


def test_protocol_fields_are_make_kwargs():
    env = gymnasium.make("mbrl_bench/toy-reach", size=8)
    assert env.observation_space["image"].shape == (8, 8, 3)
    assert env.unwrapped.protocol.size == 8
    with pytest.raises(TypeError, match="unknown protocol field.*'sise'"):
        gymnasium.make("mbrl_bench/toy-reach", sise=8)


def test_module_prefix_registers_on_import():
    # `module:id` is how a process that never imported bench.gym_envs reaches our ids
    import subprocess
    import sys

    code = 'import gymnasium; env = gymnasium.make("bench.gym_envs:mbrl_bench/toy-reach"); print(env.reset(seed=0)[0]["image"].shape)'
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "(16, 16, 3)"


def test_reset_without_seed_continues_the_seeded_sequence():
    env = gymnasium.make("mbrl_bench/toy-reach")
    env.reset(seed=1)
    a = [env.reset()[0]["image"] for _ in range(3)]
    env.reset(seed=1)
    b = [env.reset()[0]["image"] for _ in range(3)]
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    assert bench.gym_envs.env_id("toy", "reach") == "mbrl_bench/toy-reach"
