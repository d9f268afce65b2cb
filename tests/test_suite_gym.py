"""The `gym` suite: any Gymnasium id as a task, mapped to our observation/action contract and run end to end."""

import json

import gymnasium
import numpy as np
import pytest

import tests.gym_fixture_envs  # noqa: F401 - registers the BenchDots-v0 and refused-space test ids
from bench import cli
from tasks.gym import SUITE, GymProtocol, make_env
from tests.runs import bench, only_run_dir

SUITE_REF = "tasks.gym:SUITE"  # works without reinstalling the package; `--suite gym` after a reinstall
DOTS = "tests.gym_fixture_envs:BenchDots-v0"


def test_any_registered_id_resolves_and_a_typo_names_close_ids():
    assert SUITE.resolve_task("CartPole-v1") == "CartPole-v1"
    assert SUITE.resolve_task("LunarLander-v3") == "LunarLander-v3"  # not in the listed tasks
    assert SUITE.resolve_task("phys2d/CartPole-v1") == "phys2d+CartPole-v1"  # run folders have no "/"
    assert SUITE.resolve_task("phys2d+CartPole-v1") == "phys2d+CartPole-v1"
    with pytest.raises(KeyError, match="Did you mean 'CartPole-v1'"):
        SUITE.resolve_task("CartPol-v1")
    with pytest.raises(KeyError, match="cannot import module 'no_such_module'"):
        SUITE.resolve_task("no_such_module:Foo-v0")


