"""Atari 100k protocol: frame skip + max-pool, no-ops, truncation, no sticky actions, lives, seeding, actions."""

import numpy as np
import pytest
from ale_py import Action, ALEInterface, LoggerMode, roms

from tasks import wrappers
from tasks.atari import SUITE, AtariEnv, AtariProtocol
from tasks.atari_games import GAMES

ALEInterface.setLoggerMode(LoggerMode.Error)


def reference_ale(game: str) -> ALEInterface:
    ale = ALEInterface()
    ale.setFloat("repeat_action_probability", 0.0)
    ale.setInt("frame_skip", 1)
    ale.loadROM(str(roms.get_rom_path(game)))
    return ale


def noop_count(seed: int) -> int:
    """The no-op count the env draws for `seed` (first draw of the episode's generator)."""
    return int(wrappers.episode_rng(seed, "atari").integers(31))


def test_suite_tasks_are_the_26_games():
    assert SUITE.tasks == tuple(GAMES) and len(SUITE.tasks) == 26
    assert SUITE.resolve_task("MsPacman") == "ms_pacman"  # published names work too
    assert SUITE.frames_per_step(AtariProtocol()) == 4
    protocol = AtariProtocol()
    assert (protocol.image_size, protocol.action_repeat, protocol.noops, protocol.sticky_actions) == (64, 4, 30, 0.0)
    assert (protocol.episode_frames, protocol.life_loss_terminal, protocol.full_action_space) == (108_000, False, False)
    assert (protocol.eval_protocol, protocol.eval_window) == ("final_eval", 2_500)
    assert (SUITE.eval_protocol, SUITE.eval_episodes, SUITE.eval_window) == ("final_eval", 100, 2_500)


def test_frame_skip_and_max_pool_match_a_hand_run_emulator():
    seed, actions = 11, [1, 0, 2, 3, 1, 1, 0, 2]  # indices into Pong's minimal action set
    env = AtariEnv("pong")
    obs = env.reset(seed=seed)
    ale = reference_ale("pong")
    ale.reset_game()
    for _ in range(noop_count(seed)):
        ale.act(Action.NOOP)
    assert (obs["image"] == wrappers.resize_image(ale.getScreenRGB(), 64, "bilinear")).all()
    minimal = ale.getMinimalActionSet()
    reward = 0.0
    for index in actions:
        frames = []
        for _ in range(4):  # frame skip 4, pool the last two
            reward += ale.act(minimal[index])
            frames.append(ale.getScreenRGB())
        expected = wrappers.resize_image(np.maximum(frames[2], frames[3]), 64, "bilinear")
        obs = env.step({"action": index})
        assert (obs["image"] == expected).all()
    assert env.frames == noop_count(seed) + 4 * len(actions)
    # Without pooling the observation is the last frame only.
    env = AtariEnv("pong", AtariProtocol(max_pool=False))
    env.reset(seed=seed)
    for index in actions:
        obs = env.step({"action": index})
    assert (obs["image"] == wrappers.resize_image(frames[3], 64, "bilinear")).all()


def test_noops_are_drawn_from_the_seed_in_0_to_30():
    counts = [noop_count(seed) for seed in range(2000)]
    assert min(counts) == 0 and max(counts) == 30
    assert abs(np.mean(counts) - 15) < 0.5  # uniform over 0..30
    env = AtariEnv("pong")
    for seed in range(40):
        env.reset(seed=seed)
        assert env.frames == counts[seed]  # the env emulates exactly that many no-op frames
    env = AtariEnv("pong", AtariProtocol(noops=0))
    env.reset(seed=5)
    assert env.frames == 0


def test_episode_cap_is_a_truncation_counted_in_frames():
    env = AtariEnv("pong", AtariProtocol(noops=0, episode_frames=100))
    env.reset(seed=0)
    flags = [(bool(o["is_last"]), bool(o["is_terminal"])) for o in (env.step({"action": 0}) for _ in range(25))]
    assert flags == [(False, False)] * 24 + [(True, False)]
    assert env.frames == 100
    with pytest.raises(RuntimeError, match="reset"):
        env.step({"action": 0})


def test_game_over_is_terminal():
    env = AtariEnv("pong")
    env.reset(seed=0)
    steps = 0
    while not (obs := env.step({"action": 0}))["is_last"]:
        steps += 1
    assert obs["is_terminal"] and steps < 27_000


def test_no_sticky_actions_and_determinism():
    env = AtariEnv("breakout")
    assert env._ale.getFloat("repeat_action_probability") == 0.0
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 4, 200)

    def trajectory(seed):
        images = [env.reset(seed=seed)["image"]]
        for action in actions:
            obs = env.step({"action": int(action)})
            images.append(obs["image"])
            if obs["is_last"]:
                break
        return np.stack(images)

    first = trajectory(3)
    trajectory(4)  # a different episode in between must not leak into the next one
    assert (trajectory(3) == first).all()
    # With sticky actions switched on, the stickiness is drawn from the episode seed too.
    env = AtariEnv("breakout", AtariProtocol(sticky_actions=0.25))
    assert env._ale.getFloat("repeat_action_probability") == 0.0
    assert (trajectory(3) == trajectory(3)).all()


class RecordingALE:
    """Delegates to an ALEInterface and records every action the env emits to it."""

    def __init__(self, ale):
        self.ale, self.emitted = ale, []

    def act(self, action, strength=1.0):
        self.emitted.append(action)
        return self.ale.act(action, strength)

    def __getattr__(self, name):
        return getattr(self.ale, name)


