"""VisualPinpad layouts, spawn cells, movement and rendering against the published environment.

The expected layouts and colours are embedded here, copied from the project's reference sheet of level facts
(`reference/levels.md`, read from Director's/DreamerV3's `embodied/envs/pinpad.py`), not from tasks/pinpad.py.
The rendering is parsed back into a layout cell by cell, so the drawn map is checked as well as the table.
"""

import numpy as np
import pytest

from tasks.pinpad import PinpadEnv, parse_layout

# Copied from levels.md (16 columns x 14 rows; '#' wall, digits pads, ' ' floor).
EXPECTED = {
    "three": """
################
#1111      3333#
#1111      3333#
#1111      3333#
#1111      3333#
#              #
#              #
#              #
#              #
#     2222     #
#     2222     #
#     2222     #
#     2222     #
################""",
    "four": """
################
#1111      4444#
#1111      4444#
#1111      4444#
#1111      4444#
#              #
#              #
#              #
#              #
#3333      2222#
#3333      2222#
#3333      2222#
#3333      2222#
################""",
    "five": """
################
#          4444#
#111       4444#
#111       4444#
#111           #
#111        555#
#           555#
#           555#
#333        555#
#333           #
#333       2222#
#333       2222#
#          2222#
################""",
}
COLOURS = {"1": (255, 0, 0), "2": (0, 255, 0), "3": (0, 0, 255), "4": (255, 255, 0), "5": (255, 0, 255)}
WHITE, WALL, TINT, BLACK = (255, 255, 255), (192, 192, 192), (223, 255, 223), (0, 0, 0)


def expected(task):
    rows = EXPECTED[task].strip("\n").split("\n")
    assert len(rows) == 14 and {len(row) for row in rows} == {16}
    return np.array([list(row) for row in rows])


def faded(colour):
    # levels.md: 10% of the colour blended with 90% white, stored as uint8 (truncated).
    return tuple(int(0.1 * c + 0.9 * 255) for c in colour)


def cells(image):
    """The 16x16 grid of cell colours of a 64x64 observation (each cell 4x4 pixels, uniform)."""
    blocks = image.reshape(16, 4, 16, 4, 3).transpose(0, 2, 1, 3, 4).reshape(16, 16, 16, 3)
    assert (blocks == blocks[:, :, :1]).all(), "a cell is not uniform"
    return blocks[:, :, 0]


def parse_rendering(image, pads, background=WHITE):
    """Read the layout back from the drawn world rows; the agent's cell and its lit pad are reported apart."""
    grid = cells(image)[:14]
    by_colour = {WALL: "#", background: " ", **{faded(COLOURS[p]): p for p in pads}}
    lit = {COLOURS[p]: p for p in pads}
    layout, agent = np.full((14, 16), "?"), None
    for (y, x), _ in np.ndenumerate(layout):
        colour = tuple(int(v) for v in grid[y, x])
        if colour == BLACK:
            agent = (x, y)
        layout[y, x] = by_colour.get(colour) or lit.get(colour, "?")
    return layout, agent


@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_layout_table_and_rendered_map_match_levels_md(task):
    want = expected(task)
    assert (parse_layout(task) == want).all()
    env = PinpadEnv(task)
    pads = tuple(sorted(set(want.flat) - {" ", "#"}))
    assert env.pads == pads == tuple(str(i) for i in range(1, len(pads) + 1))
    for seed in range(20):
        image = env.reset(seed=seed)["image"]
        layout, agent = parse_rendering(image, pads)
        assert agent == env.position and want[agent[1], agent[0]] != "#"
        layout[agent[1], agent[0]] = want[agent[1], agent[0]]  # the agent hides its own cell
        assert (layout == want).all(), f"{task} seed {seed}:\n" + "\n".join("".join(r) for r in layout)
        strip = cells(image)[14:]
        assert (strip == WALL).all()  # grey strip, empty sequence


@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_spawns_cover_every_non_wall_cell(task):
    want = expected(task)
    non_wall = {(x, y) for (y, x), cell in np.ndenumerate(want) if cell != "#"}
    env = PinpadEnv(task)
    spawns = set()
    # Uniform over ~170 cells: 3000 draws miss a given cell with probability ~2e-8.
    for seed in range(3000):
        env.reset(seed=seed)
        spawns.add(env.position)
    assert spawns == non_wall


def test_moves_are_the_published_order_and_a_noop_enters_the_pad_underfoot():
    env = PinpadEnv("three")
    env.reset(seed=0)
    env.position, env.sequence = (5, 5), []
    for action, delta in enumerate([(0, 0), (0, 1), (0, -1), (1, 0), (-1, 0)]):
        before = env.position
        env.step({"action": action})
        assert env.position == (before[0] + delta[0], before[1] + delta[1])
    env.position, env.sequence = (1, 1), []  # on pad 1 (as after a spawn there), against the walls
    env.step({"action": 4})  # -x into the wall: blocked, and a wall enters no pad
    assert env.position == (1, 1) and env.sequence == []
    env.step({"action": 0})  # no-op: the target cell is pad 1
    assert env.sequence == ["1"]


def test_countdown_tint_lit_pad_and_sequence_strip():
    env = PinpadEnv("three")
    env.reset(seed=0)
    env.position, env.sequence = (10, 1), ["1", "2"]  # one step left of pad 3
    obs = env.step({"action": 3})  # +x onto pad 3 completes 1 -> 2 -> 3
    assert float(obs["reward"]) == 10.0
    grid = cells(obs["image"])
    assert tuple(grid[5, 5]) == TINT and tuple(grid[0, 0]) == WALL  # floor tinted, walls not
    assert tuple(grid[4, 14]) == COLOURS["3"] and tuple(grid[1, 1]) == faded(COLOURS["1"])  # pad 3 lit
    assert tuple(grid[1, 11]) == BLACK
    strip = [tuple(grid[14, x]) for x in range(16)]
    assert strip[1] == COLOURS["1"] and strip[3] == COLOURS["2"] and strip[5] == COLOURS["3"]
    assert all(strip[x] == WALL for x in range(16) if x not in (1, 3, 5))
    assert (grid[15] == WALL).all()