def test_cli_typo_is_one_line(capsys):
    code = cli.main(["run", "--agent", "random", "--suite", SUITE_REF, "--task", "CartPol-v1", "--steps", "10"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Did you mean 'CartPole-v1'" in err, err


@pytest.mark.parametrize(
    "env_id, kind",
    [("BenchMultiBinary-v0", "MultiBinary"), ("BenchTupleObs-v0", "Tuple"), ("BenchText-v0", "Text")],
)
def test_unsupported_spaces_are_refused_in_one_line(env_id, kind):
    with pytest.raises(ValueError, match=f"cannot (act in|observe) a {kind}") as info:
        make_env(f"tests.gym_fixture_envs:{env_id}", GymProtocol())
    assert len(str(info.value).splitlines()) == 1 and env_id in str(info.value)


def test_vector_discrete_matches_gymnasium_and_terminal_vs_truncated():
    env = make_env("CartPole-v1", GymProtocol())
    reference = gymnasium.make("CartPole-v1")
    obs = env.reset(seed=11)
    ref_obs, _ = reference.reset(seed=11)
    np.testing.assert_array_equal(obs["vector"], ref_obs.astype(np.float32))
    assert env.obs_space["vector"].shape == (4,) and env.act_space["action"].num_classes == 2
    assert obs["is_first"] and not obs["is_last"]
    while True:  # always push right: the pole falls, which CartPole reports as terminated
        obs = env.step({"action": 1})
        ref_obs, reward, terminated, truncated, _ = reference.step(1)
        np.testing.assert_array_equal(obs["vector"], ref_obs.astype(np.float32))
        assert obs["reward"] == reward
        if terminated or truncated:
            break
    assert terminated and obs["is_terminal"] and obs["is_last"]
    # a time limit truncates: is_last without is_terminal
    short = make_env("CartPole-v1", GymProtocol(time_limit=3))
    short.reset(seed=0)
    steps = [short.step({"action": step % 2}) for step in range(3)]
    assert [bool(o["is_last"]) for o in steps] == [False, False, True]
    assert not steps[-1]["is_terminal"]
    with pytest.raises(RuntimeError, match="reset"):
        short.step({"action": 0})


def test_box_actions_are_rescaled_to_the_bounds_and_repeated():
    # Pendulum's torque is in [-2, 2]: our [-1, 1] action 0.5 is torque 1.0, -1 is -2.
    env = make_env("Pendulum-v1", GymProtocol(action_repeat=3))
    reference = gymnasium.make("Pendulum-v1")
    assert env.act_space["action"].shape == (1,) and (env.act_space["action"].low, env.act_space["action"].high) == (-1, 1)
    env.reset(seed=5)
    reference.reset(seed=5)
    for ours, torque in ((0.5, 1.0), (-1.0, -2.0)):
        obs = env.step({"action": np.array([ours], np.float32)})
        total = 0.0
        for _ in range(3):
            ref_obs, reward, *_ = reference.step(np.array([torque], np.float32))
            total += reward
        np.testing.assert_allclose(obs["vector"], ref_obs, rtol=1e-6)
        np.testing.assert_allclose(obs["reward"], total, rtol=1e-5)


def test_dict_observation_images_vectors_frame_stack_and_discrete_start():
    env = make_env(DOTS, GymProtocol(frame_stack=2, image_size=16, resize="nearest"))
    # Dict keys in the space's (sorted) order: phase (Discrete 3 -> one-hot), pixels (image), position (Box 2)
    assert env.obs_space["image"].shape == (16, 16, 6)
    assert env.obs_space["vector"].shape == (2 * (3 + 2),)
    obs = env.reset(seed=4)
    reference = gymnasium.make("BenchDots-v0")
    ref, _ = reference.reset(seed=4)
    row, col = ref["position"]
    first = np.concatenate([[1.0, 0.0, 0.0], ref["position"]]).astype(np.float32)
    np.testing.assert_array_equal(obs["vector"], np.concatenate([first, first]))  # the stack starts filled
    assert obs["image"].dtype == np.uint8
    # nearest 8 -> 16 doubles every pixel: the red dot covers a 2x2 block in both stacked frames
    assert obs["image"][2 * int(row), 2 * int(col)].tolist() == [255, 0, 0, 255, 0, 0]
    # our action index 0 is the environment's action -1 (Discrete start -1), whose reward is -1
    obs = env.step({"action": 0})
    assert obs["reward"] == -1.0
    second = np.concatenate([[0.0, 1.0, 0.0], [row, max(col - 1, 0)]]).astype(np.float32)
    np.testing.assert_array_equal(obs["vector"], np.concatenate([first, second]))  # oldest first


def test_pixels_from_render_next_to_the_observation():
    env = make_env(DOTS, GymProtocol(pixels="add"))
    assert {"pixels", "render", "vector"} <= set(env.obs_space)  # two images: each under its own key
    obs = env.reset(seed=2)
    np.testing.assert_array_equal(obs["pixels"], obs["render"])
    only = make_env(DOTS, GymProtocol(pixels="only"))
    assert [k for k in only.obs_space if k not in ("reward", "is_first", "is_last", "is_terminal")] == ["image"]


def test_seeded_episodes_repeat():
    env = make_env("Acrobot-v1", GymProtocol())
    first = [env.reset(seed=9)["vector"]] + [env.step({"action": a})["vector"] for a in (0, 2, 1)]
    second = [env.reset(seed=9)["vector"]] + [env.step({"action": a})["vector"] for a in (0, 2, 1)]
    np.testing.assert_array_equal(np.stack(first), np.stack(second))
    assert not np.array_equal(env.reset(seed=10)["vector"], first[0])


def test_protocol_errors_name_the_field():
    with pytest.raises(ValueError, match="env.pixels"):
        GymProtocol(pixels="yes")
    with pytest.raises(ValueError, match="env.kwargs"):
        GymProtocol(kwargs="[1]")
    with pytest.raises(ValueError, match="env.frame_stack"):
        GymProtocol(frame_stack=0)
    with pytest.raises(ValueError, match="rejected env.kwargs .*is_slipery"):
        make_env("FrozenLake-v1", GymProtocol(kwargs='{"is_slipery": false}'))
    assert make_env("FrozenLake-v1", GymProtocol(kwargs='{"map_name": "8x8"}')).obs_space["vector"].shape == (64,)


@pytest.fixture
def gym_registered(monkeypatch):
    """`gym` as a registered suite name even before the package is reinstalled with its entry point."""
    from bench import registry

    original = registry._registered

    def with_gym(group):
        found = dict(original(group))
        if group == registry.SUITE_GROUP:
            found.setdefault("gym", (SUITE_REF, f"{SUITE_REF} (this checkout)"))
        return found

    monkeypatch.setattr(registry, "_registered", with_gym)


@pytest.mark.parametrize(
    "task, extra",
    [
        ("CartPole-v1", ["--env.frame_stack", "2"]),
        ("Pendulum-v1", ["--env.action_repeat", "2"]),
        (DOTS, ["--env.image_size", "16"]),
    ],
)
def test_bench_run_end_to_end(tmp_path, task, extra, gym_registered):
    bench("run", "--agent", "random", "--suite", SUITE_REF, "--task", task, "--steps", "300",
          "--run.eval_episodes", "2", "--quiet", *extra, root=tmp_path)  # fmt: skip
    folder = only_run_dir(tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["suite"] == "gym"
    assert manifest["task"] == SUITE.resolve_task(task)
    flag, value = extra[0].removeprefix("--env."), extra[1]
    assert str(manifest["protocol"][flag]) == value  # protocol fields reach the manifest
    scores = [json.loads(line) for line in (folder / "scores.jsonl").read_text().splitlines()]
    assert any(r["mode"] == "train" for r in scores) and sum(r["mode"] == "eval" for r in scores) == 2
    if task == DOTS:  # an id the suite does not list still gets its leaderboard column
        import bench as bench_api

        board = bench_api.leaderboard("gym", runs=[tmp_path], out=tmp_path / "board", any_budget=True, reps=50,
                                      no_plots=True)  # fmt: skip
        per_task = (board.out / "per_task.csv").read_text()
        assert manifest["task"] in per_task and f"random@{manifest['config_hash']}" in per_task


# ------------------------------------------------------------------------------------------ learning

LEARNING_STEPS = 10_000


def random_cartpole_returns(episodes: int) -> np.ndarray:
    """Uniform random actions on CartPole-v1 through our env (seeds 10000.. as the other learning tests)."""
    env = make_env("CartPole-v1", GymProtocol())
    rng = np.random.default_rng(0)
    returns = []
    for episode in range(episodes):
        obs, total = env.reset(seed=10_000 + episode), 0.0
        while not obs["is_last"]:
            obs = env.step({"action": int(rng.integers(2))})
            total += float(obs["reward"])
        returns.append(total)
    return np.asarray(returns)


@pytest.mark.slow
def test_dreamerv3_learns_cartpole_above_random(tmp_path):
    """DreamerV3 (`--configs debug quick`) learns CartPole-v1 through `--suite gym`: its final evaluation
    (10 episodes) beats the random policy's mean by three standard errors of that mean, measured here."""
    from bench import runner

    baseline = random_cartpole_returns(300)
    bar = baseline.mean() + 3 * baseline.std() / np.sqrt(baseline.size)
    folder = runner.run("dreamerv3", SUITE_REF, "CartPole-v1", seed=0, configs=("debug", "quick"),
                        overrides={"run.steps": LEARNING_STEPS, "run.eval_episodes": 10}, root=tmp_path,
                        quiet=True)  # fmt: skip
    scores = [json.loads(line) for line in (folder / "scores.jsonl").read_text().splitlines()]
    final = np.asarray([s["return"] for s in scores if s["mode"] == "eval" and s.get("final")])
    print(f"random {baseline.mean():.1f} +- {baseline.std():.1f} (bar {bar:.1f}); final evaluation "
          f"{final.mean():.1f} +- {final.std():.1f}")  # fmt: skip
    assert final.size == 10
    assert final.mean() > bar


def test_an_env_that_fails_to_start_is_one_line_naming_the_cause(tmp_path, capsys):
    code = cli.main(["run", "--agent", "random", "--suite", SUITE_REF, "--task", "FrozenLake-v1", "--steps", "10",
                     "--env.kwargs", '{"is_slipery": false}', "--logdir", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "failed to start: ValueError" in err and "is_slipery" in err, err