@pytest.mark.parametrize("probability", [0.0, 0.25])
def test_sticky_actions_repeat_the_previous_action_per_frame(probability):
    # ALE's semantics (what DreamerV3 2024 ran with p = 0.25): each frame, with probability p, the previously
    # emitted action is emitted again instead of the chosen one.
    env = AtariEnv("pong", AtariProtocol(sticky_actions=probability))
    env.reset(seed=0)
    env._ale = recorder = RecordingALE(env._ale)
    minimal = env._actions
    chosen = []
    for step in range(600):
        index = step % len(minimal)  # a different action every step
        env.step({"action": index})
        chosen += [minimal[index]] * 4
    previous = [Action.NOOP] + recorder.emitted[:-1]
    assert all(e in (c, p) for e, c, p in zip(recorder.emitted, chosen, previous))
    if probability == 0.0:
        assert recorder.emitted == chosen
        return
    # frames whose chosen action differs from the last emitted one: the first of each step, and later ones
    # after a stick (every frame draws, not only the first of a step)
    for first, tolerance in ((True, 0.06), (False, 0.1)):
        stuck = [e == p for i, (e, c, p) in enumerate(zip(recorder.emitted, chosen, previous))
                 if c != p and (i % 4 == 0) == first]  # fmt: skip
        assert len(stuck) > (500 if first else 100) and np.mean(stuck) == pytest.approx(probability, abs=tolerance)


def test_sticky_and_area_flags_reach_the_protocol():
    from bench import config as config_lib

    config = config_lib.Config(
        run=config_lib.RunConfig(), replay=config_lib.ReplayConfig(), logger=config_lib.LoggerConfig(),
        env=AtariProtocol(), agent=config_lib.RunConfig(),
    )  # fmt: skip
    like_dreamerv3 = config_lib.apply(config, {"env.sticky_actions": "0.25", "env.resize": "area"}).env
    assert like_dreamerv3.sticky_actions == 0.25 and like_dreamerv3.resize == "area"
    with pytest.raises(config_lib.ConfigError, match="env.sticky_actions"):  # the close match is suggested
        config_lib.apply(config, {"env.sticky": "0.25"})


def test_area_resize_observation_is_opencv_inter_area_of_the_screen():
    seed = 4
    env = AtariEnv("ms_pacman", AtariProtocol(resize="area"))
    obs = env.reset(seed=seed)
    ale = reference_ale("ms_pacman")
    ale.reset_game()
    for _ in range(noop_count(seed)):
        ale.act(Action.NOOP)
    assert (obs["image"] == wrappers.area_resize(ale.getScreenRGB(), 64, 64)).all()
    assert not (obs["image"] == wrappers.resize_image(ale.getScreenRGB(), 64, "bilinear")).all()


def test_seeding_of_first_observations():
    env = AtariEnv("ms_pacman")
    firsts = {seed: env.reset(seed=seed)["image"] for seed in range(6)}
    assert (env.reset(seed=2)["image"] == firsts[2]).all()
    distinct = {firsts[s].tobytes() for s in firsts}
    assert len(distinct) > 1  # different no-op counts give different first frames
    for image in firsts.values():
        assert image.max() > 0  # never the black first frame of the upstream pooling bug


def test_actions_change_the_game():
    # ale-py 0.10 silently ignored actions; a paddle that follows the ball must beat a paddle that idles.
    env = AtariEnv("pong")

    def track(frame):
        field = frame[34:194]
        paddle = np.argwhere(np.all(field[:, 140:144] == (92, 186, 92), -1))
        ball = np.argwhere(np.all(field[:, :140] == (236, 236, 236), -1))
        if len(paddle) == 0 or len(ball) == 0:
            return 0
        return 2 if ball[:, 0].mean() < paddle[:, 0].mean() else 3  # RIGHT moves up, LEFT down

    returns = {}
    for policy in ("noop", "track"):
        env.reset(seed=0)
        total = 0.0
        for _ in range(400):
            action = 0 if policy == "noop" else track(env.render())
            total += float(env.step({"action": action})["reward"])
        returns[policy] = total
    assert returns["track"] > returns["noop"] + 3, returns


def test_life_loss_terminal_flag():
    def lives_lost_steps(flag):
        env = AtariEnv("breakout", AtariProtocol(noops=0, life_loss_terminal=flag))
        env.reset(seed=0)
        flags = []
        lives = env._ale.lives()
        for step in range(300):
            obs = env.step({"action": 1 if step % 40 == 0 else 0})  # FIRE launches the ball, then miss it
            if env._ale.lives() < lives:
                lives = env._ale.lives()
                flags.append((bool(obs["is_terminal"]), bool(obs["is_last"])))
            if obs["is_last"]:
                break
        return flags

    assert lives_lost_steps(True)[0] == (True, False)  # terminal signal, the game goes on
    assert lives_lost_steps(False)[0] == (False, False)


def test_grayscale_and_action_space():
    env = AtariEnv("pong", AtariProtocol(grayscale=True))
    assert env.obs_space["image"].shape == (64, 64, 1)
    assert env.reset(seed=0)["image"].shape == (64, 64, 1)
    assert env.act_space["action"].num_classes == 6  # Pong's minimal action set
    assert env.action_names == ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]
    assert AtariEnv("pong", AtariProtocol(full_action_space=True)).act_space["action"].num_classes == 18


def test_bad_input():
    env = AtariEnv("pong")
    with pytest.raises(RuntimeError, match="reset"):
        env.step({"action": 0})
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"out of range \[0, 6\)"):
        env.step({"action": 6})
    with pytest.raises(ValueError, match="expected shape"):
        env.step({"action": np.zeros(6)})
    with pytest.raises(ValueError, match="integer"):
        env.step({"action": 1.5})
    with pytest.raises(KeyError, match="alien, amidar"):
        AtariEnv("space_invaders")
    with pytest.raises(ValueError, match="non-negative"):
        env.reset(seed=-3)
