"""BringBackShapes: seeding, scoring, episode ends, the view, distractors, physics and bad input."""

import math

import numpy as np
import pytest

from bench.spaces import sensor_keys
from tasks.bbs import arena as arena_lib
from tasks.bbs.env import BBSProtocol, BringBackShapes, action_to_physics, priv_state_layout
from tasks.bbs.suite import SUITE, TASKS, make_env, protocol_for_task, task_settings

ZERO_FORCE = {"action": np.array([0.0, -1.0], np.float32)}  # force 0 (heading irrelevant)


def make(**settings) -> BringBackShapes:
    return BringBackShapes(BBSProtocol(**({"num_distractors": 0, "arena_scale": 1.0} | settings)))


def random_actions(count: int, seed: int = 123):
    rng = np.random.default_rng(seed)
    return [{"action": rng.uniform(-1, 1, 2).astype(np.float32)} for _ in range(count)]


def rollout(env, seed: int, actions):
    observations = [env.reset(seed=seed)]
    for action in actions:
        observations.append(env.step(action))
        if observations[-1]["is_last"]:
            break
    return observations


def clear_arena(env, agent_at=(400.0, 350.0)):
    """Park the agent at `agent_at` at rest and move the objects out of its way (bottom-left, spaced)."""
    arena = env.arena
    arena.agent.position = agent_at
    arena.agent.velocity = (0.0, 0.0)
    for index, item in enumerate(arena.objects):
        item.body.position = (180.0 + 70 * index, 520.0)
        item.body.velocity = (0.0, 0.0)


# ----------------------------------------------------------------------------------------- seeding


def test_same_seed_gives_identical_episodes_regardless_of_history():
    actions = random_actions(40)
    first = rollout(make(num_distractors=2), 7, actions)
    env = make(num_distractors=2)
    rollout(env, 3, actions[:10])  # an unrelated episode first must not matter
    second = rollout(env, 7, actions)
    assert len(first) == len(second) == 41
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["priv_state"], b["priv_state"])
        assert (a["reward"], a["is_last"], a["is_terminal"]) == (b["reward"], b["is_last"], b["is_terminal"])


def test_different_seeds_give_different_episodes():
    actions = random_actions(5)
    first, second = rollout(make(num_distractors=1), 0, actions), rollout(make(num_distractors=1), 1, actions)
    assert not np.array_equal(first[0]["priv_state"], second[0]["priv_state"])
    assert any(not np.array_equal(a["image"], b["image"]) for a, b in zip(first, second))


def test_observation_format():
    env = make()
    obs = env.reset(seed=0)
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
    assert obs["priv_state"].shape == (9 + 3 * 5,) and obs["priv_state"].dtype == np.float32
    assert obs["is_first"] and not obs["is_last"] and not obs["is_terminal"] and obs["reward"] == 0.0
    assert set(obs) == set(env.obs_space)
    assert sensor_keys(env.obs_space) == ["image"]  # learning agents never see priv_state
    for key, space in env.obs_space.items():
        space.check(key, obs[key])
    later = env.step(ZERO_FORCE)
    assert not later["is_first"]


def test_priv_state_layout_matches_the_arena():
    env = make(num_objects=3)
    state = env.reset(seed=4)["priv_state"]
    slices = priv_state_layout(3)
    arena, layout = env.arena, env.arena.layout
    np.testing.assert_allclose(state[slices["agent_position"]], tuple(arena.agent.position), rtol=1e-6)
    positions = state[slices["object_positions"]].reshape(3, 2)
    for index, item in enumerate(arena.objects):
        np.testing.assert_allclose(positions[index], tuple(item.body.position), rtol=1e-6)
    np.testing.assert_array_equal(state[slices["object_alive"]], [1, 1, 1])
    np.testing.assert_allclose(state[slices["goal"]], [575.0, 237.5, 462.5])  # 800-125-100; 125+(450-225)/2
    np.testing.assert_array_equal(state[slices["arena_size"]], [800, 700])


# ---------------------------------------------------------------------------------- scoring and ends


