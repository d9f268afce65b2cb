"""MiniHack (THICK tasks): actions, success (ours and THICK's rule), death, truncation, seeding, bad input.

The levels themselves are checked cell by cell in tests/test_minihack_levels.py.
"""

import numpy as np
import pytest

from tasks.minihack import SUITE, TASKS, MiniHackEnv, MiniHackProtocol, level_text

# The scripted escape (levels.md's 9x9 map): ring at (3,7) four cells west of the start, float north over the
# east liquid, swap the ring for the key at (5,1), push the boulder at (3,2) into the water, unlock, stairs.
ESCAPE = (
    ["west"] * 4 + ["pickup"] + ["east"] * 4 + ["north"] * 6 + ["west"] * 2 + ["pickup"] + ["west"] * 2
    + ["south"] * 5 + ["apply", "west", "west"]
)  # fmt: skip


def screen(env) -> list[str]:
    return [bytes(row).decode() for row in env._raw("chars")]


def find(env, char):
    ys, xs = np.nonzero(env._raw("chars") == ord(char))
    return list(zip(xs.tolist(), ys.tolist()))


def position(env):
    return tuple(int(v) for v in env._raw("blstats")[:2])


def act(env, name):
    return env.step({"action": env.actions.index(name)})


def walk_to(env, target, vertical_first=False):
    """Greedy walk on open floor; returns the last observation."""
    obs = None
    for _ in range(60):
        x, y = position(env)
        if (x, y) == tuple(target):
            return obs
        if vertical_first and y != target[1]:
            name = "south" if target[1] > y else "north"
        else:
            name = "east" if target[0] > x else "west" if target[0] < x else "south" if target[1] > y else "north"
        obs = act(env, name)
        if obs["is_last"]:
            return obs
    raise AssertionError(f"could not reach {target} from {position(env)}")


def test_task_table():
    assert set(TASKS) == {f"keycorridor{n}" for n in (2, 4, 5, 6, 7, 8, 9, 10, 11, 12)} | {
        "keyroomfixed5", "river", "miniwod", "escaperoom", "escaperoomwater", "lavacrossing", "watercrossing",
    }  # fmt: skip
    actions = {name: spec.actions for name, spec in TASKS.items()}
    key = ("north", "east", "south", "west", "pickup", "apply")
    assert actions["keycorridor8"] == actions["keyroomfixed5"] == actions["escaperoom"] == key
    assert actions["river"] == ("north", "east", "south", "west")
    assert actions["miniwod"] == ("north", "east", "south", "west", "pickup", "zap", "eat")
    assert actions["lavacrossing"] == actions["watercrossing"] == ("north", "east", "south", "west", "pickup")
    limits = {name: spec.max_steps for name, spec in TASKS.items()}
    assert {limits[t] for t in ("keycorridor4", "keyroomfixed5", "lavacrossing", "watercrossing")} == {200}
    assert {limits[t] for t in ("river", "miniwod", "escaperoom", "escaperoomwater")} == {400}
    assert SUITE.score_fields == ("success", "success_thick") and SUITE.eval_protocol == "success_rate"


@pytest.mark.parametrize("task", sorted(TASKS))
def test_action_subsets_and_observation(task):
    if not task.startswith("keycorridor") or task == "keycorridor4":
        env = MiniHackEnv(task)
        obs = env.reset(seed=0)
        assert env.act_space["action"].num_classes == len(TASKS[task].actions)
        assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
        assert env.render().shape == (80, 80, 3)  # 5x5 tiles of 16 pixels before the resize
        env.close()


def test_keycorridor_success_needs_key_and_door():
    env = MiniHackEnv("keycorridor4")
    env.reset(seed=0)
    # Without the key the locked door holds.
    for name in ("apply", "north", "north"):
        obs = act(env, name)
    assert not obs["is_last"] and position(env)[1] == find(env, "+")[0][1] + 1
    plan = ["east"] * 3 + ["south", "pickup", "north"] + ["west"] * 3 + ["apply", "north", "north"]
    rewards = [float(act(env, name)["reward"]) for name in plan[:-1]]
    obs = act(env, plan[-1])
    assert obs["is_last"] and obs["is_terminal"] and float(obs["reward"]) == 1.0
    assert all(r <= 0 for r in rewards)
    assert env.episode_stats()["success"] == 1.0


def test_escaperoom_solution_with_ring_swap_and_boulder():
    env = MiniHackEnv("escaperoom")
    env.reset(seed=0)
    for name in ESCAPE[:5]:
        act(env, name)
    assert env._ring_worn()  # picking up the ring puts it on
    for name in ESCAPE[5:17]:  # float over the lava to the key
        obs = act(env, name)
    assert not obs["is_last"]
    act(env, ESCAPE[17])  # swap: ring off and dropped, key carried
    assert env._find("key") and not env._find("ring")
    for name in ESCAPE[18:]:
        obs = act(env, name)
    assert obs["is_terminal"] and env.episode_stats()["success"] == 1.0


