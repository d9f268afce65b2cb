"""VisualPinpad: the reward sequence, countdown and respawn, rendering, seeding, bad input.

The published layouts, spawn cells and colours are checked cell by cell in tests/test_pinpad_layouts.py.
"""

import collections

import numpy as np
import pytest

from tasks.pinpad import HEIGHT, LAYOUTS, MOVES, PAD_COLOURS, WIDTH, PinpadEnv, PinpadProtocol, parse_layout

NOOP = 0


def reset_on_floor(env: PinpadEnv, seed: int) -> int:
    """Reset with the first seed from `seed` whose spawn is a floor cell (spawns include pads); returns it."""
    while True:
        env.reset(seed=seed)
        if env.layout[env.position[1], env.position[0]] == " ":
            return seed
        seed += 1


def path_to(env: PinpadEnv, goal_cell: str) -> list[int]:
    """Shortest action sequence from the agent to the nearest cell of kind `goal_cell`, avoiding other pads."""
    start = env.position
    parents = {start: None}
    queue = collections.deque([start])
    while queue:
        x, y = queue.popleft()
        if env.layout[y, x] == goal_cell:
            actions, cell = [], (x, y)
            while parents[cell] is not None:
                cell, action = parents[cell]
                actions.append(action)
            return actions[::-1]
        for action, (dx, dy) in enumerate(MOVES):
            nx, ny = x + dx, y + dy
            if action == NOOP or not (0 <= nx < WIDTH and 0 <= ny < HEIGHT) or (nx, ny) in parents:
                continue
            if env.layout[ny, nx] == "#" or env.layout[ny, nx] not in (" ", goal_cell):
                continue
            parents[(nx, ny)] = ((x, y), action)
            queue.append((nx, ny))
    raise AssertionError(f"no path to {goal_cell}")


def visit(env, pads):
    """Walk onto each pad in turn; returns the rewards of every step."""
    rewards = []
    for pad in pads:
        for action in path_to(env, pad):
            rewards.append(float(env.step({"action": action})["reward"]))
    return rewards


@pytest.mark.parametrize("task, pads", [("three", 3), ("four", 4), ("five", 5)])
def test_layouts(task, pads):
    layout = parse_layout(task)
    assert layout.shape == (14, 16)
    assert set(layout.flat) == {" ", "#"} | {str(i) for i in range(1, pads + 1)}
    env = PinpadEnv(task)
    assert env.pads == tuple(str(i) for i in range(1, pads + 1))
    assert env.act_space["action"].num_classes == 5
    obs = env.reset(seed=0)
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
    assert layout[env.position[1], env.position[0]] != "#"  # spawns on any non-wall cell


def test_reward_for_the_sequence_then_countdown_and_respawn():
    env = PinpadEnv("three")
    reset_on_floor(env, 1)
    rewards = visit(env, ["1", "2"])
    assert sum(rewards) == 0 and env.sequence == ["1", "2"]
    rewards = visit(env, ["3"])
    assert rewards[-1] == 10.0 and sum(rewards) == 10.0  # rewarded on the step that enters pad 3
    assert env.countdown == 10
    image = env.render()
    assert image[..., 1].mean() > image[..., 0].mean()  # green tint during the countdown
    # Staying on the pads during the countdown earns nothing; then the agent respawns with a cleared sequence.
    rewards = [float(env.step({"action": NOOP})["reward"]) for _ in range(9)]
    assert rewards == [0.0] * 9 and env.countdown == 1 and env.layout[env.position[1], env.position[0]] == "3"
    env.step({"action": NOOP})
    # The respawn clears the sequence; the same step's no-op then enters the pad it landed on, if any.
    cell = env.layout[env.position[1], env.position[0]]
    assert env.countdown == 0 and env.sequence == ([] if cell == " " else [cell]) and cell != "#"


def test_only_the_last_n_distinct_pads_count():
    env = PinpadEnv("three")
    reset_on_floor(env, 2)
    assert sum(visit(env, ["3", "1", "2"])) == 0  # wrong order: (3, 1, 2)
    assert env.sequence == ["3", "1", "2"]
    assert sum(visit(env, ["3"])) == 10.0  # the window now reads (1, 2, 3)
    env = PinpadEnv("four")
    reset_on_floor(env, 3)
    assert sum(visit(env, ["1", "2", "3", "4"])) == 10.0


def test_bottom_strip_shows_the_sequence():
    env = PinpadEnv("three")
    reset_on_floor(env, 4)
    visit(env, ["2"])
    strip = env.render()[56:64]  # the last two cell rows, 4 pixels each
    assert (strip[:4, 4:8] == PAD_COLOURS["2"]).all()  # entry i at cell x = 2i + 1 of the first strip row
    assert not (strip[:4, 12:16] == PAD_COLOURS["2"]).all() and not (strip[4:] == PAD_COLOURS["2"]).all()


def test_episode_is_truncated_at_its_length():
    env = PinpadEnv("three", PinpadProtocol(episode_length=5))
    env.reset(seed=0)
    flags = [(bool(o["is_last"]), bool(o["is_terminal"])) for o in (env.step({"action": 0}) for _ in range(5))]
    assert flags == [(False, False)] * 4 + [(True, False)]
    with pytest.raises(RuntimeError, match="reset"):
        env.step({"action": 0})


def test_seeding():
    env = PinpadEnv("five")
    first = [env.reset(seed=s)["image"] for s in (5, 5, 6, 7)]
    assert (first[0] == first[1]).all()
    assert not (first[0] == first[2]).all() or not (first[0] == first[3]).all()
    env.reset(seed=5)
    a = [env.step({"action": i % 5})["image"] for i in range(50)]
    env.reset(seed=5)
    b = [env.step({"action": i % 5})["image"] for i in range(50)]
    assert all((x == y).all() for x, y in zip(a, b))


def test_bad_actions_and_tasks():
    env = PinpadEnv("three")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"out of range \[0, 5\)"):
        env.step({"action": 5})
    with pytest.raises(ValueError, match="expected shape"):
        env.step({"action": np.array([1, 2])})
    with pytest.raises(ValueError, match="do not match"):
        env.step({"move": 1})
    with pytest.raises(KeyError, match="three, four, five"):
        PinpadEnv("six")
    assert set(LAYOUTS) == {"three", "four", "five"}