def test_object_past_goal_line_is_removed_and_counted_once():
    env = make(num_objects=2)
    env.reset(seed=0)
    clear_arena(env)
    shape = env.arena.objects[0]
    goal_x = env.arena.layout.goal_x
    # 1 px short of the scoring line (goal_x + 5) inside the slot, moving right at 60 px/s = 1 px/frame
    shape.body.position = (goal_x + 4.0, 350.0)
    shape.body.velocity = (60.0, 0.0)
    observations = [env.step(ZERO_FORCE) for _ in range(5)]
    assert [float(o["reward"]) for o in observations] == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert not shape.alive and shape.body not in env.arena.space.bodies
    assert not any(o["is_terminal"] or o["is_last"] for o in observations)
    slices = priv_state_layout(2)
    np.testing.assert_array_equal(observations[-1]["priv_state"][slices["object_alive"]], [0, 1])
    np.testing.assert_array_equal(observations[-1]["priv_state"][slices["object_positions"]][:2], [0, 0])
    assert env.episode_stats() == {"objects_returned": 1.0, "score": 0.5}


def test_object_short_of_the_line_is_not_returned():
    env = make(num_objects=1)
    env.reset(seed=0)
    clear_arena(env)
    shape = env.arena.objects[0]
    shape.body.position = (env.arena.layout.goal_x + 4.0, 350.0)  # at rest, 1 px short
    assert env.step(ZERO_FORCE)["reward"] == 0.0 and shape.alive


def test_episode_terminates_when_all_objects_are_returned():
    env = make(num_objects=1)
    env.reset(seed=1)
    clear_arena(env)
    shape = env.arena.objects[0]
    shape.body.position = (env.arena.layout.goal_x + 10.0, 350.0)
    obs = env.step(ZERO_FORCE)
    assert obs["reward"] == 1.0 and obs["is_terminal"] and obs["is_last"]
    assert env.frames == 1  # the action repeat stops at the end of the episode
    assert env.episode_stats() == {"objects_returned": 1.0, "score": 1.0}
    with pytest.raises(RuntimeError, match="reset"):
        env.step(ZERO_FORCE)


@pytest.mark.parametrize("time_limit, steps, frames", [(3000, 750, 3000), (22, 6, 22)])
def test_time_limit_truncates_without_terminal(time_limit, steps, frames):
    env = make(time_limit=time_limit)
    obs = env.reset(seed=2)
    count = 0
    while not obs["is_last"]:
        clear_arena(env)  # nothing ever reaches the goal
        obs = env.step(ZERO_FORCE)
        count += 1
    assert (count, env.frames) == (steps, frames)
    assert obs["is_last"] and not obs["is_terminal"]


# ----------------------------------------------------------------------------------------- physics


def test_action_maps_linearly_to_heading_and_force():
    assert action_to_physics(np.array([-1.0, -1.0])) == (0.0, 0.0)
    assert action_to_physics(np.array([0.0, 0.0])) == pytest.approx((math.pi, 200.0))
    assert action_to_physics(np.array([1.0, 1.0])) == pytest.approx((2 * math.pi, 400.0))
    assert action_to_physics(np.array([-0.5, 0.5])) == pytest.approx((math.pi / 2, 300.0))


def test_push_acts_at_the_centre_along_the_heading():
    env = make(num_objects=1)
    env.reset(seed=0)
    clear_arena(env)
    agent = env.arena.agent
    agent.angular_velocity = 0.0
    env.step({"action": np.array([-0.5, 1.0], np.float32)})  # heading pi/2 (+y, down), force 400 x 100
    # Chipmunk: v <- v * damping**dt + F/m dt per frame; 4 frames from rest
    mass = math.pi * 15**2 * 0.1
    per_frame = 400 * 100 / mass / 60
    decay = 0.7 ** (1 / 60)
    expected = per_frame * (1 + decay + decay**2 + decay**3)
    assert agent.velocity.x == pytest.approx(0.0, abs=1e-9)
    assert agent.velocity.y == pytest.approx(expected, rel=1e-9)
    assert agent.angular_velocity == 0.0  # no torque (upstream's (x, x) force point spun the agent)


def test_agent_cannot_enter_the_goal_slot():
    env = make(num_objects=1)
    env.reset(seed=0)
    clear_arena(env, agent_at=(env.arena.layout.goal_x - 16.0, 350.0))
    for _ in range(10):
        env.step({"action": np.array([-1.0, 1.0], np.float32)})  # full force towards +x
        assert env.arena.agent.position.x <= env.arena.layout.goal_x - 15.0 + 3.0  # at most one frame past