def test_success_thick_misses_wins_that_thicks_env_pays_099():
    # THICK's env is MiniHack with its default penalty_step (-0.01 on a key press that leaves the clock
    # unchanged): its winning reward is 1.0 or 0.99, and THICK counts reward >= 1. Play the same escapes in
    # that env (set the penalty on the inner MiniHack env) and compare with our `success_thick`.
    env = MiniHackEnv("escaperoom")
    env._env.penalty_step = -0.01
    presses = []
    inner_step = env._env.step
    env._env.step = lambda action: presses.append(inner_step(action)) or presses[-1]
    thick_rewards = []
    for seed in range(3):
        env.reset(seed=seed)
        for name in ESCAPE:
            obs = act(env, name)
        assert obs["is_terminal"] and presses[-1][2]  # the last press won the game
        thick_rewards.append(float(presses[-1][1]))
        assert env.episode_stats()["success_thick"] == float(thick_rewards[-1] >= 1.0)
    assert sorted(thick_rewards) == pytest.approx([0.99, 1.0, 1.0])  # both cases occur
    # In our env (no inner penalty) every such win pays 1.0 and counts as ours; THICK's rule misses 0.99 wins.
    env = MiniHackEnv("escaperoom")
    env.reset(seed=thick_rewards.index(min(thick_rewards)))
    for name in ESCAPE:
        obs = act(env, name)
    assert float(obs["reward"]) == 1.0 and env.episode_stats() == {"success": 1.0, "success_thick": 0.0}


def test_lava_kills_without_the_ring_and_the_ring_saves():
    env = MiniHackEnv("lavacrossing")
    env.reset(seed=0)
    obs = walk_to(env, find(env, ">")[0])
    assert obs["is_last"] and obs["is_terminal"]
    assert float(obs["reward"]) == pytest.approx(-0.1)  # THICK's lava penalty on death
    assert env.episode_stats() == {"success": 0.0, "success_thick": 0.0}
    for seed in range(2):
        env.reset(seed=seed)
        ring = (find(env, "=") or [position(env)])[0]  # the ring may lie under the player
        stairs = find(env, ">")[0]
        walk_to(env, ring)
        act(env, "pickup")
        obs = walk_to(env, stairs)
        assert obs["is_terminal"] and float(obs["reward"]) == 1.0 and env.episode_stats()["success"] == 1.0


def test_miniwod_zap_takes_the_direction_from_the_next_action():
    env = MiniHackEnv("miniwod")
    env.reset(seed=0)
    stairs = find(env, ">")[0]
    walk_to(env, find(env, "/")[0])
    act(env, "pickup")  # autopickup is off, as in THICK
    assert env._find("wand")
    walk_to(env, (stairs[0] - 9, stairs[1]), vertical_first=True)
    assert find(env, "H")  # the sleeping minotaur blocks the corridor
    act(env, "zap")
    assert env._awaiting_direction
    act(env, "east")
    assert not env._awaiting_direction and not find(env, "H")
    obs = walk_to(env, stairs)
    assert obs["is_terminal"] and env.episode_stats()["success"] == 1.0


def test_step_limit_is_a_truncation_and_bumping_costs():
    env = MiniHackEnv("keycorridor4", MiniHackProtocol(max_steps=3))
    env.reset(seed=0)
    observations = [act(env, "west") for _ in range(3)]  # into the wall: the clock does not advance
    assert [float(o["reward"]) for o in observations] == pytest.approx([-0.01] * 3)
    assert [(bool(o["is_last"]), bool(o["is_terminal"])) for o in observations] == [(False, False)] * 2 + [
        (True, False)
    ]
    assert env.episode_stats() == {"success": 0.0, "success_thick": 0.0}
    with pytest.raises(RuntimeError, match="reset"):
        act(env, "west")


def test_seeding():
    env = MiniHackEnv("lavacrossing")
    firsts = [env.reset(seed=s)["image"] for s in range(5)]
    layouts = []
    for seed in (0, 0, 1, 2, 3):
        env.reset(seed=seed)
        layouts.append((position(env), tuple(find(env, ">")), tuple(find(env, "="))))
    assert layouts[0] == layouts[1] and len(set(layouts)) > 2
    assert (env.reset(seed=0)["image"] == firsts[0]).all()
    # The same seed and actions replay the same episode (what a resumed run relies on).
    plans = []
    for _ in range(2):
        env.reset(seed=7)
        plans.append([act(env, name)["image"] for name in ("west", "north", "pickup", "south", "west")])
    assert all((a == b).all() for a, b in zip(*plans))


def test_bad_input():
    env = MiniHackEnv("lavacrossing")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"out of range \[0, 5\)"):
        env.step({"action": 5})
    with pytest.raises(ValueError, match="expected shape"):
        env.step({"action": [0, 1]})
    with pytest.raises(KeyError, match="keycorridor2, keycorridor4"):
        MiniHackEnv("keycorridor3")
    with pytest.raises(FileNotFoundError, match="tasks.levels"):
        level_text("nowhere.des")


def test_a_level_that_does_not_compile_is_an_error(monkeypatch):
    # MiniHack itself would only print lev_comp's complaint and play a random dungeon level instead.
    import tasks.minihack as minihack

    broken = level_text("keycorridor4.des").replace('MAZE: "mylevel"', 'MAZE: "elsewhere"')
    monkeypatch.setattr(minihack, "level_text", lambda name: broken)
    with pytest.raises(RuntimeError, match="could not compile tasks/levels/keycorridor4.des"):
        MiniHackEnv("keycorridor4")
