"""The scripted BringBackShapes policy: agent contract, its decisions on hand-made states, and that it
returns shapes where random actions mostly do not."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bench import registry
from tasks.bbs import scripted
from tasks.bbs.env import BBSProtocol, BringBackShapes, priv_state_layout

CONFIG = scripted.ScriptedConfig()
plan = jax.jit(scripted.plan, static_argnums=(0, 1))
scripted_action = jax.jit(scripted.scripted_action, static_argnums=(0, 1))


def make_env(**settings):
    return BringBackShapes(BBSProtocol(**({"num_distractors": 0, "arena_scale": 1.0} | settings)))


def hand_state(agent, objects, alive, velocity=(0.0, 0.0)):
    """priv_state of the default 800 x 700 arena (goal line 575, slot rows 237.5..462.5)."""
    k = len(objects)
    slices = priv_state_layout(k)
    state = np.zeros(9 + 3 * k, np.float32)
    state[slices["agent_position"]] = agent
    state[slices["agent_velocity"]] = velocity
    state[slices["object_positions"]] = np.ravel(objects)
    state[slices["object_alive"]] = alive
    state[slices["goal"]] = (575.0, 237.5, 462.5)
    state[slices["arena_size"]] = (800.0, 700.0)
    return jnp.asarray(state)


def test_agent_contract():
    env = make_env()
    spec = registry.get_agent("bbs_scripted")
    assert spec is scripted.SPEC
    agent = spec.make(CONFIG, env.obs_space, env.act_space)
    assert agent.streams() == {} and agent.init(key=jax.random.key(0)) == {}
    obs = env.reset(seed=0)
    batch = {key: np.stack([obs[key]] * 3) for key in obs}
    carry, action, extras = jax.jit(lambda o: agent.act({}, agent.initial_carry({}, 3), o, key=jax.random.key(1),
                                                         mode="eval"))(batch)
    assert action["action"].shape == (3, 2) and extras == {}
    assert np.all(np.abs(np.asarray(action["action"])) <= 1.0)
    for row in np.asarray(action["action"]):
        env.act_space["action"].check("action", row)


def test_scripted_agent_needs_priv_state():
    env = make_env()
    spaces = {k: v for k, v in env.obs_space.items() if k != "priv_state"}
    with pytest.raises(ValueError, match="priv_state"):
        scripted.SPEC.make(CONFIG, spaces, env.act_space)


def test_pushes_when_behind_a_shape_level_with_the_slot():
    # shape at (400, 350) level with the slot; agent 50 px to its left: push straight towards +x
    thought = plan(CONFIG, 1, hand_state((350.0, 350.0), [(400.0, 350.0)], [1.0]))
    assert bool(thought["aligned"])
    np.testing.assert_allclose(thought["behind"], [350.0, 350.0], atol=1e-4)
    wanted = np.asarray(thought["wanted"])
    np.testing.assert_allclose(wanted / np.linalg.norm(wanted), [1.0, 0.0], atol=1e-6)
    assert np.linalg.norm(wanted) == pytest.approx(CONFIG.push_speed)
    # full-force push to the right: heading 0 -> action[0] = -1; the velocity error saturates the force
    action = np.asarray(scripted_action(CONFIG, 1, hand_state((350.0, 350.0), [(400.0, 350.0)], [1.0])))
    np.testing.assert_allclose(action, [-1.0, 1.0], atol=1e-6)


def test_walks_around_a_shape_it_stands_in_front_of():
    # agent right of the shape (between it and the goal): go around, never straight through it
    thought = plan(CONFIG, 1, hand_state((460.0, 350.0), [(400.0, 350.0)], [1.0]))
    assert not bool(thought["aligned"])
    waypoint = np.asarray(thought["waypoint"])
    assert np.linalg.norm(waypoint - [400.0, 350.0]) == pytest.approx(CONFIG.clearance, rel=1e-5)
    assert abs(waypoint[1] - 350.0) > 20.0  # off to a side


def test_targets_nearest_remaining_shape_and_skips_returned_ones():
    objects = [(200.0, 300.0), (420.0, 350.0), (300.0, 400.0)]
    thought = plan(CONFIG, 3, hand_state((400.0, 300.0), objects, [1.0, 1.0, 1.0]))
    np.testing.assert_allclose(thought["shape"], objects[1])
    thought = plan(CONFIG, 3, hand_state((400.0, 300.0), objects, [1.0, 0.0, 1.0]))
    np.testing.assert_allclose(thought["shape"], objects[2])
    # a shape pressed against the top wall cannot be pushed down to the slot: the farther one goes first
    thought = plan(CONFIG, 2, hand_state((420.0, 200.0), [(450.0, 150.0), (250.0, 400.0)], [1.0, 1.0]))
    np.testing.assert_allclose(thought["shape"], [250.0, 400.0])


def test_stands_still_when_everything_is_returned():
    thought = plan(CONFIG, 2, hand_state((300.0, 300.0), [(0.0, 0.0), (0.0, 0.0)], [0.0, 0.0]))
    np.testing.assert_array_equal(thought["wanted"], [0.0, 0.0])


def play(policy, seed: int, **settings) -> float:
    env = make_env(**settings)
    obs = env.reset(seed=seed)
    total = 0.0
    while not obs["is_last"]:
        obs = env.step(policy(obs))
        total += float(obs["reward"])
    return total


def test_scripted_policy_returns_shapes_on_a_fixed_seed():
    agent = scripted.SPEC.make(CONFIG, make_env().obs_space, make_env().act_space)
    act = jax.jit(lambda priv: agent.act({}, {}, {"priv_state": priv}, key=jax.random.key(0), mode="eval")[1])
    returned = play(lambda obs: {"action": np.asarray(act(obs["priv_state"][None])["action"][0])}, seed=0,
                    time_limit=1200)
    assert returned >= 1.0


def test_runs_through_the_runner(tmp_path):
    import json

    from bench.runner import run

    folder = run("bbs_scripted", "bbs", "distract1_size1.2", seed=0, root=tmp_path, quiet=True,
                 overrides={"run.steps": 100, "env.time_limit": 200, "run.eval_episodes": 1})
    scores = [json.loads(line) for line in (folder / "scores.jsonl").read_text().splitlines()]
    assert [s["mode"] for s in scores] == ["train", "train", "eval"]
    assert all(s["length"] == 50 and s["frames"] % 4 == 0 and not s["broken"] for s in scores)
    assert all(set(s) >= {"objects_returned", "score"} for s in scores)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "finished"