def test_distractors_move_without_actions():
    env = make(num_distractors=2)
    env.reset(seed=5)
    start = [tuple(d.body.position) for d in env.arena.distractors]
    for _ in range(50):
        env.step(ZERO_FORCE)
    # a random walk of forces U[0, 400) x 0.2 x 100 on 60 mass units: slow drifts of a few px/s
    for before, distractor in zip(start, env.arena.distractors):
        assert math.dist(before, distractor.body.position) > 1.0
        assert distractor.body.velocity.length > 0.1
    # with no distractors and no force nothing moves the agent (a seed where nothing spawns on it)
    still = make(num_distractors=0)
    still.reset(seed=1)
    agent_start = tuple(still.arena.agent.position)
    for _ in range(50):
        still.step(ZERO_FORCE)
    assert math.dist(agent_start, still.arena.agent.position) < 1e-9


def test_masses_follow_the_published_environment():
    env = make(num_distractors=1)
    env.reset(seed=0)
    assert env.arena.agent.mass == pytest.approx(math.pi * 15**2 * 0.1)
    assert env.arena.distractors[0].body.mass == pytest.approx(60.0)  # kite area 600 x density 0.1
    assert all(item.body.mass == 20.0 for item in env.arena.objects)
    assert env.arena.space.damping == 0.7


# ------------------------------------------------------------------------------------------ the view


def tinted(colour):
    """The grey view overlay (128, alpha 100/255) applied to a colour, rounded."""
    return [round(c * (1 - 100 / 255) + 128 * 100 / 255) for c in colour]


def test_crop_is_centred_on_the_agent():
    env = make(num_objects=1)
    env.reset(seed=0)
    clear_arena(env, agent_at=(300.0, 300.0))
    obs = env.step(ZERO_FORCE)
    assert env._camera() == (175, 175)
    centre = obs["image"][31:33, 31:33].reshape(-1, 3)
    assert (centre == tinted(arena_lib.AGENT_COLOUR)).all()
    assert (obs["image"][0, 0] == tinted((0, 0, 0))).all()  # background in the far corner
    # moving the agent moves the crop with it: the picture stays the same (nothing else in view)
    clear_arena(env, agent_at=(330.0, 290.0))
    moved = env.step(ZERO_FORCE)
    assert env._camera() == (205, 165)
    np.testing.assert_array_equal(moved["image"], obs["image"])


def test_crop_is_clipped_at_the_arena_edges():
    # a 400 px view reaches past the arena's edge when the agent is near a wall: the crop stops at the edge
    env = make(num_objects=1, view_size=400)
    env.reset(seed=0)
    clear_arena(env, agent_at=(150.0, 160.0))
    obs = env.step(ZERO_FORCE)
    assert env._camera() == (0, 0)
    x, y = env.arena.agent.position
    row, column = int(y / 400 * 64), int(x / 400 * 64)  # the agent is off-centre, where it is in the arena
    assert (obs["image"][row, column] == tinted(arena_lib.AGENT_COLOUR)).all()
    assert (obs["image"][:15, :15] == tinted((149, 165, 166))).all()  # the walls' grey
    clear_arena(env, agent_at=(560.0, 560.0))
    env.step(ZERO_FORCE)
    assert env._camera() == (360, 300)  # clipped at the bottom edge (700 - 400)


def test_arena_scale_changes_the_arena_but_not_the_view():
    small, large = make(num_objects=1), make(num_objects=1, arena_scale=1.6)
    small.reset(seed=0)
    large.reset(seed=0)
    assert (large.arena.layout.width, large.arena.layout.length) == (1280, 1120)
    assert large.arena.layout.goal_x == 1280 - 225 and large.arena.layout.goal_height == 0.5 * (1120 - 250)
    images = []
    for env in (small, large):
        clear_arena(env, agent_at=(400.0, 350.0))
        obs = env.step(ZERO_FORCE)
        assert obs["image"].shape == (64, 64, 3)
        assert obs["priv_state"][-2:].tolist() == [env.arena.layout.width, env.arena.layout.length]
        images.append(obs["image"])
    # the agent covers the same pixels: the view is 250 arena px at either scale
    np.testing.assert_array_equal(images[0], images[1])


