"""MiniHack (THICK tasks): level layouts, action subsets, success and death, truncation, seeding, bad input."""

import re

import numpy as np
import pytest

from tasks.minihack import SUITE, TASKS, MiniHackEnv, MiniHackProtocol, level_text

# Display characters of the map symbols our levels use. NetHack draws a wall as '-' or '|' depending on its
# junctions, and lava and pools both as '}'.
DISPLAY = {"-": "-|", "|": "-|", "L": "}", "P": "}"}
CUSTOM = sorted({spec.level for spec in TASKS.values() if spec.level})


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


def des_map(name):
    text = level_text(name)
    return text.split("MAP\n", 1)[1].split("\nENDMAP", 1)[0].split("\n")


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
    assert SUITE.score_fields == ("success",) and SUITE.eval_protocol == "success_rate"


@pytest.mark.parametrize("n", [2, 4, 5, 6, 7, 8, 9, 10, 11, 12])
def test_keycorridor_files_have_an_n_cell_corridor_with_the_key_at_the_far_end(n):
    rows = des_map(f"keycorridor{n}.des")
    assert rows[3] == "|" + "." * n + "|"
    text = level_text(f"keycorridor{n}.des")
    assert re.search(rf'OBJECT: \(\'\(\', "skeleton key"\), \({n},3\)', text)
    assert "BRANCH: (1,3,1,3)" in text and "DOOR: locked, (1,2)" in text and "STAIR: (1,1), down" in text


@pytest.mark.parametrize("level", CUSTOM)
def test_level_files_compile_and_are_the_map_we_play(level):
    task = next(name for name, spec in TASKS.items() if spec.level == level)
    env = MiniHackEnv(task)
    env.reset(seed=0)
    rows = des_map(level)
    shown = screen(env)
    # Locate the map by its top-left wall on screen, then compare every wall, door and liquid cell.
    top = next(y for y, row in enumerate(shown) if row.strip() and y > 0)
    left = min(len(row) - len(row.lstrip()) for row in shown[top : top + len(rows)])
    left -= min(len(row) - len(row.lstrip()) for row in rows)
    for dy, row in enumerate(rows):
        for dx, char in enumerate(row):
            if char in "-|LP":
                assert shown[top + dy][left + dx] in DISPLAY[char], (level, dx, dy)
    env.close()


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
    plan = ["east"] * 3 + ["pickup"] + ["west"] * 3 + ["apply", "north", "north"]
    rewards = [float(act(env, name)["reward"]) for name in plan[:-1]]
    obs = act(env, plan[-1])
    assert obs["is_last"] and obs["is_terminal"] and float(obs["reward"]) == 1.0
    assert all(r <= 0 for r in rewards)
    assert env.episode_stats() == {"success": 1.0}


def test_escaperoom_solution_with_ring_swap_and_boulder():
    env = MiniHackEnv("escaperoom")
    env.reset(seed=0)
    plan = ["west"] * 6 + ["pickup"]
    for name in plan:
        act(env, name)
    assert env._ring_worn()  # picking up the ring puts it on
    for name in ["east"] * 6 + ["north"] * 6 + ["west"] * 4:  # float over the lava to the key
        obs = act(env, name)
    assert not obs["is_last"]
    act(env, "pickup")  # swap: ring off and dropped, key carried
    assert env._find("key") and not env._find("ring")
    for name in ["west"] * 3 + ["south"] * 5 + ["apply", "west"]:
        obs = act(env, name)
    obs = act(env, "west")
    assert obs["is_terminal"] and env.episode_stats() == {"success": 1.0}


def test_lava_kills_without_the_ring_and_the_ring_saves():
    env = MiniHackEnv("lavacrossing")
    env.reset(seed=0)
    obs = walk_to(env, find(env, ">")[0])
    assert obs["is_last"] and obs["is_terminal"]
    assert float(obs["reward"]) == pytest.approx(-0.1)  # THICK's lava penalty on death
    assert env.episode_stats() == {"success": 0.0}
    for seed in range(2):
        env.reset(seed=seed)
        ring = (find(env, "=") or [position(env)])[0]  # the ring may lie under the player
        stairs = find(env, ">")[0]
        walk_to(env, ring)
        act(env, "pickup")
        obs = walk_to(env, stairs)
        assert obs["is_terminal"] and float(obs["reward"]) == 1.0 and env.episode_stats() == {"success": 1.0}


def test_miniwod_zap_takes_the_direction_from_the_next_action():
    env = MiniHackEnv("miniwod")
    env.reset(seed=0)
    stairs = find(env, ">")[0]
    walk_to(env, find(env, "/")[0])  # autopickup
    assert env._find("wand")
    walk_to(env, (stairs[0] - 9, stairs[1]), vertical_first=True)
    assert find(env, "H")  # the sleeping minotaur blocks the corridor
    act(env, "zap")
    assert env._awaiting_direction
    act(env, "east")
    assert not env._awaiting_direction and not find(env, "H")
    obs = walk_to(env, stairs)
    assert obs["is_terminal"] and env.episode_stats() == {"success": 1.0}


def test_step_limit_is_a_truncation_and_bumping_costs():
    env = MiniHackEnv("keycorridor4", MiniHackProtocol(max_steps=3))
    env.reset(seed=0)
    observations = [act(env, "west") for _ in range(3)]  # into the wall: the clock does not advance
    assert [float(o["reward"]) for o in observations] == pytest.approx([-0.01] * 3)
    assert [(bool(o["is_last"]), bool(o["is_terminal"])) for o in observations] == [(False, False)] * 2 + [
        (True, False)
    ]
    assert env.episode_stats() == {"success": 0.0}
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