# ----------------------------------------------------------------------------------------- variants


def test_variable_counts_and_goal_position_are_seeded():
    env = make(num_distractors=4, variable_num_objects=True, variable_num_distractors=True,
               variable_goal_position=True)
    counts, distractors, goals = set(), set(), set()
    for seed in range(12):
        state = env.reset(seed=seed)["priv_state"]
        layout = env.arena.layout
        counts.add(len(env.arena.objects))
        distractors.add(len(env.arena.distractors))
        goals.add(layout.goal_top)
        assert state[priv_state_layout(5)["object_alive"]].sum() == len(env.arena.objects)
        assert 125 <= layout.goal_top <= layout.length - 125 - layout.goal_height
        # the wall blocks moved with the slot: its middle is open, just above and below are walls
        middle_x = layout.goal_x + 50
        space = env.arena.space
        assert not space.point_query((middle_x, layout.goal_top + layout.goal_height / 2), 0, _all_shapes())
        if layout.goal_top > 130:
            assert space.point_query((middle_x, layout.goal_top - 3), 0, _all_shapes())
    assert counts <= set(range(1, 6)) and len(counts) > 1
    assert distractors <= {1, 2, 3, 4} and len(distractors) > 1
    assert len(goals) == 12
    again = env.reset(seed=3)["priv_state"]
    np.testing.assert_array_equal(again, make(num_distractors=4, variable_num_objects=True,
                                              variable_num_distractors=True,
                                              variable_goal_position=True).reset(seed=3)["priv_state"])


def _all_shapes():
    import pymunk

    return pymunk.ShapeFilter()


# -------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "action, message",
    [
        ({"action": np.zeros(3, np.float32)}, "shape"),
        ({"action": np.array([0.0, 1.5], np.float32)}, "outside"),
        ({"action": np.array([np.nan, 0.0], np.float32)}, "non-finite"),
        ({"move": np.zeros(2, np.float32)}, "do not match"),
    ],
)
def test_bad_actions_raise_clear_errors(action, message):
    env = make()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.step(action)


def test_step_before_reset_is_an_error():
    with pytest.raises(RuntimeError, match="reset"):
        make().step(ZERO_FORCE)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"num_objects": 0}, "num_objects"),
        ({"num_distractors": -1}, "num_distractors"),
        ({"view_size": 701}, "view_size"),
        ({"action_repeat": 0}, "action_repeat"),
        ({"time_limit": 0}, "time_limit"),
    ],
)
def test_bad_protocol_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        make(**settings)


def test_protocol_needs_task_settings():
    with pytest.raises(ValueError, match="task name"):
        BringBackShapes(BBSProtocol())


# ------------------------------------------------------------------------------------------- suite


def test_suite_tasks_budget_and_scoring():
    assert len(TASKS) == 16 and len(set(TASKS)) == 16
    assert "distract0_size1.0" in TASKS and "distract4_size1.6" in TASKS
    assert SUITE.budget * SUITE.frames_per_step(BBSProtocol()) == 2_500_000
    assert (SUITE.eval_protocol, SUITE.normaliser) == ("final_eval", "identity")
    assert SUITE.score_fields == ("objects_returned", "score")
    assert SUITE.resolve_task("bringbackshapes_sparse_distract2_size1.4") == "distract2_size1.4"
    assert task_settings("distract2_size1.4") == (2, 1.4)


def test_task_name_sets_distractors_and_scale():
    env = make_env("distract2_size1.4", BBSProtocol(), 0)
    env.reset(seed=0)
    assert len(env.arena.distractors) == 2 and env.arena.layout.width == 1120
    assert protocol_for_task("distract1_size1.2", BBSProtocol(num_distractors=1)).arena_scale == 1.2
    with pytest.raises(ValueError, match="num_distractors"):
        protocol_for_task("distract1_size1.0", BBSProtocol(num_distractors=2))
    with pytest.raises(ValueError, match="distract<D>_size<S>"):
        task_settings("distract_one")


def test_suite_is_registered():
    from bench import registry

    assert registry.get_suite("bbs") is SUITE
